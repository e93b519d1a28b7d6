//! One reset request, step by step. Each step returns what the next one and the audit line need.
//!
//! 1. **caller**: the caller-and-pool check: a caller no rule lists for the pool is refused
//!    before anything is written or asked (no guard item, no Cognito call); then the ticket check
//!    that does not depend on the user: when no rule listing the caller and the pool would take
//!    the request's `Ticket` (or its lack of one), REJECTED `ticket-required` or
//!    `ticket-invalid`, also before anything is written or asked; then a record whose
//!    reset could not get its turn at the rate limiter before `deadline − margin` is RETRY
//!    `deadline`, before anything is spent on it (the turn is promised until the reset asks);
//! 2. **key**: with the guard on and an idempotency key, a repeat gets the earlier final answer
//!    (no Cognito call), a key in use is RETRY `in-progress`, a key reused for another request is
//!    REJECTED `idempotency-key-reused`;
//! 3. **resolve**: `AdminGetUser` for the canonical user (alias, case variant and `sub` alike)
//!    and `AdminListGroupsForUser` when the policy references groups;
//! 4. **decide**: the full policy decision, then the allowing rule's `ticket` (REJECTED
//!    `ticket-required` or `ticket-invalid`, told only to a caller that rule admits for this
//!    user), then disabled users are refused; then the rule's
//!    options: a `SignOut` the rule does not allow is REJECTED `sign-out-not-allowed`, an
//!    `UNCONFIRMED` user `user-unconfirmed`, a user of an external identity provider
//!    (`EXTERNAL_PROVIDER`, no password here) `external-user`, an invited user
//!    (`FORCE_CHANGE_PASSWORD`) `invitation-pending` unless the rule's `invited` is `resend`;
//! 5. **reset**: the guard's per-user claim (REJECTED `recently-reset` inside the cooldown, or
//!    `reset-unconfirmed` when the earlier reset's answer was lost; RETRY `in-progress` while
//!    another request holds the user; only the sign-out when this record's earlier delivery
//!    reset the user and its sign-out failed), then the caller's budget (REJECTED
//!    `caller-budget-exhausted`, the claim released), `DRY_RUN` stops here (the budget read,
//!    not spent), then `AdminResetUserPassword` (or `AdminCreateUser` RESEND) on
//!    the canonical username and the claim completed, released, or kept as unconfirmed. An
//!    ambiguous answer (timeout, 5xx, unreadable) is final REJECTED `reset-unconfirmed`: the
//!    user may have a code, so nothing sends it again by itself; a refusal gives the budget's
//!    spend back; after a reset, `AdminUserGlobalSignOut` when the rule and request ask for it
//!    (a failure leaves the reset standing: RESET with `signedOut: false`);
//! 6. the key records the final answer (RESET, WOULD_RESET, REJECTED) or is released (RETRY,
//!    `recently-reset`, `caller-budget-exhausted`, `delivery-limit` and `attempt-limit`, which
//!    pass once their window ends).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::approvals::Grant;
use crate::audit::{Done, Findings};
use crate::aws::cognito::{Directory, DirectoryError, UserRecord};
use crate::aws::events::EventPublisher;
use crate::aws::guard::{
    BudgetScope, BudgetTurn, Claim, Completion, Guard, KeyAnswer, KeyRef, KeyState, Resolution,
    UserState,
};
use crate::caller;
use crate::config::Config;
use crate::deadline::{Deadline, retry_after_secs, wall_now};
use crate::failure::{
    CognitoError, CognitoErrorKind, Effect, GuardError, GuardErrorKind, cognito_operation as op,
};
use crate::guard_logic::{self, CONFIRMED, answer_pk};
use crate::invocation::Invocation;
use crate::limiter::Intent;
use crate::outcome::{
    ATTEMPT_LIMIT_RETRY_AFTER_SECS, Action, Answer, Class, Pending, RecordResult, Reset,
    ResetError, Settled, SignedOut,
};
use crate::policy::{
    Budget, Caller, Decision, DenyReason, Invited, Policy, RuleOptions, SignOut, Subject,
};
use crate::policy_source::PolicyStore;
use crate::record::{Job, Origin};
use crate::request::{ResetRequest, Username};

/// The function's state, built once at start-up.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub directory: Directory,
    /// The duplicate-reset guard; `None` without `GUARD_TABLE`.
    pub guard: Option<Guard>,
    /// The policy in force (fixed, or live from Parameter Store).
    pub policy: PolicyStore,
    /// Outcome events; `None` without `EVENT_BUS`.
    pub bus: Option<Arc<dyn EventPublisher>>,
}

/// One running record: where it came from, what it asks, by when, and where it reports.
#[derive(Clone, Copy)]
struct Record<'a> {
    origin: &'a Origin,
    request: &'a ResetRequest,
    deadline: Deadline,
    invocation: &'a Invocation,
    /// The queue will not deliver this record again.
    last_receive: bool,
    /// The idempotency key this invocation holds for the record, if any.
    key: Option<&'a KeyRef>,
    /// An approved request's approval: its reset is performed (never asked for again).
    grant: Option<&'a Grant>,
}

/// What the reset step ended with, when it did not fail: a reset (or a dry run's would-be
/// reset), or a request kept for approval.
enum Performed {
    Reset(Reset),
    Pending(Pending),
    /// The undecided answer of the key this run took over, now final (see [`Self::reset`]).
    Replayed(Answer),
}

/// How a held claim is to end: recorded with the key's answer, in one write, once the answer
/// is known.
struct Ending {
    claim: Claim,
    completion: Completion,
    /// An ambiguous reset the user's status can settle later: its answer is not kept under the
    /// key, so that the key's retry settles it.
    resolvable: bool,
}

/// Audit line, metrics and outcome event of a finished record.
pub(crate) fn end(done: &Done<'_>, last_receive: bool, invocation: &Invocation) {
    done.log();
    let (outcome, code) = done.outcome();
    // A redelivery that only retried its own reset's sign-out reports that reset again: it is
    // counted once, by the delivery that reset (its sign-out is counted on its own).
    if !matches!(done.result, Ok(Settled::Reset(reset)) if reset.sign_out_only) {
        invocation.metrics().record_outcome(outcome.as_str(), code);
    }
    if let Some(action) = done.action()
        && !done.replayed()
    {
        invocation.metrics().action(action);
    }
    if let Some(event) = done.event(last_receive) {
        if event.outcome == crate::event::EventOutcome::GaveUp {
            invocation.metrics().gave_up();
        }
        invocation.event(event);
    }
}

impl App {
    /// The function's state: configuration and ports, built once at start-up.
    pub fn new(
        config: Config,
        directory: Directory,
        guard: Option<Guard>,
        policy: PolicyStore,
        bus: Option<Arc<dyn EventPublisher>>,
    ) -> App {
        App {
            config,
            directory,
            guard,
            policy,
            bus,
        }
    }

    /// Runs one record, unless the deadline is too close, and ends it: audit line, metrics and
    /// (for a final outcome) an outcome event, into `invocation`.
    pub async fn run(&self, job: Job, deadline: Deadline, invocation: &Invocation) -> RecordResult {
        self.run_with(job, None, deadline, invocation).await
    }

    /// Runs an approved request (`job` rebuilt from its approval item, as its requester): the
    /// same pipeline, under the approval's own idempotency key, and never asked for approval
    /// again.
    pub async fn run_approved(
        &self,
        job: Job,
        grant: &Grant,
        deadline: Deadline,
        invocation: &Invocation,
    ) -> RecordResult {
        self.run_with(job, Some(grant), deadline, invocation).await
    }

    async fn run_with(
        &self,
        job: Job,
        grant: Option<&Grant>,
        deadline: Deadline,
        invocation: &Invocation,
    ) -> RecordResult {
        let started = Instant::now();
        let Job {
            origin,
            request,
            idempotency_key,
            last_receive,
        } = job;
        let key_label = key_label(idempotency_key.as_deref(), origin.index);
        // The record's span, given its outcome once it is known (for X-Ray: `crate::xray`).
        let mut traced = tracing::Span::none();
        let (request, result, mut findings) = match request {
            Err(error) => (None, Err(error), Findings::default()),
            Ok(request) => {
                let (result, findings) = if deadline.too_close(self.config.deadline_margin) {
                    (Err(ResetError::Deadline), Findings::default())
                } else {
                    let span = tracing::info_span!(
                        "record",
                        source = %origin.source,
                        id = %origin.audit_id(),
                        outcome = tracing::field::Empty,
                        code = tracing::field::Empty,
                        pool = tracing::field::Empty,
                        rule = tracing::field::Empty,
                        replayed = tracing::field::Empty,
                    );
                    traced = span.clone();
                    let record = Record {
                        origin: &origin,
                        request: &request,
                        deadline,
                        invocation,
                        last_receive,
                        key: None,
                        grant,
                    };
                    self.process(record, idempotency_key.as_deref())
                        .instrument(span)
                        .await
                };
                (Some(request), result, findings)
            }
        };
        if let Some(grant) = grant {
            findings.approval = Some(grant.note.clone());
        }
        let done = Done {
            origin: &origin,
            request: request.as_ref(),
            pool_account: self.pool_account(request.as_ref()),
            idempotency_key: key_label.as_deref(),
            findings: &findings,
            result: &result,
            elapsed: started.elapsed(),
        };
        end(&done, last_receive, invocation);
        if !traced.is_disabled() {
            let (outcome, code) = done.outcome();
            record_ending(
                &traced,
                outcome.as_str(),
                code,
                request.as_ref().map(|r| r.user_pool_id.as_str()),
                findings.rule.as_deref(),
                matches!(result, Ok(Settled::Replayed(_))),
            );
        }
        result
    }

    /// The account of the request's pool, for the audit line and the event.
    fn pool_account(&self, request: Option<&ResetRequest>) -> Option<&str> {
        request.and_then(|r| self.directory.account_of(&r.user_pool_id))
    }

    /// Accounts for a record that is not started (e.g. a halted FIFO group).
    pub fn skip(&self, job: Job, error: ResetError, invocation: &Invocation) -> RecordResult {
        let result = Err(error);
        let key_label = key_label(job.idempotency_key.as_deref(), job.origin.index);
        let done = Done {
            origin: &job.origin,
            request: job.request.as_ref().ok(),
            pool_account: self.pool_account(job.request.as_ref().ok()),
            idempotency_key: key_label.as_deref(),
            findings: &Findings::default(),
            result: &result,
            elapsed: Duration::ZERO,
        };
        end(&done, job.last_receive, invocation);
        result
    }

    /// The caller check and the key step around the rest of the pipeline.
    async fn process(&self, record: Record<'_>, key: Option<&str>) -> (RecordResult, Findings) {
        let Record {
            origin,
            request,
            deadline,
            invocation,
            ..
        } = record;
        // One policy version decides the whole record, whatever a refresh does meanwhile.
        let snapshot = self.policy.current();
        let early_findings = || Findings {
            policy_version: Some(snapshot.version.clone()),
            policy_content: Some(snapshot.content.clone()),
            ..Findings::default()
        };
        // No decision on a policy older than POLICY_MAX_AGE_SECONDS.
        if let Some(max_age) = self.config.policy_max_age {
            let age = self.policy.age(std::time::Instant::now());
            if age > max_age {
                return (
                    Err(ResetError::PolicyStale {
                        age_secs: age.as_secs(),
                    }),
                    early_findings(),
                );
            }
        }
        // A caller no rule lists for this pool is refused before anything is written.
        if let Err(reason) = snapshot
            .policy
            .check_caller_and_pool(&origin.caller, request.user_pool_id.as_str())
        {
            return (Err(ResetError::Denied(reason)), early_findings());
        }
        // Tickets, as far as the caller and the pool decide them: the same answer whoever the
        // user is, before anything is written or asked.
        if let Err(refusal) = snapshot.policy.check_ticket_for_caller(
            &origin.caller,
            request.user_pool_id.as_str(),
            request.ticket(),
        ) {
            return (Err(refusal.into()), early_findings());
        }
        // A record whose reset could not get its turn before deadline − margin is not started:
        // no lookup is spent on it, nothing is written.
        let intent = if self.config.dry_run {
            None
        } else {
            match self.directory.reset_intent(&request.user_pool_id, deadline) {
                Ok(intent) => Some(intent),
                Err(error) => return (Err(error.into()), early_findings()),
            }
        };
        // An approved request runs under its approval's own key, in a namespace no header or
        // message id reaches.
        let key = match record.grant {
            Some(grant) => Some(grant.key.clone()),
            None => key.map(|key| {
                KeyRef::new(
                    &caller::describe(&origin.caller),
                    key,
                    origin.index,
                    request,
                )
            }),
        };
        let held = match (&self.guard, key) {
            (Some(guard), Some(mut key)) => {
                let started = Instant::now();
                let state = guard.begin::<Answer>(&key, deadline).await;
                invocation.guard_latency(started.elapsed());
                let early = match state {
                    Ok(KeyState::Fresh) => None,
                    // An earlier run's ambiguous reset, still undecided: this run decides it
                    // (the user item holds that reset), or gives the key back to it.
                    Ok(KeyState::Resume(open)) => {
                        key.undecided = Some(open);
                        None
                    }
                    // A run that held the key died before its end: this run goes on, and its
                    // claim on the user is judged by when the key was first taken.
                    Ok(KeyState::Abandoned { since }) => {
                        key.abandoned = Some(since);
                        None
                    }
                    Ok(KeyState::Replay(answer)) => Some(Ok(Settled::Replayed(answer))),
                    Ok(KeyState::InProgress) => Some(Err(ResetError::InProgress)),
                    Ok(KeyState::Reused) => Some(Err(ResetError::IdempotencyKeyReused)),
                    Err(error) => Some(Err(self.guard_failure(error, deadline))),
                };
                if let Some(result) = early {
                    return (result, early_findings());
                }
                Some((guard, key))
            }
            _ => None,
        };
        let record = Record {
            key: held.as_ref().map(|(_, key)| key),
            ..record
        };
        let (result, mut findings, ending) =
            self.reset_pipeline(record, &snapshot.policy, intent).await;
        findings.policy_version = Some(snapshot.version.clone());
        findings.policy_content = Some(snapshot.content.clone());
        let resolvable = ending.as_ref().is_some_and(|e| e.resolvable);
        let answer = || {
            (kept_answer(&result) && !resolvable).then(|| {
                let pool = Some(request.user_pool_id.as_str());
                match &result {
                    Ok(Performed::Pending(pending)) => Answer::pending(pending, pool, &origin.id),
                    Ok(Performed::Reset(reset)) => Answer::new(Ok(reset), pool, &origin.id),
                    Ok(Performed::Replayed(answer)) => answer.clone(),
                    Err(error) => Answer::new(Err(error), pool, &origin.id),
                }
                .with_ticket(request.ticket())
            })
        };
        // The key's end: an ambiguous reset the user's status can settle keeps its final answer
        // (`reset-unconfirmed`, also for an SQS record handed back to decide on redelivery)
        // undecided for the user item's window, so that the key's retry inside it decides and
        // one after it is told that answer, never resets again.
        let key_answer = || {
            if resolvable {
                let pool = Some(request.user_pool_id.as_str());
                KeyAnswer::Undecided(
                    Answer::unconfirmed(pool, &origin.id).with_ticket(request.ticket()),
                )
            } else {
                answer().map_or(KeyAnswer::Release, KeyAnswer::Final)
            }
        };
        let started = Instant::now();
        match (held.as_ref(), ending, &self.guard) {
            // The key's answer first, then the claim's end (only once the key's write is known).
            (Some((guard, key)), Some(ending), _) => {
                let answer = key_answer();
                guard
                    .settle(
                        &ending.claim,
                        ending.completion,
                        key,
                        answer.as_ref(),
                        deadline,
                    )
                    .await;
            }
            (Some((guard, key)), None, _) => guard.finish(key, answer().as_ref(), deadline).await,
            (None, Some(ending), Some(guard)) => {
                guard
                    .complete(&ending.claim, ending.completion, deadline)
                    .await;
            }
            (None, _, _) => {}
        }
        // The answer under the request's own id, for `GET /requests/{id}` (an approved
        // request's is its approval's key: the status route reads it there).
        if let (Some(guard), None) = (&self.guard, record.grant)
            && let Some(answer) = answer()
        {
            // A queued request's answer is its sender's to read (nobody calls as the queue).
            let owner = origin
                .reader
                .clone()
                .unwrap_or_else(|| caller::describe(&origin.caller));
            let pk = answer_pk(&owner, &origin.audit_id());
            guard.keep(&pk, &answer, deadline).await;
        }
        if self.guard.is_some() {
            invocation.guard_latency(started.elapsed());
        }
        let result = result.map(|performed| match performed {
            Performed::Reset(reset) => Settled::Reset(reset),
            Performed::Pending(pending) => Settled::Pending(pending),
            Performed::Replayed(answer) => Settled::Replayed(answer),
        });
        (result, findings)
    }

    /// Resolve, decide, reset (`intent`: the reset's promised turn, kept until it asks for it).
    async fn reset_pipeline(
        &self,
        record: Record<'_>,
        policy: &Policy,
        intent: Option<Intent>,
    ) -> (Result<Performed, ResetError>, Findings, Option<Ending>) {
        let mut findings = Findings::default();
        let user = match self.resolve(record, policy).await {
            Ok(user) => user,
            Err(error) => return (Err(error), findings, None),
        };
        findings.canonical_username = Some(user.record.username.clone());
        let rule = match decide(policy, &record.origin.caller, record.request, &user) {
            Ok(rule) => rule,
            Err(error) => return (Err(error), findings, None),
        };
        findings.rule = Some(rule.clone());
        let plan = match plan(policy.options(&rule), record.request, &user.record) {
            Ok(plan) => plan,
            Err(error) => return (Err(error), findings, None),
        };
        // A rule that asks for a second person: checked, kept, not performed (in DRY_RUN, which
        // writes nothing, the dry run goes on as if approved).
        if record.grant.is_none()
            && !self.config.dry_run
            && let Some(approval) = policy.approval(&rule)
        {
            let ttl = Duration::from_secs(u64::from(approval.ttl_seconds));
            let result = self
                .ask_approval(record, &user.record, &rule, plan, ttl)
                .await;
            if let Ok(pending) = &result {
                findings.approval = Some(crate::audit::ApprovalNote {
                    approval_id: pending.approval_id.clone(),
                    expires_at: Some(pending.expires_at),
                    ..Default::default()
                });
            }
            return (result.map(Performed::Pending), findings, None);
        }
        let (result, ending) = self.reset(record, &user.record, rule, plan, intent).await;
        (result, findings, ending)
    }

    /// The caller-and-pool check, then the canonical user and (if the policy needs them) its
    /// groups.
    async fn resolve(&self, record: Record<'_>, policy: &Policy) -> Result<User, ResetError> {
        let Record {
            origin,
            request,
            deadline,
            invocation,
            ..
        } = record;
        let caller = &origin.caller;
        let pool = &request.user_pool_id;
        let started = Instant::now();
        let found = self
            .directory
            .get_user(pool, &request.username, origin.source.priority(), deadline)
            .await;
        invocation.cognito_latency(op::GET_USER, started.elapsed());
        let user = match found {
            Ok(user) => user,
            Err(error) => {
                let error = ResetError::from(error);
                // "No such user" only for names some rule would admit for this caller and pool.
                if error.code() == "user-not-found" {
                    let named = Subject {
                        username: request.username.as_str().to_owned(),
                        ..Subject::default()
                    };
                    if !policy.rules_admit(caller, pool.as_str(), &named) {
                        return Err(ResetError::Concealed(Box::new(error)));
                    }
                }
                return Err(error);
            }
        };
        let groups = if policy.needs_groups() {
            let started = Instant::now();
            let groups = self
                .directory
                .list_groups(pool, &user.username, origin.source.priority(), deadline)
                .await;
            invocation.cognito_latency(op::LIST_GROUPS, started.elapsed());
            groups?
        } else {
            Vec::new()
        };
        Ok(User {
            record: user,
            groups,
        })
    }

    /// The guard's claim on the user, the caller's budget, then the reset or the resent
    /// invitation (unless `DRY_RUN`) and the sign-out; and how the claim is to end (recorded by
    /// the caller together with the key's answer).
    async fn reset(
        &self,
        record: Record<'_>,
        user: &UserRecord,
        rule: String,
        plan: Plan,
        intent: Option<Intent>,
    ) -> (Result<Performed, ResetError>, Option<Ending>) {
        let Record {
            origin,
            request,
            deadline,
            invocation,
            last_receive,
            key,
            ..
        } = record;
        let pool = &request.user_pool_id;
        let claim = match &self.guard {
            None => None,
            Some(guard) => {
                let started = Instant::now();
                let state = guard
                    .claim(
                        pool.as_str(),
                        &user.username,
                        &origin.audit_id(),
                        key,
                        user.status.as_deref(),
                        deadline,
                    )
                    .await;
                invocation.guard_latency(started.elapsed());
                let state = match state {
                    Ok(state) => state,
                    Err(error) => return (Err(self.guard_failure(error, deadline)), None),
                };
                match state {
                    // A run that took over an undecided key ([`KeyState::Resume`]) and finds the
                    // user free: the earlier reset's window is over (or another request settled
                    // it), and nothing proved it never happened, so its answer stands, final. The
                    // claim is given back; the key, released, gives that answer on every retry.
                    UserState::Claimed(claim)
                        if let Some(open) = key.and_then(|k| k.undecided.as_ref()) =>
                    {
                        let ending = Ending {
                            claim,
                            completion: Completion::Release,
                            resolvable: false,
                        };
                        let result = serde_json::from_str::<Answer>(&open.answer)
                            .map(Performed::Replayed)
                            .map_err(|_| {
                                let error = GuardError::new(
                                    GuardErrorKind::Misconfigured,
                                    "GetItem",
                                    "an undecided key item has no readable answer".to_owned(),
                                );
                                self.guard_failure(error, deadline)
                            });
                        return (result, Some(ending));
                    }
                    // A run under this key died holding it, and the window in which its user
                    // item would still say what it did is over: it may have sent a reset that
                    // nothing remembers, so none is sent; the answer is final under the key.
                    UserState::Abandoned(claim) => return abandoned(claim, pool.as_str(), user),
                    UserState::Claimed(claim) => Some(claim),
                    UserState::Free => None,
                    UserState::InProgress => return (Err(ResetError::InProgress), None),
                    // Cognito's attempt limit for this user, remembered: no call until it ends.
                    UserState::AttemptLimited { until } => {
                        return (Err(attempt_limited(until)), None);
                    }
                    UserState::RecentlyReset {
                        reset_at,
                        until,
                        confirmed,
                    } => {
                        // The item's expiry is itself rounded up to a whole second, so this is at
                        // most the cooldown plus one.
                        let error = ResetError::RecentlyReset {
                            reset_at,
                            retry_after_secs: retry_after_secs(until),
                            confirmed,
                        };
                        return (Err(error), None);
                    }
                    UserState::Unresolved {
                        holder,
                        reset_at,
                        until,
                        own,
                        claim,
                    } => {
                        let settled = self
                            .settle_unresolved(
                                record, user, guard, &claim, &holder, reset_at, until, own,
                            )
                            .await;
                        match settled {
                            // Another request's reset proved never sent says nothing of what
                            // this key's dead run did, once its window is over.
                            Ok(UserState::Abandoned(claim)) => {
                                return abandoned(claim, pool.as_str(), user);
                            }
                            Ok(UserState::Claimed(claim)) => Some(claim),
                            // This request's own earlier attempt reset the user: RESET, with no
                            // second call.
                            Ok(UserState::RecentlyReset {
                                confirmed: true, ..
                            }) if own => {
                                let reset = Reset::new(
                                    user.username.clone(),
                                    rule,
                                    plan.action,
                                    self.config.dry_run,
                                );
                                return (Ok(Performed::Reset(reset)), None);
                            }
                            Ok(UserState::RecentlyReset {
                                reset_at,
                                until,
                                confirmed,
                            }) => {
                                let error = ResetError::RecentlyReset {
                                    reset_at,
                                    retry_after_secs: retry_after_secs(until),
                                    confirmed,
                                };
                                return (Err(error), None);
                            }
                            Ok(_) => return (Err(ResetError::InProgress), None),
                            Err(error) => return (Err(error), None),
                        }
                    }
                    UserState::SignOutPending { reset_at, claim } => {
                        // This record's earlier delivery reset the user and its sign-out failed:
                        // only the sign-out is tried again, never the reset.
                        let mut reset = Reset::new(
                            user.username.clone(),
                            rule,
                            Action::ResetPassword,
                            self.config.dry_run,
                        );
                        reset.sign_out_only = true;
                        if self.config.dry_run {
                            return (Ok(Performed::Reset(reset)), None);
                        }
                        reset.signed_out = Some(self.sign_out(record, user, !last_receive).await);
                        // Signed out, or failed for good: the user item keeps only the reset's
                        // cooldown from now on. A failure that may pass keeps it pending.
                        let ending = (!reset.retry_sign_out()).then_some(Ending {
                            claim,
                            completion: Completion::SignedOut { reset_at },
                            resolvable: false,
                        });
                        return (Ok(Performed::Reset(reset)), ending);
                    }
                }
            }
        };
        let release = |claim: Option<Claim>| {
            claim.map(|claim| Ending {
                claim,
                completion: Completion::Release,
                resolvable: false,
            })
        };
        // The caller's budget: spent only by a reset that is about to be sent.
        let spent = match self.spend_budget(record, &rule, plan.budget).await {
            Ok(spent) => spent,
            Err(error) => return (Err(error), release(claim)),
        };
        let mut reset = Reset::new(
            user.username.clone(),
            rule,
            plan.action,
            self.config.dry_run,
        );
        if self.config.dry_run {
            return (Ok(Performed::Reset(reset)), release(claim));
        }
        // The promised turn becomes a real one.
        drop(intent);
        let started = Instant::now();
        let (operation, result) = match plan.action {
            Action::ResetPassword => (
                op::RESET_PASSWORD,
                self.directory
                    .reset_password(
                        pool,
                        &user.username,
                        &request.client_metadata,
                        origin.source.priority(),
                        deadline,
                    )
                    .await,
            ),
            Action::ResendInvitation => (
                op::CREATE_USER,
                self.directory
                    .resend_invitation(
                        pool,
                        &user.username,
                        &request.client_metadata,
                        origin.source.priority(),
                        deadline,
                    )
                    .await,
            ),
        };
        invocation.cognito_latency(operation, started.elapsed());
        let ambiguous = matches!(&result, Err(error) if error.outcome_unknown());
        if result.is_err()
            && !ambiguous
            && let (Some(guard), Some((scope, window))) = (&self.guard, &spent)
        {
            // Nothing was sent: the spend is given back.
            guard.refund(scope, *window, deadline).await;
        }
        // The sign-out, only after a reset that happened (an invited user has no session). A
        // failure that may pass hands an SQS record back for the sign-out alone, unless this
        // is its last receive.
        if result.is_ok() && plan.sign_out {
            let retryable = claim.is_some() && origin.source.is_queue() && !last_receive;
            reset.signed_out = Some(self.sign_out(record, user, retryable).await);
        }
        // An ambiguous reset of a user who was CONFIRMED can be settled by the user's status
        // once the call can no longer be in flight: an SQS record is handed back and its
        // redelivery decides; over HTTP the answer is 502 as before, and not kept, so that the
        // same key's retry decides.
        let resolvable = ambiguous && claim.is_some() && user.status.as_deref() == Some(CONFIRMED);
        let ending = claim.map(|claim| Ending {
            claim,
            completion: match &result {
                Ok(_) if reset.retry_sign_out() => Completion::ResetSignOutPending,
                Ok(_) => Completion::Reset,
                Err(_) if ambiguous => Completion::Unconfirmed,
                Err(DirectoryError::Cognito(error))
                    if error.kind == CognitoErrorKind::AttemptLimit =>
                {
                    Completion::AttemptLimited {
                        until: crate::deadline::wall_now()
                            + Duration::from_secs(ATTEMPT_LIMIT_RETRY_AFTER_SECS),
                    }
                }
                Err(_) => Completion::Release,
            },
            resolvable,
        });
        let hand_back = resolvable && origin.source.is_queue() && !last_receive;
        let result = result.map_err(|error| {
            let error = ResetError::from(error);
            if hand_back {
                ResetError::ResetUnresolved(Box::new(error))
            } else if ambiguous {
                ResetError::ResetUnconfirmed(Box::new(error))
            } else {
                error
            }
        });
        match result {
            Ok(request_id) => {
                reset.cognito_request_id = request_id;
                (Ok(Performed::Reset(reset)), ending)
            }
            Err(error) => (Err(error), ending),
        }
    }

    /// Settles an earlier reset whose answer was lost (on a user who was `CONFIRMED` before it,
    /// and which can no longer be in flight) by reading the user again: `RESET_REQUIRED` means
    /// it happened, `CONFIRMED` that it never did (this record may then reset). When the status
    /// tells nothing (another status, or the read failed) it stays a possible reset.
    #[allow(clippy::too_many_arguments)]
    async fn settle_unresolved(
        &self,
        record: Record<'_>,
        user: &UserRecord,
        guard: &Guard,
        claim: &Claim,
        holder: &str,
        reset_at: std::time::SystemTime,
        until: std::time::SystemTime,
        own: bool,
    ) -> Result<UserState, ResetError> {
        let unconfirmed = UserState::RecentlyReset {
            reset_at,
            until,
            confirmed: false,
        };
        let Ok(username) = Username::parse(&user.username) else {
            return Ok(unconfirmed);
        };
        let started = Instant::now();
        let now = self
            .directory
            .get_user(
                &record.request.user_pool_id,
                &username,
                record.origin.source.priority(),
                record.deadline,
            )
            .await;
        record
            .invocation
            .cognito_latency(op::GET_USER, started.elapsed());
        let status = now.ok().and_then(|u| u.status);
        let Some(resolution) = guard_logic::resolution(
            status.as_deref(),
            reset_at,
            own,
            record.deadline.wall_clock(),
            wall_now(),
            guard.cooldown(),
        ) else {
            return Ok(unconfirmed);
        };
        tracing::info!(
            resolution = match resolution {
                Resolution::Happened { .. } => "happened",
                Resolution::NeverHappened { .. } => "never-happened",
            },
            "an earlier reset whose answer was lost is settled by the user's status"
        );
        let started = Instant::now();
        let settled = guard
            .resolve(claim, holder, resolution, record.deadline)
            .await;
        record.invocation.guard_latency(started.elapsed());
        settled.map_err(|error| self.guard_failure(error, record.deadline))
    }

    /// Spends one reset of the caller's budget under `rule`, if it has one: the scope and the
    /// window to give it back to, or REJECTED `caller-budget-exhausted`.
    async fn spend_budget(
        &self,
        record: Record<'_>,
        rule: &str,
        budget: Option<Budget>,
    ) -> Result<Option<(BudgetScope, u64)>, ResetError> {
        let Some(budget) = budget else {
            return Ok(None);
        };
        let Some(guard) = &self.guard else {
            // The loader refuses such a policy; never reset past a budget nobody counts.
            return Err(ResetError::GuardUnavailable(GuardError::new(
                GuardErrorKind::Misconfigured,
                "spend",
                "a policy rule has a budget and GUARD_TABLE is not set",
            )));
        };
        let scope = BudgetScope::new(
            rule,
            &caller::budget_identity(&record.origin.caller),
            budget.resets,
            budget.per_seconds,
        );
        let started = Instant::now();
        let turn = guard.spend(&scope, record.deadline).await;
        record.invocation.guard_latency(started.elapsed());
        match turn.map_err(|error| self.guard_failure(error, record.deadline))? {
            BudgetTurn::Spent { window } => Ok(Some((scope, window))),
            BudgetTurn::Exhausted { until } => {
                record.invocation.metrics().budget_refused();
                Err(ResetError::CallerBudgetExhausted {
                    retry_after_secs: retry_after_secs(until),
                })
            }
        }
    }

    /// A request under a rule with `approval`: the checks a reset would make without writing
    /// (the user's cooldown, the caller's budget looked at, not spent), then the approval
    /// item, which holds the request as made (with its ClientMetadata) for the reset to come.
    async fn ask_approval(
        &self,
        record: Record<'_>,
        user: &UserRecord,
        rule: &str,
        plan: Plan,
        ttl: Duration,
    ) -> Result<Pending, ResetError> {
        let Record {
            origin,
            request,
            deadline,
            invocation,
            ..
        } = record;
        let Some(guard) = &self.guard else {
            // The loader refuses such a policy; never perform what nobody approved.
            return Err(ResetError::GuardUnavailable(GuardError::new(
                GuardErrorKind::Misconfigured,
                "request_approval",
                "a policy rule requires approval and GUARD_TABLE is not set",
            )));
        };
        let started = Instant::now();
        let state = guard
            .peek_user(
                request.user_pool_id.as_str(),
                &user.username,
                &origin.audit_id(),
                deadline,
            )
            .await;
        invocation.guard_latency(started.elapsed());
        match state.map_err(|e| self.guard_failure(e, deadline))? {
            UserState::RecentlyReset {
                reset_at,
                until,
                confirmed,
            } => {
                return Err(ResetError::RecentlyReset {
                    reset_at,
                    retry_after_secs: retry_after_secs(until),
                    confirmed,
                });
            }
            // An earlier reset whose answer was lost: settled only by a claim (the reset's own
            // path); a request waiting for approval is told it may have a code.
            UserState::Unresolved {
                reset_at, until, ..
            } => {
                return Err(ResetError::RecentlyReset {
                    reset_at,
                    retry_after_secs: retry_after_secs(until),
                    confirmed: false,
                });
            }
            UserState::AttemptLimited { until } => return Err(attempt_limited(until)),
            UserState::InProgress => return Err(ResetError::InProgress),
            UserState::Claimed(_)
            | UserState::Abandoned(_)
            | UserState::Free
            | UserState::SignOutPending { .. } => {}
        }
        if let Some(budget) = plan.budget {
            let scope = BudgetScope::new(
                rule,
                &caller::budget_identity(&origin.caller),
                budget.resets,
                budget.per_seconds,
            );
            let started = Instant::now();
            let turn = guard.peek_budget(&scope, deadline).await;
            invocation.guard_latency(started.elapsed());
            if let BudgetTurn::Exhausted { until } =
                turn.map_err(|e| self.guard_failure(e, deadline))?
            {
                invocation.metrics().budget_refused();
                return Err(ResetError::CallerBudgetExhausted {
                    retry_after_secs: retry_after_secs(until),
                });
            }
        }
        let now = crate::deadline::wall_now();
        let pending = crate::approvals::pending_approval(
            &origin.caller,
            rule,
            request,
            &user.username,
            now,
            ttl,
        );
        let started = Instant::now();
        let created = guard.request_approval(&pending, deadline).await;
        invocation.guard_latency(started.elapsed());
        created.map_err(|e| self.guard_failure(e, deadline))?;
        invocation.metrics().approval("requested");
        Ok(Pending {
            approval_id: pending.approval_id,
            expires_at: pending.decide_by,
            username: user.username.clone(),
            rule: rule.to_owned(),
        })
    }

    /// `AdminUserGlobalSignOut` after a reset. `retryable`: a failure that may pass hands the
    /// record back (an SQS record whose reset the guard remembers).
    async fn sign_out(&self, record: Record<'_>, user: &UserRecord, retryable: bool) -> SignedOut {
        let started = Instant::now();
        let result = self
            .directory
            .global_sign_out(
                &record.request.user_pool_id,
                &user.username,
                record.origin.source.priority(),
                record.deadline,
            )
            .await;
        record
            .invocation
            .cognito_latency(op::GLOBAL_SIGN_OUT, started.elapsed());
        let signed_out = match result {
            Ok(_) => SignedOut::Done,
            Err(error) => {
                let error = ResetError::from(error);
                tracing::warn!(
                    code = error.code(),
                    error.cause_chain = %crate::logging::cause_chain(&error),
                    "the sign-out after the reset failed; the reset stands and is not sent again"
                );
                SignedOut::Failed {
                    code: error.code(),
                    retry: retryable && error.class() == Class::Retry,
                }
            }
        };
        record
            .invocation
            .metrics()
            .sign_out(signed_out == SignedOut::Done);
        signed_out
    }
}

/// What a reset under a rule does: its action, whether a sign-out follows, the budget.
#[derive(Debug, Clone, Copy)]
struct Plan {
    action: Action,
    sign_out: bool,
    budget: Option<Budget>,
}

/// The rule's options applied to the request and the user's status: `sign-out-not-allowed`,
/// `user-unconfirmed`, `external-user`, `invitation-pending`, or the plan.
fn plan(
    options: RuleOptions,
    request: &ResetRequest,
    user: &UserRecord,
) -> Result<Plan, ResetError> {
    if request.sign_out && options.sign_out == SignOut::Never {
        return Err(ResetError::SignOutNotAllowed);
    }
    let action = match user.status.as_deref() {
        Some("UNCONFIRMED") => return Err(ResetError::UserUnconfirmed),
        Some("EXTERNAL_PROVIDER") => return Err(ResetError::ExternalUser),
        Some("FORCE_CHANGE_PASSWORD") => match options.invited {
            Invited::Refuse => return Err(ResetError::InvitationPending),
            Invited::Resend => Action::ResendInvitation,
        },
        _ => Action::ResetPassword,
    };
    let sign_out = action == Action::ResetPassword
        && match options.sign_out {
            SignOut::Never => false,
            SignOut::Allowed => request.sign_out,
            SignOut::Always => true,
        };
    Ok(Plan {
        action,
        sign_out,
        budget: options.budget,
    })
}

/// The policy decision (the rule that allows the reset), and the disabled-user check.
fn decide(
    policy: &Policy,
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
    let pool = request.user_pool_id.as_str();
    let rule = match policy.decide(caller, pool, &subject) {
        Decision::Allow { rule } => rule,
        // The deny list is told only to callers some rule would let reset this user.
        Decision::Deny(reason @ (DenyReason::DeniedUser | DenyReason::DeniedGroup))
            if !policy.rules_admit(caller, pool, &subject) =>
        {
            return Err(ResetError::Concealed(Box::new(ResetError::Denied(reason))));
        }
        Decision::Deny(reason) => return Err(ResetError::Denied(reason)),
    };
    // The allowing rule's ticket: this caller may reset this user under it, so the answer tells
    // it nothing it may not know.
    policy.check_ticket(&rule, request.ticket())?;
    if !user.record.enabled {
        return Err(ResetError::UserDisabled);
    }
    Ok(rule)
}

impl App {
    /// A guard failure: a timeout that ran into the deadline's margin is `deadline`, not an
    /// outage of the guard.
    fn guard_failure(&self, error: GuardError, deadline: Deadline) -> ResetError {
        if error.kind == GuardErrorKind::Unavailable
            && deadline.too_close(self.config.deadline_margin)
        {
            return ResetError::Deadline;
        }
        ResetError::from(error)
    }
}

/// Whether a result is kept under its idempotency key and replayed: a final answer, but not a
/// RETRY, nor one that passes later (`recently-reset`, `caller-budget-exhausted`,
/// `delivery-limit`, `attempt-limit`: a replay would say no when the truth is yes).
fn kept_answer(result: &Result<Performed, ResetError>) -> bool {
    match result {
        // A reset whose sign-out is retried on redelivery: the redelivery must run.
        Ok(Performed::Reset(reset)) => !reset.retry_sign_out(),
        // Kept: a repeat learns the same approval, never asks for a second one.
        Ok(Performed::Pending(_)) => true,
        // Already under the key (released, the key gives it back).
        Ok(Performed::Replayed(_)) => false,
        Err(error) if error.passes_later() => false,
        Err(error) => error.class() == Class::Rejected,
    }
}

/// A run under a key its dead holder left, past that holder's window ([`UserState::Abandoned`]):
/// the claim is given back and the request answered `reset-unconfirmed`, final under the key.
fn abandoned(
    claim: Claim,
    pool: &str,
    user: &UserRecord,
) -> (Result<Performed, ResetError>, Option<Ending>) {
    tracing::warn!(
        pool = %pool,
        user = %user.username,
        "an earlier run of this request died holding its key, and its cooldown window is over: it may have sent a reset, so none is sent again (reset-unconfirmed)"
    );
    let ending = Ending {
        claim,
        completion: Completion::Release,
        resolvable: false,
    };
    let error = ResetError::ResetUnconfirmed(Box::new(ResetError::Deadline));
    (Err(error), Some(ending))
}

/// Cognito's attempt limit for a user, remembered by the guard until `until`: the refusal
/// Cognito gave, without asking it again.
fn attempt_limited(until: std::time::SystemTime) -> ResetError {
    ResetError::Cognito(CognitoError::new(
        CognitoErrorKind::AttemptLimit,
        op::RESET_PASSWORD,
        Effect::None,
        format!(
            "Cognito's attempt limit for this user, remembered by the guard for {} s more",
            retry_after_secs(until)
        ),
    ))
}

/// Records a record span's ending fields in one call: every layer sees one record, not five (the
/// log's JSON layer parses and writes a span's stored fields again at each record, about 16,000
/// instructions each: `callgrind` on `sqs-batch-one-thread/no-guard`).
fn record_ending(
    span: &tracing::Span,
    outcome: &str,
    code: &str,
    pool: Option<&str>,
    rule: Option<&str>,
    replayed: bool,
) {
    use tracing::field::Value;
    let Some(fields) = span.metadata().map(tracing::Metadata::fields) else {
        return;
    };
    let (Some(f_outcome), Some(f_code), Some(f_pool), Some(f_rule), Some(f_replayed)) = (
        fields.field("outcome"),
        fields.field("code"),
        fields.field("pool"),
        fields.field("rule"),
        fields.field("replayed"),
    ) else {
        return;
    };
    span.record_all(&fields.value_set(&[
        (&f_outcome, Some(&outcome as &dyn Value)),
        (&f_code, Some(&code as &dyn Value)),
        (&f_pool, Some(&pool as &dyn Value)),
        (&f_rule, Some(&rule as &dyn Value)),
        (&f_replayed, Some(&replayed as &dyn Value)),
    ]));
}

/// The idempotency key as the audit line shows it: `<key>#<index>` for an HTTP batch item.
fn key_label(key: Option<&str>, index: Option<usize>) -> Option<String> {
    key.map(|key| match index {
        Some(index) => format!("{key}#{index}"),
        None => key.to_owned(),
    })
}

/// The canonical user and its groups.
struct User {
    record: UserRecord,
    groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::{Layer, registry::LookupSpan};

    /// Each `record` a layer sees: the fields it carried, as `name=value`.
    #[derive(Clone, Default)]
    struct Records(Arc<Mutex<Vec<Vec<String>>>>);

    struct Fields<'a>(&'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
    }

    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Records {
        fn on_record(
            &self,
            _span: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _ctx: Context<'_, S>,
        ) {
            let mut fields = Vec::new();
            values.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }

    #[test]
    fn a_record_spans_ending_fields_reach_the_layers_in_one_record() {
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(records.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "record",
                source = "sqs",
                outcome = tracing::field::Empty,
                code = tracing::field::Empty,
                pool = tracing::field::Empty,
                rule = tracing::field::Empty,
                replayed = tracing::field::Empty,
            );
            super::record_ending(&span, "RESET", "reset", Some("us-east-1_pool"), None, true);
        });
        let records = records.0.lock().unwrap();
        // One call; a pool with no rule leaves the rule unrecorded, as `record` would.
        assert_eq!(
            *records,
            vec![vec![
                "outcome=\"RESET\"".to_owned(),
                "code=\"reset\"".to_owned(),
                "pool=\"us-east-1_pool\"".to_owned(),
                "replayed=true".to_owned(),
            ]]
        );
    }
}
