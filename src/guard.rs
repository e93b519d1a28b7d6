//! The port to the guard's DynamoDB table: idempotency keys and per-user reset claims.
//!
//! One table, one string partition key `pk`, TTL on the number attribute `expiresAt` (epoch
//! seconds). Two kinds of item live in it:
//!
//! | item | `pk` | attributes |
//! |---|---|---|
//! | idempotency key | `key#<sha256(caller, key)>` | `state` (`pending` or `done`), `requestHash`, `leaseUntil` (ms), `answer` (JSON, when done), `expiresAt` |
//! | user claim | `user#<pool>#<canonical username>` | `state` (`claimed` or `reset`), `claimId`, `claimedAt` (ms), `leaseUntil` (ms), `resetAt` (ms, when reset), `expiresAt` |
//!
//! Every decision is one conditional `PutItem` that succeeds only where no live item exists
//! (absent, or past its `expiresAt`: DynamoDB's TTL deletes lazily, so the condition checks it
//! too). A failed condition is never an error: the item that won is read back (from the
//! failure itself, or with a consistent `GetItem`) and says why. DynamoDB's own failures are
//! [`GuardError`]s, which the pipeline reports as RETRY `guard-unavailable`.
//!
//! Items never hold `ClientMetadata`: a request is compared through `requestHash`, a SHA-256 of
//! its pool, username and metadata.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::{Client, config};
use sha2::{Digest, Sha256};

use crate::deadline::Deadline;
use crate::directory::ClientSettings;
use crate::outcome::Answer;
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

/// Why the guard could not answer: every kind is RETRY `guard-unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardErrorKind {
    /// Throttling or provisioned-throughput errors.
    Throttled,
    /// Timeouts and connection failures.
    Unavailable,
    /// Access denied, missing table, bad credentials, a malformed item.
    Misconfigured,
    /// DynamoDB's internal errors and anything not named.
    Upstream,
    /// No time left before `deadline − DEADLINE_MARGIN_MS` (the record is RETRY `deadline`).
    Deadline,
}

/// A classified DynamoDB failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("guard {operation} failed ({kind:?})")]
pub struct GuardError {
    pub kind: GuardErrorKind,
    /// The DynamoDB operation that failed.
    pub operation: &'static str,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl GuardError {
    fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let kind = match &error {
            SdkError::ServiceError(context) => kind_from_code(context.err().code()),
            SdkError::TimeoutError(_) => GuardErrorKind::Unavailable,
            SdkError::DispatchFailure(failure) if failure.is_user() => {
                GuardErrorKind::Misconfigured
            }
            SdkError::DispatchFailure(_) => GuardErrorKind::Unavailable,
            SdkError::ConstructionFailure(_) => GuardErrorKind::Misconfigured,
            _ => GuardErrorKind::Upstream,
        };
        GuardError {
            kind,
            operation,
            source: Box::new(error),
        }
    }

    fn malformed(operation: &'static str, what: String) -> Self {
        GuardError {
            kind: GuardErrorKind::Misconfigured,
            operation,
            source: what.into(),
        }
    }
}

/// Classification of DynamoDB's error codes (the SDK's retries have already run).
fn kind_from_code(code: Option<&str>) -> GuardErrorKind {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "ThrottlingException"
            | "Throttling",
        ) => GuardErrorKind::Throttled,
        Some(
            "ResourceNotFoundException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "ValidationException"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException",
        ) => GuardErrorKind::Misconfigured,
        Some("ServiceUnavailable" | "ServiceUnavailableException") => GuardErrorKind::Unavailable,
        _ => GuardErrorKind::Upstream,
    }
}

/// An idempotency key as the guard stores it: scoped by caller, bound to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The key as the caller gave it (for the audit line).
    pub key: String,
    pk: String,
    request_hash: String,
}

impl KeyRef {
    /// The key of `caller` (its stable description) for `request`.
    pub fn new(caller: &str, key: &str, request: &ResetRequest) -> KeyRef {
        let pk = format!("key#{}", sha256_hex(&[caller.as_bytes(), key.as_bytes()]));
        // JSON of the three compared fields: unambiguous, and ClientMetadata is a sorted map.
        let compared = serde_json::json!([
            request.user_pool_id.as_str(),
            request.username.as_str(),
            request.client_metadata.entries(),
        ]);
        KeyRef {
            key: key.to_owned(),
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

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// First use (or a retry after a RETRY): the request runs, and this invocation holds the key.
    Fresh,
    /// A final answer was given before: give it again.
    Replay(Answer),
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
    /// Reset (or possibly reset) at `reset_at`; the window ends at `until`.
    RecentlyReset {
        reset_at: SystemTime,
        until: SystemTime,
    },
    /// Another request is between its claim and its result.
    InProgress,
}

/// A held user claim, to complete or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pk: String,
    id: String,
}

/// How a claimed reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The reset happened: the cooldown window starts now.
    Reset,
    /// Cognito refused, or failed in a way that did not reset: others may try.
    Release,
    /// Unknown whether the reset happened (the answer was lost): keep the claim, which then
    /// counts as a reset for the cooldown.
    Keep,
}

/// The guard: one DynamoDB client and the settings.
#[derive(Debug, Clone)]
pub struct Guard {
    client: Client,
    settings: GuardSettings,
    /// `DRY_RUN`: read, never write.
    read_only: bool,
    /// `DEADLINE_MARGIN_MS`: every call ends before `deadline − margin`.
    margin: Duration,
}

/// Makes claim ids unique within the process; with the time and the record's id, unique.
static CLAIMS: AtomicU64 = AtomicU64::new(0);

impl Guard {
    /// Wraps a configured client (see [`configure`]). `margin` is `DEADLINE_MARGIN_MS`.
    pub fn new(
        client: Client,
        settings: GuardSettings,
        read_only: bool,
        margin: Duration,
    ) -> Guard {
        Guard {
            client,
            settings,
            read_only,
            margin,
        }
    }

    /// Timeouts that end a call before `deadline − margin`, or `Deadline` when no time is left.
    fn timeouts(
        &self,
        deadline: Deadline,
        operation: &'static str,
    ) -> Result<config::Builder, GuardError> {
        let budget = deadline.remaining().saturating_sub(self.margin);
        if budget.is_zero() {
            return Err(GuardError {
                kind: GuardErrorKind::Deadline,
                operation,
                source: "no time left before the invocation's deadline".into(),
            });
        }
        Ok(
            config::Builder::new().timeout_config(crate::directory::timeouts_within(
                self.settings.client.timeout,
                budget,
            )),
        )
    }

    /// The cooldown window.
    pub fn cooldown(&self) -> Duration {
        self.settings.cooldown
    }

    /// Takes an idempotency key for this invocation, or says why not. A pending key may be taken
    /// over once its holder's deadline has passed.
    pub async fn begin(&self, key: &KeyRef, deadline: Deadline) -> Result<KeyState, GuardError> {
        let now = SystemTime::now();
        let lease_until = deadline.wall_clock();
        if self.read_only {
            let item = self.get(&key.pk, deadline).await?;
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
            .config_override(self.timeouts(deadline, "PutItem")?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(KeyState::Fresh),
            Err(SdkError::ServiceError(context))
                if context.err().is_conditional_check_failed_exception() =>
            {
                match self.winner(context.into_err(), &key.pk, deadline).await? {
                    Some(item) => key_state(&item, key, now),
                    // Gone between the write and the read: its holder just released it.
                    None => Ok(KeyState::InProgress),
                }
            }
            Err(e) => Err(GuardError::from_sdk("PutItem", e)),
        }
    }

    /// Records a key's final answer (replayed until the TTL ends), or releases the key
    /// (`None`: a RETRY is not kept). A failure here is logged: the answer already stands.
    pub async fn finish(&self, key: &KeyRef, answer: Option<&Answer>, deadline: Deadline) {
        if self.read_only {
            return;
        }
        let timeouts = match self.timeouts(deadline, "UpdateItem") {
            Ok(timeouts) => timeouts,
            Err(error) => return self.warn_unfinished_key(key, &error),
        };
        let result = match answer {
            Some(answer) => {
                let Ok(json) = serde_json::to_string(answer) else {
                    return;
                };
                let expires = secs_ceil(SystemTime::now() + self.settings.idempotency_ttl);
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
                    .config_override(timeouts)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| GuardError::from_sdk("UpdateItem", e))
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
                .config_override(timeouts)
                .send()
                .await
                .map(drop)
                .map_err(|e| GuardError::from_sdk("DeleteItem", e)),
        };
        if let Err(error) = result {
            self.warn_unfinished_key(key, &error);
        }
    }

    fn warn_unfinished_key(&self, key: &KeyRef, error: &GuardError) {
        tracing::warn!(
            idempotency_key = %key.key,
            error.cause_chain = %crate::audit::cause_chain(error),
            "could not record the idempotency key's result; a retry with this key may run again (the user claim still stops a second reset)"
        );
    }

    /// Claims `username` of `pool` for a reset, or says why not.
    pub async fn claim(
        &self,
        pool: &str,
        username: &str,
        record_id: &str,
        deadline: Deadline,
    ) -> Result<UserState, GuardError> {
        let pk = format!("user#{pool}#{username}");
        let now = SystemTime::now();
        let lease_until = deadline.wall_clock();
        if self.read_only {
            let item = self.get(&pk, deadline).await?;
            return Ok(match item.filter(|i| live(i, now)) {
                None => UserState::Free,
                Some(item) => user_state(&item, now)?,
            });
        }
        let id = format!(
            "{record_id}/{}/{}",
            ms(now),
            CLAIMS.fetch_add(1, Ordering::Relaxed)
        );
        // Until completed, a claim counts as a reset for the whole window: a crash between the
        // claim and the result never allows a second code inside it.
        let until = now + self.settings.cooldown.max(until_or_zero(lease_until, now));
        let item = HashMap::from([
            ("pk".to_owned(), s(&pk)),
            ("state".to_owned(), s("claimed")),
            ("claimId".to_owned(), s(&id)),
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
            .config_override(self.timeouts(deadline, "PutItem")?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(UserState::Claimed(Claim { pk, id })),
            Err(SdkError::ServiceError(context))
                if context.err().is_conditional_check_failed_exception() =>
            {
                match self.winner(context.into_err(), &pk, deadline).await? {
                    Some(item) => user_state(&item, now),
                    None => Ok(UserState::InProgress),
                }
            }
            Err(e) => {
                let error = GuardError::from_sdk("PutItem", e);
                // The write may have landed before the failure (a timeout): take it back, so
                // that a claim nobody holds does not block the user.
                self.complete(&Claim { pk, id }, Completion::Release, deadline)
                    .await;
                Err(error)
            }
        }
    }

    /// Ends a held claim. A failure is logged: an unfinished claim still counts as a reset
    /// until its window ends, so it errs on the side of no second code.
    pub async fn complete(&self, claim: &Claim, completion: Completion, deadline: Deadline) {
        let cooldown = self.settings.cooldown;
        if completion == Completion::Keep {
            return;
        }
        let timeouts = match self.timeouts(deadline, "UpdateItem") {
            Ok(timeouts) => timeouts,
            Err(error) => return self.warn_unfinished_claim(completion, &error),
        };
        let result = match completion {
            Completion::Keep => return,
            Completion::Reset if !cooldown.is_zero() => {
                let now = SystemTime::now();
                self.client
                    .update_item()
                    .table_name(&self.settings.table)
                    .key("pk", s(&claim.pk))
                    .update_expression(
                        "SET #state = :reset, resetAt = :now, leaseUntil = :now, expiresAt = :expires",
                    )
                    .condition_expression(HOLDER_CONDITION)
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":claimId", s(&claim.id))
                    .expression_attribute_values(":reset", s("reset"))
                    .expression_attribute_values(":now", n(ms(now)))
                    .expression_attribute_values(":expires", n(secs_ceil(now + cooldown)))
                    .customize()
                    .config_override(timeouts)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| GuardError::from_sdk("UpdateItem", e))
            }
            // A release, or a reset with the cooldown off: nothing to remember.
            Completion::Reset | Completion::Release => self
                .client
                .delete_item()
                .table_name(&self.settings.table)
                .key("pk", s(&claim.pk))
                .condition_expression(HOLDER_CONDITION)
                .expression_attribute_values(":claimId", s(&claim.id))
                .customize()
                .config_override(timeouts)
                .send()
                .await
                .map(drop)
                .map_err(|e| GuardError::from_sdk("DeleteItem", e)),
        };
        if let Err(error) = result {
            self.warn_unfinished_claim(completion, &error);
        }
    }

    fn warn_unfinished_claim(&self, completion: Completion, error: &GuardError) {
        tracing::warn!(
            completion = ?completion,
            error.cause_chain = %crate::audit::cause_chain(error),
            "could not complete the user claim; it counts as a reset until its window ends"
        );
    }

    /// The item that made a conditional `PutItem` fail: returned with the failure, or (where
    /// the table does not return it) read with a consistent `GetItem`. `None`: gone meanwhile.
    async fn winner(
        &self,
        failure: PutItemError,
        pk: &str,
        deadline: Deadline,
    ) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
        match failure {
            PutItemError::ConditionalCheckFailedException(e) if e.item.is_some() => Ok(e.item),
            _ => self.get(pk, deadline).await,
        }
    }

    async fn get(
        &self,
        pk: &str,
        deadline: Deadline,
    ) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.settings.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .customize()
            .config_override(self.timeouts(deadline, "GetItem")?)
            .send()
            .await
            .map_err(|e| GuardError::from_sdk("GetItem", e))?;
        Ok(output.item)
    }
}

/// Reads an idempotency key item that stands in the way.
fn key_state(
    item: &HashMap<String, AttributeValue>,
    key: &KeyRef,
    now: SystemTime,
) -> Result<KeyState, GuardError> {
    if text(item, "requestHash") != Some(key.request_hash.as_str()) {
        return Ok(KeyState::Reused);
    }
    match text(item, "state") {
        Some("done") => {
            let answer = text(item, "answer")
                .and_then(|json| serde_json::from_str(json).ok())
                .ok_or_else(|| {
                    GuardError::malformed(
                        "GetItem",
                        "a done key item has no readable answer".into(),
                    )
                })?;
            Ok(KeyState::Replay(answer))
        }
        // Pending: held by a live invocation (a dead one's key is taken over by the condition;
        // in dry run, a dead holder's key is simply free).
        _ if number(item, "leaseUntil").is_some_and(|lease| lease <= ms(now)) => {
            Ok(KeyState::Fresh)
        }
        _ => Ok(KeyState::InProgress),
    }
}

/// Reads a user claim item that stands in the way.
fn user_state(
    item: &HashMap<String, AttributeValue>,
    now: SystemTime,
) -> Result<UserState, GuardError> {
    let until = number(item, "expiresAt")
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .ok_or_else(|| GuardError::malformed("GetItem", "a user item has no expiresAt".into()))?;
    let at = |name| number(item, name).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    match text(item, "state") {
        Some("reset") => Ok(UserState::RecentlyReset {
            reset_at: at("resetAt").unwrap_or(now),
            until,
        }),
        _ => {
            let lease_over = number(item, "leaseUntil").is_none_or(|lease| lease <= ms(now));
            if lease_over {
                // Abandoned by a crash or timeout, or kept because the reset's answer was lost:
                // it may have reset, so it counts as one.
                Ok(UserState::RecentlyReset {
                    reset_at: at("claimedAt").unwrap_or(now),
                    until,
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

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

fn ms(t: SystemTime) -> u64 {
    since_epoch(t).as_millis() as u64
}

fn secs_floor(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

fn secs_ceil(t: SystemTime) -> u64 {
    let d = since_epoch(t);
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
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
