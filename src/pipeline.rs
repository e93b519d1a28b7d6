//! One reset request, step by step. Each step returns what the next one and the audit line need.
//!
//! 1. **key**: with the guard on and an idempotency key, a repeat gets the earlier final answer
//!    (no Cognito call), a key in use is RETRY `in-progress`, a key reused for another request is
//!    REJECTED `idempotency-key-reused`;
//! 2. **resolve**: the caller-and-pool check (no Cognito call when the caller has no rule for the
//!    pool), then `AdminGetUser` for the canonical user (alias, case variant and `sub` alike) and
//!    `AdminListGroupsForUser` when the policy references groups;
//! 3. **decide**: the full policy decision, then disabled users are refused;
//! 4. **reset**: the guard's per-user claim (REJECTED `recently-reset` inside the cooldown, RETRY
//!    `in-progress` while another request holds the user), `DRY_RUN` stops here, then
//!    `AdminResetUserPassword` on the canonical username and the claim completed or released;
//! 5. the key records the final answer (RESET or REJECTED) or is released (RETRY).

use std::time::{Instant, SystemTime};

use tracing::Instrument;

use crate::audit::{self, Findings};
use crate::caller;
use crate::config::Config;
use crate::deadline::Deadline;
use crate::directory::{Directory, UserRecord};
use crate::guard::{Completion, Guard, KeyRef, KeyState, UserState};
use crate::outcome::{Answer, Class, RecordResult, Reset, ResetError, Settled};
use crate::policy::{Caller, Decision, Subject};
use crate::record::{Job, Origin};
use crate::request::ResetRequest;

/// The function's state, built once at start-up.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub directory: Directory,
    /// The duplicate-reset guard; `None` without `GUARD_TABLE`.
    pub guard: Option<Guard>,
}

impl App {
    /// Runs one record, unless the deadline is too close, and writes its audit line.
    pub async fn run(&self, job: Job, deadline: Deadline) -> RecordResult {
        let started = Instant::now();
        let Job {
            origin,
            request,
            idempotency_key,
        } = job;
        let (request, result, findings) = match request {
            Err(error) => (None, Err(error), Findings::default()),
            Ok(request) => {
                let (result, findings) = if deadline.too_close(self.config.deadline_margin) {
                    (Err(ResetError::Deadline), Findings::default())
                } else {
                    let span =
                        tracing::info_span!("record", source = %origin.source, id = %origin.id);
                    self.process(&origin, &request, idempotency_key.as_deref(), deadline)
                        .instrument(span)
                        .await
                };
                (Some(request), result, findings)
            }
        };
        audit::record(
            &origin,
            request.as_ref(),
            idempotency_key.as_deref(),
            &findings,
            &result,
            started.elapsed(),
        );
        result
    }

    /// Accounts for a record that is not started (e.g. a halted FIFO group).
    pub fn skip(&self, job: Job, error: ResetError) -> RecordResult {
        let result = Err(error);
        audit::record(
            &job.origin,
            job.request.as_ref().ok(),
            job.idempotency_key.as_deref(),
            &Findings::default(),
            &result,
            std::time::Duration::ZERO,
        );
        result
    }

    /// The key step around the rest of the pipeline.
    async fn process(
        &self,
        origin: &Origin,
        request: &ResetRequest,
        key: Option<&str>,
        deadline: Deadline,
    ) -> (RecordResult, Findings) {
        let lease_until = deadline.wall_clock();
        let held = match (&self.guard, key) {
            (Some(guard), Some(key)) => {
                let key = KeyRef::new(&caller::describe(&origin.caller), key, request);
                let early = match guard.begin(&key, lease_until).await {
                    Ok(KeyState::Fresh) => None,
                    Ok(KeyState::Replay(answer)) => Some(Ok(Settled::Replayed(answer))),
                    Ok(KeyState::InProgress) => Some(Err(ResetError::InProgress)),
                    Ok(KeyState::Reused) => Some(Err(ResetError::IdempotencyKeyReused)),
                    Err(error) => Some(Err(ResetError::GuardUnavailable(error))),
                };
                if let Some(result) = early {
                    return (result, Findings::default());
                }
                Some((guard, key))
            }
            _ => None,
        };
        let (result, findings) = self.reset_pipeline(origin, request, deadline).await;
        if let Some((guard, key)) = held {
            // RESET and REJECTED are final and replayed; a RETRY is not kept.
            let answer = match &result {
                Err(error) if error.class() == Class::Retry => None,
                result => Some(Answer::new(
                    result.as_ref(),
                    Some(request.user_pool_id.as_str()),
                    &origin.id,
                )),
            };
            guard.finish(&key, answer.as_ref()).await;
        }
        (result.map(Settled::Reset), findings)
    }

    /// Resolve, decide, reset.
    async fn reset_pipeline(
        &self,
        origin: &Origin,
        request: &ResetRequest,
        deadline: Deadline,
    ) -> (Result<Reset, ResetError>, Findings) {
        let mut findings = Findings::default();
        let user = match self.resolve(&origin.caller, request, deadline).await {
            Ok(user) => user,
            Err(error) => return (Err(error), findings),
        };
        findings.canonical_username = Some(user.record.username.clone());
        let rule = match self.decide(&origin.caller, request, &user) {
            Ok(rule) => rule,
            Err(error) => return (Err(error), findings),
        };
        findings.rule = Some(rule.clone());
        let result = self
            .reset(origin, request, &user.record, rule, deadline)
            .await;
        (result, findings)
    }

    /// The caller-and-pool check, then the canonical user and (if the policy needs them) its
    /// groups.
    async fn resolve(
        &self,
        caller: &Caller,
        request: &ResetRequest,
        deadline: Deadline,
    ) -> Result<User, ResetError> {
        let policy = &self.config.policy;
        let pool = &request.user_pool_id;
        policy
            .check_caller_and_pool(caller, pool.as_str())
            .map_err(ResetError::Denied)?;
        let record = self
            .directory
            .get_user(pool, &request.username, deadline)
            .await?;
        let groups = if policy.needs_groups() {
            self.directory
                .list_groups(pool, &record.username, deadline)
                .await?
        } else {
            Vec::new()
        };
        Ok(User { record, groups })
    }

    /// The policy decision (the rule that allows the reset), and the disabled-user check.
    fn decide(
        &self,
        caller: &Caller,
        request: &ResetRequest,
        user: &User,
    ) -> Result<String, ResetError> {
        let subject = Subject {
            username: user.record.username.clone(),
            email: user.record.email.clone(),
            preferred_username: user.record.preferred_username.clone(),
            sub: user.record.sub.clone(),
            groups: user.groups.clone(),
        };
        let rule = match self
            .config
            .policy
            .decide(caller, request.user_pool_id.as_str(), &subject)
        {
            Decision::Allow { rule } => rule,
            Decision::Deny(reason) => return Err(ResetError::Denied(reason)),
        };
        if !user.record.enabled {
            return Err(ResetError::UserDisabled);
        }
        Ok(rule)
    }

    /// The guard's claim on the user, then the reset (unless `DRY_RUN`), then the claim's end.
    async fn reset(
        &self,
        origin: &Origin,
        request: &ResetRequest,
        user: &UserRecord,
        rule: String,
        deadline: Deadline,
    ) -> Result<Reset, ResetError> {
        let lease_until = deadline.wall_clock();
        let pool = &request.user_pool_id;
        let claim = match &self.guard {
            None => None,
            Some(guard) => {
                match guard
                    .claim(pool.as_str(), &user.username, &origin.id, lease_until)
                    .await?
                {
                    UserState::Claimed(claim) => Some((guard, claim)),
                    UserState::Free => None,
                    UserState::InProgress => return Err(ResetError::InProgress),
                    UserState::RecentlyReset { reset_at, until } => {
                        // Whole seconds, never more than the cooldown (the item's expiry is
                        // rounded up to a whole second), at least 1.
                        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                        let retry_after_secs = left.as_secs().max(1);
                        return Err(ResetError::RecentlyReset {
                            reset_at,
                            retry_after_secs,
                        });
                    }
                }
            }
        };
        if self.config.dry_run {
            return Ok(Reset {
                username: user.username.clone(),
                rule,
                dry_run: true,
                cognito_request_id: None,
            });
        }
        let result = self
            .directory
            .reset_password(pool, &user.username, &request.client_metadata, deadline)
            .await;
        if let Some((guard, claim)) = claim {
            let completion = match &result {
                Ok(_) => Completion::Reset,
                Err(error) if error.outcome_unknown() => Completion::Keep,
                Err(_) => Completion::Release,
            };
            guard.complete(&claim, completion).await;
        }
        Ok(Reset {
            username: user.username.clone(),
            rule,
            dry_run: false,
            cognito_request_id: result?,
        })
    }
}

/// The canonical user and its groups.
struct User {
    record: UserRecord,
    groups: Vec<String>,
}
