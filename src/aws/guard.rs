//! The guard's port: idempotency keys and per-user reset claims, in one DynamoDB table.
//!
//! [`GuardStore`] is the port (four conditional operations, each within a time budget);
//! [`DynamoGuard`] implements it over DynamoDB; [`Guard`] is what the pipeline calls: it gives
//! each operation its stage's time (a key or a claim is taken by `deadline − margin`, a result
//! is recorded by `deadline − margin/4`, so a reset that was answered is always recorded) and
//! logs what it could not record.
//!
//! One table, one string partition key `pk`, TTL on the number attribute `expiresAt` (epoch
//! seconds). Two kinds of item live in it:
//!
//! | item | `pk` | attributes |
//! |---|---|---|
//! | idempotency key | `key#<sha256(caller, key, batch index)>` | `state` (`pending` or `done`), `requestHash`, `leaseUntil` (ms), `answer` (JSON, when done), `expiresAt` |
//! | user claim | `user#<pool>#<canonical username>` | `state` (`claimed`, `reset`, or `unconfirmed`: the reset's answer was lost), `claimId`, `claimedAt` (ms), `leaseUntil` (ms), `resetAt` (ms, when reset), `signOutPending` (the record id whose sign-out failed and is retried on its redelivery), `expiresAt` |
//! | caller budget | `budget#<sha256(rule, caller)>` | `window` (epoch seconds / `perSeconds`), `used` (resets in that window), `before` (in the window before it), `total` (`used + before`), `expiresAt` |
//!
//! **Budgets** (a rule's `budget`: at most N resets per caller in any S seconds) count in fixed
//! windows `[w·S, (w+1)·S)` and admit a reset only while `before + used < N`: every S-second
//! interval ending now lies inside windows w−1 and w, so no S seconds ever hold more than N
//! resets. The price is a later restart after a burst: with `used < N` the budget admits again
//! when window w+1 begins (w's count becomes `before`), with `used = N` when w+2 begins, at most
//! 2·S after the burst (`Retry-After` is exactly that time). A spend is one conditional `UpdateItem`
//! (`total < :n` in the current window), so exactly N of many concurrent requests win; a new
//! window is started by one conditional `PutItem` over the item it replaces. A reset refused
//! before sending (by Cognito or the guard) gives its spend back.
//!
//! Every decision is one conditional `PutItem` that succeeds only where no live item exists
//! (absent, or past its `expiresAt`: DynamoDB's TTL deletes lazily, so the condition checks it
//! too). A failed condition is never an error: the item that won is read back (from the
//! failure itself, or with a consistent `GetItem`) and says why. DynamoDB's own failures are
//! [`GuardError`]s, which the pipeline reports as RETRY `guard-unavailable`.
//!
//! Only final answers are kept under a key: RESET, WOULD_RESET and REJECTED, but not
//! `recently-reset` (it passes once the cooldown ends), `caller-budget-exhausted` (once the budget
//! admits one more), a RESET whose sign-out is retried on redelivery, nor any RETRY.
//!
//! Items never hold `ClientMetadata`: a request is compared through `requestHash`, a SHA-256 of
//! its pool, username, metadata and (when asked) `SignOut`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::{Client, config};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::classify;
use super::{BoxFuture, ClientSettings, Stage, budget, timeouts_within};
use crate::deadline::{
    Deadline, epoch_ms as ms, epoch_secs_ceil as secs_ceil, epoch_secs_floor as secs_floor,
    wall_now,
};
use crate::failure::{GuardError, GuardErrorKind};
use crate::request::ResetRequest;

/// A live item's condition for a new claim: nothing there, or what is there has expired.
pub const CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR expiresAt <= :nowSecs";
/// An idempotency key may also be taken over when its holder's lease ran out before it
/// finished (the invocation died): RETRY is not kept, so the key runs again.
pub const KEY_CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR expiresAt <= :nowSecs OR (#state = :pending AND leaseUntil <= :nowMs)";
/// Only the holder of a claim may complete or release it.
pub const HOLDER_CONDITION: &str = "claimId = :claimId";
/// Only a pending key may be finished or released.
pub const PENDING_CONDITION: &str = "#state = :pending";
/// A budget's spend: in the current window, below the limit.
pub const BUDGET_SPEND_CONDITION: &str = "#window = :window AND #total < :limit";
/// A budget's first item.
pub const BUDGET_START_CONDITION: &str = "attribute_not_exists(pk)";
/// A budget's new window, over exactly the item that was read.
pub const BUDGET_ROLL_CONDITION: &str = "#window = :oldWindow AND #used = :oldUsed";
/// A spend given back, in the window it was taken in (`#count` is `used`, or `before` once
/// the window has moved on).
pub const BUDGET_REFUND_CONDITION: &str = "#window = :window AND #count > :zero";
/// Rounds of a budget's spend lost to concurrent writers before it gives up (a new window
/// races at most once per window; each lost round means another request's spend won).
const BUDGET_ROUNDS: usize = 8;

/// Settings of the guard, from the function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// `GUARD_TABLE`: a table name or ARN.
    pub table: String,
    /// `RESET_COOLDOWN_SECONDS`: at most one reset per user in this window (zero: off).
    pub cooldown: Duration,
    /// `IDEMPOTENCY_TTL_SECONDS`: how long a final answer is replayed.
    pub idempotency_ttl: Duration,
    /// Timeout and attempts of each DynamoDB call.
    pub client: ClientSettings,
}

/// A failed call to the guard's table (the pacing buckets' too), classified.
pub(super) fn from_sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> GuardError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
    E: std::error::Error + Send + Sync + 'static,
{
    let classified = classify(
        &error,
        &["ResourceNotFoundException", "ValidationException"],
    );
    GuardError::new(classified.fault.into(), operation, error)
}

fn malformed(operation: &'static str, what: &str) -> GuardError {
    GuardError::new(GuardErrorKind::Misconfigured, operation, what.to_owned())
}

/// An idempotency key as the guard stores it: scoped by caller and by batch position, bound to
/// one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The key as the caller gave it, with `#<index>` for a batch item (for the audit line).
    pub key: String,
    /// The item's partition key.
    pub pk: String,
    /// The SHA-256 of the compared fields of the request.
    pub request_hash: String,
}

impl KeyRef {
    /// The key `key` of `caller` (its stable description) for `request`, item `index` of a
    /// batch or (`None`) a single request: the two can never share an item.
    pub fn new(caller: &str, key: &str, index: Option<usize>, request: &ResetRequest) -> KeyRef {
        let position = match index {
            Some(index) => format!("item {index}"),
            None => "single".to_owned(),
        };
        let pk = format!(
            "key#{}",
            sha256_hex(&[caller.as_bytes(), key.as_bytes(), position.as_bytes()])
        );
        // JSON of the three compared fields: unambiguous, and ClientMetadata is a sorted map.
        let mut compared = serde_json::json!([
            request.user_pool_id.as_str(),
            request.username.as_str(),
            request.client_metadata.entries(),
        ]);
        // `SignOut` only when asked, so the keys of requests without it keep their hash.
        if request.sign_out
            && let Some(fields) = compared.as_array_mut()
        {
            fields.push(serde_json::Value::Bool(true));
        }
        KeyRef {
            key: match index {
                Some(index) => format!("{key}#{index}"),
                None => key.to_owned(),
            },
            pk,
            request_hash: sha256_hex(&[compared.to_string().as_bytes()]),
        }
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What an idempotency key says about a request; `A` is the answer kept for replay (the store
/// keeps it as JSON and knows nothing of it).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState<A> {
    /// First use (or a retry after a RETRY): the request runs, and this invocation holds the key.
    Fresh,
    /// A final answer was given before: give it again.
    Replay(A),
    /// The same key is being processed right now.
    InProgress,
    /// The key was used with a different request.
    Reused,
}

/// What the per-user claim says about a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserState {
    /// This invocation holds the user: it may reset.
    Claimed(Claim),
    /// Dry run: nothing stands in the way, and nothing was written.
    Free,
    /// Reset at `reset_at` (`confirmed`), or a reset sent then whose answer was lost or whose
    /// sender died (not `confirmed`: the user may have a code); the window ends at `until`.
    RecentlyReset {
        reset_at: SystemTime,
        until: SystemTime,
        confirmed: bool,
    },
    /// Another request is between its claim and its result.
    InProgress,
    /// This record reset the user on an earlier delivery and its sign-out failed: sign out
    /// only, never reset again.
    SignOutPending { reset_at: SystemTime },
}

/// One caller's budget under one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetScope {
    /// The item's partition key.
    pub pk: String,
    /// N: resets admitted...
    pub resets: u32,
    /// ...in any window of S seconds.
    pub per_seconds: u32,
}

impl BudgetScope {
    /// The budget of `caller` (its stable description) under `rule`.
    pub fn new(rule: &str, caller: &str, resets: u32, per_seconds: u32) -> BudgetScope {
        BudgetScope {
            pk: format!(
                "budget#{}",
                sha256_hex(&[rule.as_bytes(), caller.as_bytes()])
            ),
            resets: resets.max(1),
            per_seconds: per_seconds.max(1),
        }
    }

    fn window_of(&self, time: SystemTime) -> u64 {
        secs_floor(time) / u64::from(self.per_seconds)
    }

    fn window_start(&self, window: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(window.saturating_mul(u64::from(self.per_seconds)))
    }

    /// When a budget with `before` and `used` resets counted in `window` (at the limit) admits
    /// one more: at the next window if `used` alone is below the limit, else the one after.
    fn admits_again(&self, window: u64, used: u64) -> SystemTime {
        if used < u64::from(self.resets) {
            self.window_start(window + 1)
        } else {
            self.window_start(window + 2)
        }
    }
}

/// What a budget said about one more reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetTurn {
    /// Admitted and counted in `window` (give it back with [`Guard::refund`] if nothing was
    /// sent). In `DRY_RUN`, admitted and not counted.
    Spent { window: u64 },
    /// At the limit until `until`.
    Exhausted { until: SystemTime },
}

/// A held user claim, to complete or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The user item's partition key.
    pub pk: String,
    /// This claim's id.
    pub id: String,
}

/// The partition key of a user's claim.
pub fn user_pk(pool: &str, username: &str) -> String {
    format!("user#{pool}#{username}")
}

/// How a claimed reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The reset happened: the cooldown window starts now.
    Reset,
    /// Cognito refused, or failed in a way that proves nothing happened: others may try.
    Release,
    /// Unknown whether the reset happened (a timeout, a 5xx, an unreadable answer): the claim
    /// stays, marked unconfirmed, for a cooldown window from now, so nothing sends a second code
    /// inside it.
    Unconfirmed,
    /// The reset happened and the sign-out after it failed in a way that may pass: as `Reset`,
    /// and the item remembers the record (`signOutPending`), so that its redelivery only signs
    /// out. Kept at least `IDEMPOTENCY_TTL_SECONDS`, even with the cooldown off.
    ResetSignOutPending,
}

/// The guard's four operations, each one conditional write (and, on a lost race, a read),
/// within `budget`.
pub trait GuardStore: Send + Sync + std::fmt::Debug {
    /// Takes an idempotency key until `lease_until`, or says why not (a replay's answer as JSON).
    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>>;

    /// Records a key's final answer (JSON), or releases the key (`None`).
    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    /// Claims a user (item `claim.pk`) as `claim.id` until `lease_until`, or says why not.
    fn claim<'a>(
        &'a self,
        claim: &'a Claim,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>>;

    /// Ends a held claim.
    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    /// Spends one reset of a caller's budget, or says until when it is exhausted. A store that
    /// keeps no budgets says so (the policy loader refuses budgets without the guard's table).
    fn spend<'a>(
        &'a self,
        _scope: &'a BudgetScope,
        _budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        Box::pin(async { Err(malformed("UpdateItem", "this guard store keeps no budgets")) })
    }

    /// Gives back a spend of `window` (nothing was sent).
    fn refund<'a>(
        &'a self,
        _scope: &'a BudgetScope,
        _window: u64,
        _budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Makes claim ids unique within the process; with the time and the record's id, unique.
static CLAIMS: AtomicU64 = AtomicU64::new(0);

/// The guard as the pipeline uses it: each operation within its stage of the deadline.
#[derive(Debug, Clone)]
pub struct Guard {
    store: Arc<dyn GuardStore>,
    cooldown: Duration,
    /// `DEADLINE_MARGIN_MS`.
    margin: Duration,
}

impl Guard {
    /// The guard over `store`.
    pub fn new(store: Arc<dyn GuardStore>, settings: &GuardSettings, margin: Duration) -> Guard {
        Guard {
            store,
            cooldown: settings.cooldown,
            margin,
        }
    }

    /// The guard over DynamoDB (a client configured with [`configure`]); `read_only` is
    /// `DRY_RUN`.
    pub fn dynamodb(
        client: Client,
        settings: GuardSettings,
        read_only: bool,
        margin: Duration,
    ) -> Guard {
        let store = DynamoGuard::new(client, settings.clone(), read_only);
        Guard::new(Arc::new(store), &settings, margin)
    }

    /// The cooldown window.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// The time an operation of `stage` may take, or `Deadline` when none is left.
    fn budget(
        &self,
        deadline: Deadline,
        stage: Stage,
        operation: &'static str,
    ) -> Result<Duration, GuardError> {
        let left = budget(deadline, self.margin, stage);
        if left.is_zero() {
            return Err(GuardError::new(
                GuardErrorKind::Deadline,
                operation,
                "no time left before the invocation's deadline",
            ));
        }
        Ok(left)
    }

    /// Takes an idempotency key for this invocation, or says why not.
    #[tracing::instrument(level = "debug", name = "guard.begin", skip_all)]
    pub async fn begin<A: DeserializeOwned>(
        &self,
        key: &KeyRef,
        deadline: Deadline,
    ) -> Result<KeyState<A>, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "begin")?;
        let state = self.store.begin(key, deadline.wall_clock(), budget).await?;
        Ok(match state {
            KeyState::Fresh => KeyState::Fresh,
            KeyState::InProgress => KeyState::InProgress,
            KeyState::Reused => KeyState::Reused,
            KeyState::Replay(json) => KeyState::Replay(
                serde_json::from_str(&json)
                    .map_err(|_| malformed("GetItem", "a done key item has no readable answer"))?,
            ),
        })
    }

    /// Records a key's final answer (replayed until the TTL ends), or releases the key
    /// (`None`). Never refused for the margin: it has its own stage. A failure is logged: the
    /// answer already stands.
    #[tracing::instrument(level = "debug", name = "guard.finish", skip_all)]
    pub async fn finish(&self, key: &KeyRef, answer: Option<&impl Serialize>, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "finish") {
            Ok(budget) => {
                let json = answer.and_then(|a| serde_json::to_string(a).ok());
                self.store.finish(key, json, budget).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                idempotency_key = %key.key,
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not record the idempotency key's result; a retry with this key may run again (the user claim still stops a second reset)"
            );
        }
    }

    /// Claims `username` of `pool` for a reset, or says why not.
    #[tracing::instrument(level = "debug", name = "guard.claim", skip_all)]
    pub async fn claim(
        &self,
        pool: &str,
        username: &str,
        record_id: &str,
        deadline: Deadline,
    ) -> Result<UserState, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "claim")?;
        let claim = Claim {
            pk: user_pk(pool, username),
            id: format!(
                "{record_id}/{}/{}",
                ms(wall_now()),
                CLAIMS.fetch_add(1, Ordering::Relaxed)
            ),
        };
        match self
            .store
            .claim(&claim, deadline.wall_clock(), budget)
            .await
        {
            Ok(state) => Ok(state),
            Err(error) => {
                // The write may have landed before the failure (a timeout): take it back, so
                // that a claim nobody holds does not block the user.
                self.complete(&claim, Completion::Release, deadline).await;
                Err(error)
            }
        }
    }

    /// Ends a held claim. Never refused for the margin: it has its own stage. A failure is
    /// logged: an unfinished claim still counts as a (possible) reset until its window ends, so
    /// it errs on the side of no second code.
    #[tracing::instrument(level = "debug", name = "guard.complete", skip_all)]
    pub async fn complete(&self, claim: &Claim, completion: Completion, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "complete") {
            Ok(budget) => self.store.complete(claim, completion, budget).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                completion = ?completion,
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not complete the user claim; it counts as a possible reset until its window ends"
            );
        }
    }
}

impl Guard {
    /// Spends one reset of `scope`'s budget (in `DRY_RUN`, only reads it).
    #[tracing::instrument(level = "debug", name = "guard.spend", skip_all)]
    pub async fn spend(
        &self,
        scope: &BudgetScope,
        deadline: Deadline,
    ) -> Result<BudgetTurn, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "spend")?;
        self.store.spend(scope, budget).await
    }

    /// Gives a spend back: the reset it was for was refused before anything was sent. A
    /// failure is logged: the budget then counts one reset too many until its window ends
    /// (on the safe side).
    #[tracing::instrument(level = "debug", name = "guard.refund", skip_all)]
    pub async fn refund(&self, scope: &BudgetScope, window: u64, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "refund") {
            Ok(budget) => self.store.refund(scope, window, budget).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not give back a budget spend; the caller's budget counts one reset more until its window ends"
            );
        }
    }
}

/// The guard's table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoGuard {
    client: Client,
    settings: GuardSettings,
    /// `DRY_RUN`: read, never write.
    read_only: bool,
}

impl DynamoGuard {
    /// Wraps a configured client (see [`configure`]).
    pub fn new(client: Client, settings: GuardSettings, read_only: bool) -> DynamoGuard {
        DynamoGuard {
            client,
            settings,
            read_only,
        }
    }

    /// Timeouts that end a call (the SDK's retries included) within `budget`.
    fn timeouts(&self, budget: Duration) -> config::Builder {
        within(self.settings.client.timeout, budget)
    }

    async fn begin_key(
        &self,
        key: &KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> Result<KeyState<String>, GuardError> {
        let now = wall_now();
        if self.read_only {
            let item = self.get(&key.pk, budget).await?;
            return Ok(match item.filter(|i| live(i, now)) {
                None => KeyState::Fresh,
                Some(item) => key_state(&item, key, now)?,
            });
        }
        let item = HashMap::from([
            ("pk".to_owned(), s(&key.pk)),
            ("state".to_owned(), s("pending")),
            ("requestHash".to_owned(), s(&key.request_hash)),
            ("leaseUntil".to_owned(), n(ms(lease_until))),
            (
                "expiresAt".to_owned(),
                n(secs_ceil(now + self.settings.idempotency_ttl)),
            ),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.settings.table)
            .set_item(Some(item))
            .condition_expression(KEY_CLAIM_CONDITION)
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":nowSecs", n(secs_floor(now)))
            .expression_attribute_values(":nowMs", n(ms(now)))
            .expression_attribute_values(":pending", s("pending"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .customize()
            .config_override(self.timeouts(budget))
            .send()
            .await;
        match result {
            Ok(_) => Ok(KeyState::Fresh),
            Err(SdkError::ServiceError(context))
                if context.err().is_conditional_check_failed_exception() =>
            {
                match self.winner(context.into_err(), &key.pk, budget).await? {
                    Some(item) => key_state(&item, key, now),
                    // Gone between the write and the read: its holder just released it.
                    None => Ok(KeyState::InProgress),
                }
            }
            Err(e) => Err(from_sdk("PutItem", e)),
        }
    }

    async fn finish_key(
        &self,
        key: &KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> Result<(), GuardError> {
        if self.read_only {
            return Ok(());
        }
        match answer {
            Some(json) => {
                let expires = secs_ceil(wall_now() + self.settings.idempotency_ttl);
                self.client
                    .update_item()
                    .table_name(&self.settings.table)
                    .key("pk", s(&key.pk))
                    .update_expression("SET #state = :done, answer = :answer, expiresAt = :expires")
                    .condition_expression(PENDING_CONDITION)
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":pending", s("pending"))
                    .expression_attribute_values(":done", s("done"))
                    .expression_attribute_values(":answer", s(&json))
                    .expression_attribute_values(":expires", n(expires))
                    .customize()
                    .config_override(self.timeouts(budget))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| from_sdk("UpdateItem", e))
            }
            None => self
                .client
                .delete_item()
                .table_name(&self.settings.table)
                .key("pk", s(&key.pk))
                .condition_expression(PENDING_CONDITION)
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pending", s("pending"))
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await
                .map(drop)
                .map_err(|e| from_sdk("DeleteItem", e)),
        }
    }

    async fn claim_user(
        &self,
        claim: &Claim,
        lease_until: SystemTime,
        budget: Duration,
    ) -> Result<UserState, GuardError> {
        let now = wall_now();
        if self.read_only {
            let item = self.get(&claim.pk, budget).await?;
            return Ok(match item.filter(|i| live(i, now)) {
                None => UserState::Free,
                Some(item) => claimed_state(&item, claim, now)?,
            });
        }
        // Until completed, a claim counts as a (possible) reset for the whole window: a crash
        // between the claim and the result never allows a second code inside it.
        let until = now + self.settings.cooldown.max(until_or_zero(lease_until, now));
        let item = HashMap::from([
            ("pk".to_owned(), s(&claim.pk)),
            ("state".to_owned(), s("claimed")),
            ("claimId".to_owned(), s(&claim.id)),
            ("claimedAt".to_owned(), n(ms(now))),
            ("leaseUntil".to_owned(), n(ms(lease_until))),
            ("expiresAt".to_owned(), n(secs_ceil(until))),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.settings.table)
            .set_item(Some(item))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(":nowSecs", n(secs_floor(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .customize()
            .config_override(self.timeouts(budget))
            .send()
            .await;
        match result {
            Ok(_) => Ok(UserState::Claimed(claim.clone())),
            Err(SdkError::ServiceError(context))
                if context.err().is_conditional_check_failed_exception() =>
            {
                match self.winner(context.into_err(), &claim.pk, budget).await? {
                    Some(item) => claimed_state(&item, claim, now),
                    None => Ok(UserState::InProgress),
                }
            }
            Err(e) => Err(from_sdk("PutItem", e)),
        }
    }

    async fn complete_claim(
        &self,
        claim: &Claim,
        completion: Completion,
        budget: Duration,
    ) -> Result<(), GuardError> {
        if self.read_only {
            return Ok(());
        }
        let cooldown = self.settings.cooldown;
        let now = wall_now();
        let update = |expression: &str, state: &str| {
            self.client
                .update_item()
                .table_name(&self.settings.table)
                .key("pk", s(&claim.pk))
                .update_expression(expression)
                .condition_expression(HOLDER_CONDITION)
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":claimId", s(&claim.id))
                .expression_attribute_values(":state", s(state))
                .expression_attribute_values(":now", n(ms(now)))
        };
        match completion {
            Completion::Reset if !cooldown.is_zero() => update(
                "SET #state = :state, resetAt = :now, leaseUntil = :now, expiresAt = :expires",
                "reset",
            )
            .expression_attribute_values(":expires", n(secs_ceil(now + cooldown)))
            .customize()
            .config_override(self.timeouts(budget))
            .send()
            .await
            .map(drop)
            .map_err(|e| from_sdk("UpdateItem", e)),
            // A possible reset: the window starts now, as for a reset.
            Completion::Unconfirmed if !cooldown.is_zero() => update(
                "SET #state = :state, leaseUntil = :now, expiresAt = :expires",
                "unconfirmed",
            )
            .expression_attribute_values(":expires", n(secs_ceil(now + cooldown)))
            .customize()
            .config_override(self.timeouts(budget))
            .send()
            .await
            .map(drop)
            .map_err(|e| from_sdk("UpdateItem", e)),
            // A reset whose sign-out is retried on the record's redelivery: remembered even
            // with the cooldown off, so that the redelivery never resets again.
            Completion::ResetSignOutPending => {
                let keep = cooldown.max(self.settings.idempotency_ttl);
                update(
                    "SET #state = :state, resetAt = :now, leaseUntil = :now, expiresAt = :expires, signOutPending = :record",
                    "reset",
                )
                .expression_attribute_values(":expires", n(secs_ceil(now + keep)))
                .expression_attribute_values(":record", s(claim_record(&claim.id)))
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await
                .map(drop)
                .map_err(|e| from_sdk("UpdateItem", e))
            }
            // A release, or a (possible) reset with the cooldown off: nothing to remember (the
            // record is final either way, so nothing sends the reset again by itself).
            Completion::Reset | Completion::Unconfirmed | Completion::Release => self
                .client
                .delete_item()
                .table_name(&self.settings.table)
                .key("pk", s(&claim.pk))
                .condition_expression(HOLDER_CONDITION)
                .expression_attribute_values(":claimId", s(&claim.id))
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await
                .map(drop)
                .map_err(|e| from_sdk("DeleteItem", e)),
        }
    }

    async fn spend_budget(
        &self,
        scope: &BudgetScope,
        budget: Duration,
    ) -> Result<BudgetTurn, GuardError> {
        let now = wall_now();
        let limit = u64::from(scope.resets);
        let mut window = scope.window_of(now);
        let expires = |window: u64| secs_ceil(scope.window_start(window + 2));
        if self.read_only {
            let item = self.get(&scope.pk, budget).await?;
            let (before, used) = budget_counts(item.as_ref(), window);
            return Ok(if before + used < limit {
                BudgetTurn::Spent { window }
            } else {
                BudgetTurn::Exhausted {
                    until: scope.admits_again(window, used),
                }
            });
        }
        for _ in 0..BUDGET_ROUNDS {
            let spent = self
                .client
                .update_item()
                .table_name(&self.settings.table)
                .key("pk", s(&scope.pk))
                .update_expression("SET #used = #used + :one, #total = #total + :one")
                .condition_expression(BUDGET_SPEND_CONDITION)
                .expression_attribute_names("#window", "window")
                .expression_attribute_names("#used", "used")
                .expression_attribute_names("#total", "total")
                .expression_attribute_values(":window", n(window))
                .expression_attribute_values(":limit", n(limit))
                .expression_attribute_values(":one", n(1))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await;
            let old = match spent {
                Ok(_) => return Ok(BudgetTurn::Spent { window }),
                Err(SdkError::ServiceError(context))
                    if context.err().is_conditional_check_failed_exception() =>
                {
                    match context.into_err() {
                        UpdateItemError::ConditionalCheckFailedException(e) if e.item.is_some() => {
                            e.item
                        }
                        _ => self.get(&scope.pk, budget).await?,
                    }
                }
                Err(e) => return Err(from_sdk("UpdateItem", e)),
            };
            // Not spent: no item yet, the limit, or an older window to replace.
            let (condition, before, old_window, old_used) = match &old {
                None => (BUDGET_START_CONDITION, 0, 0, 0),
                Some(item) => {
                    let old_window = number(item, "window").unwrap_or(0);
                    let old_used = number(item, "used").unwrap_or(0);
                    if old_window > window {
                        // Another instance's clock is a window ahead: count in its window.
                        window = old_window;
                        continue;
                    }
                    if old_window == window {
                        return Ok(BudgetTurn::Exhausted {
                            until: scope.admits_again(window, old_used),
                        });
                    }
                    let before = if old_window + 1 == window {
                        old_used
                    } else {
                        0
                    };
                    if before >= limit {
                        return Ok(BudgetTurn::Exhausted {
                            until: scope.admits_again(window, 0),
                        });
                    }
                    (BUDGET_ROLL_CONDITION, before, old_window, old_used)
                }
            };
            let item = HashMap::from([
                ("pk".to_owned(), s(&scope.pk)),
                ("window".to_owned(), n(window)),
                ("used".to_owned(), n(1)),
                ("before".to_owned(), n(before)),
                ("total".to_owned(), n(before + 1)),
                ("expiresAt".to_owned(), n(expires(window))),
            ]);
            let mut put = self
                .client
                .put_item()
                .table_name(&self.settings.table)
                .set_item(Some(item))
                .condition_expression(condition);
            if old.is_some() {
                put = put
                    .expression_attribute_names("#window", "window")
                    .expression_attribute_names("#used", "used")
                    .expression_attribute_values(":oldWindow", n(old_window))
                    .expression_attribute_values(":oldUsed", n(old_used));
            }
            match put
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await
            {
                Ok(_) => return Ok(BudgetTurn::Spent { window }),
                // Another request started the window first: spend in it.
                Err(SdkError::ServiceError(context))
                    if context.err().is_conditional_check_failed_exception() => {}
                Err(e) => return Err(from_sdk("PutItem", e)),
            }
        }
        Err(GuardError::new(
            GuardErrorKind::Throttled,
            "UpdateItem",
            "the caller's budget item changed under every attempt to spend it",
        ))
    }

    async fn refund_budget(
        &self,
        scope: &BudgetScope,
        window: u64,
        budget: Duration,
    ) -> Result<(), GuardError> {
        if self.read_only {
            return Ok(());
        }
        // In its window (`used`), or once the next has begun (`before`); later, it no longer
        // counts.
        for (count, in_window) in [("used", window), ("before", window + 1)] {
            let result = self
                .client
                .update_item()
                .table_name(&self.settings.table)
                .key("pk", s(&scope.pk))
                .update_expression("SET #count = #count - :one, #total = #total - :one")
                .condition_expression(BUDGET_REFUND_CONDITION)
                .expression_attribute_names("#window", "window")
                .expression_attribute_names("#count", count)
                .expression_attribute_names("#total", "total")
                .expression_attribute_values(":window", n(in_window))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .customize()
                .config_override(self.timeouts(budget))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(context))
                    if context.err().is_conditional_check_failed_exception() => {}
                Err(e) => return Err(from_sdk("UpdateItem", e)),
            }
        }
        Ok(())
    }

    /// The item that made a conditional `PutItem` fail: returned with the failure, or (where
    /// the table does not return it) read with a consistent `GetItem`. `None`: gone meanwhile.
    async fn winner(
        &self,
        failure: PutItemError,
        pk: &str,
        budget: Duration,
    ) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
        match failure {
            PutItemError::ConditionalCheckFailedException(e) if e.item.is_some() => Ok(e.item),
            _ => self.get(pk, budget).await,
        }
    }

    async fn get(
        &self,
        pk: &str,
        budget: Duration,
    ) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
        consistent_get(
            &self.client,
            &self.settings.table,
            pk,
            self.timeouts(budget),
        )
        .await
    }
}

/// Timeouts that end a call to the table (the SDK's retries included) within `budget`, each
/// attempt within `attempt`.
pub(super) fn within(attempt: Duration, budget: Duration) -> config::Builder {
    config::Builder::new().timeout_config(timeouts_within(attempt, budget))
}

/// The item `pk` of `table`, read with a consistent `GetItem` (the item that won a race, where
/// the failed condition did not return it).
pub(super) async fn consistent_get(
    client: &Client,
    table: &str,
    pk: &str,
    timeouts: config::Builder,
) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
    let output = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .customize()
        .config_override(timeouts)
        .send()
        .await
        .map_err(|e| from_sdk("GetItem", e))?;
    Ok(output.item)
}

impl GuardStore for DynamoGuard {
    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>> {
        Box::pin(self.begin_key(key, lease_until, budget))
    }

    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.finish_key(key, answer, budget))
    }

    fn claim<'a>(
        &'a self,
        claim: &'a Claim,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        Box::pin(self.claim_user(claim, lease_until, budget))
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.complete_claim(claim, completion, budget))
    }

    fn spend<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        Box::pin(self.spend_budget(scope, budget))
    }

    fn refund<'a>(
        &'a self,
        scope: &'a BudgetScope,
        window: u64,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.refund_budget(scope, window, budget))
    }
}

/// `(before, used)` of a budget item as seen from `window`.
fn budget_counts(item: Option<&HashMap<String, AttributeValue>>, window: u64) -> (u64, u64) {
    let Some(item) = item else { return (0, 0) };
    let old_window = number(item, "window").unwrap_or(0);
    let used = number(item, "used").unwrap_or(0);
    let before = number(item, "before").unwrap_or(0);
    if old_window == window {
        (before, used)
    } else if old_window + 1 == window {
        (used, 0)
    } else if old_window > window {
        // A clock a window ahead: as full as its window.
        (before, used)
    } else {
        (0, 0)
    }
}

/// Reads an idempotency key item that stands in the way.
fn key_state(
    item: &HashMap<String, AttributeValue>,
    key: &KeyRef,
    now: SystemTime,
) -> Result<KeyState<String>, GuardError> {
    if text(item, "requestHash") != Some(key.request_hash.as_str()) {
        return Ok(KeyState::Reused);
    }
    match text(item, "state") {
        Some("done") => {
            let answer = text(item, "answer")
                .ok_or_else(|| malformed("GetItem", "a done key item has no answer"))?;
            Ok(KeyState::Replay(answer.to_owned()))
        }
        // Pending: held by a live invocation (a dead one's key is taken over by the condition;
        // in dry run, a dead holder's key is simply free).
        _ if number(item, "leaseUntil").is_some_and(|lease| lease <= ms(now)) => {
            Ok(KeyState::Fresh)
        }
        _ => Ok(KeyState::InProgress),
    }
}

/// The record id a claim id was made for (`<record id>/<ms>/<counter>`).
fn claim_record(claim_id: &str) -> &str {
    claim_id.rsplitn(3, '/').nth(2).unwrap_or(claim_id)
}

/// `SignOutPending` when the item in the way is this record's own reset whose sign-out failed.
fn pending_sign_out(item: &HashMap<String, AttributeValue>, claim: &Claim) -> Option<UserState> {
    let record = claim_record(&claim.id);
    (text(item, "state") == Some("reset") && text(item, "signOutPending") == Some(record)).then(
        || UserState::SignOutPending {
            reset_at: number(item, "resetAt")
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                .unwrap_or_else(wall_now),
        },
    )
}

/// The user item that stands in the way of `claim`: this record's own reset whose sign-out
/// failed ([`pending_sign_out`]), or what [`user_state`] reads.
fn claimed_state(
    item: &HashMap<String, AttributeValue>,
    claim: &Claim,
    now: SystemTime,
) -> Result<UserState, GuardError> {
    pending_sign_out(item, claim).map_or_else(|| user_state(item, now), Ok)
}

/// Reads a user claim item that stands in the way.
fn user_state(
    item: &HashMap<String, AttributeValue>,
    now: SystemTime,
) -> Result<UserState, GuardError> {
    let until = number(item, "expiresAt")
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .ok_or_else(|| malformed("GetItem", "a user item has no expiresAt"))?;
    let at = |name| number(item, name).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    match text(item, "state") {
        Some("reset") => Ok(UserState::RecentlyReset {
            reset_at: at("resetAt").unwrap_or(now),
            until,
            confirmed: true,
        }),
        Some("unconfirmed") => Ok(UserState::RecentlyReset {
            reset_at: at("claimedAt").unwrap_or(now),
            until,
            confirmed: false,
        }),
        _ => {
            let lease_over = number(item, "leaseUntil").is_none_or(|lease| lease <= ms(now));
            if lease_over {
                // Abandoned by a crash or a timeout: it may have reset, so it counts as a
                // possible reset.
                Ok(UserState::RecentlyReset {
                    reset_at: at("claimedAt").unwrap_or(now),
                    until,
                    confirmed: false,
                })
            } else {
                Ok(UserState::InProgress)
            }
        }
    }
}

fn live(item: &HashMap<String, AttributeValue>, now: SystemTime) -> bool {
    number(item, "expiresAt").is_some_and(|expires| expires > secs_floor(now))
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn until_or_zero(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Applies retries and timeouts to a DynamoDB client configuration.
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_length_prefixed() {
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
        assert_eq!(sha256_hex(&[b"x"]).len(), 64);
    }

    #[test]
    fn whole_seconds_round_the_right_way() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(secs_floor(t), 1);
        assert_eq!(secs_ceil(t), 2);
        assert_eq!(secs_ceil(UNIX_EPOCH + Duration::from_secs(3)), 3);
    }

    #[test]
    fn an_abandoned_claim_counts_as_a_reset_and_a_live_one_is_in_progress() {
        let now = SystemTime::now();
        let item = |lease: SystemTime| {
            HashMap::from([
                ("state".to_owned(), s("claimed")),
                ("claimedAt".to_owned(), n(ms(now) - 10_000)),
                ("leaseUntil".to_owned(), n(ms(lease))),
                ("expiresAt".to_owned(), n(secs_ceil(now) + 290)),
            ])
        };
        assert!(matches!(
            user_state(&item(now - Duration::from_secs(1)), now),
            Ok(UserState::RecentlyReset { .. })
        ));
        assert_eq!(
            user_state(&item(now + Duration::from_secs(5)), now).ok(),
            Some(UserState::InProgress)
        );
    }
}
