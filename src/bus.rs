//! The port to Amazon EventBridge: one outcome event per finished record, so that whoever asked
//! (a ticketing system, a portal) can learn what happened.
//!
//! The pipeline builds an [`OutcomeEvent`] for every record that reached a final outcome
//! (`RESET`, `WOULD_RESET`, `REJECTED`, or `GAVE_UP` for a RETRY on an SQS record's last
//! receive) and hands them all to [`Bus::publish_before`] (or [`Bus::publish`]) after the
//! records finish. Events go out in `PutEvents` calls of at most 10 entries and under the
//! 256 KB request limit, with detail type [`DETAIL_TYPE`] and the configured source
//! (`EVENT_SOURCE`, default [`DEFAULT_SOURCE`]).
//!
//! Publishing never fails the invocation and never changes an outcome: it returns a
//! [`Delivery`] counting what EventBridge did not take (entries it reported as failed, every
//! entry of a call that failed after the SDK's retries, events not sent before the deadline)
//! and logs each failure. Entries EventBridge reports as failed are not re-sent. The event
//! never carries the request's `ClientMetadata`: [`OutcomeEvent`] has no field for it.

use std::error::Error as StdError;
use std::time::{Instant, SystemTime};

use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::{Client, config};
use serde::{Serialize, Serializer};

use crate::directory::ClientSettings;
use crate::request::ResetRequest;

/// The events' `detail-type`.
pub const DETAIL_TYPE: &str = "Password Reset Outcome";
/// Default for `EVENT_SOURCE`.
pub const DEFAULT_SOURCE: &str = "cognito-reset";
/// `PutEvents` takes at most 10 entries per call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// `PutEvents` requests are at most 256 KB, counted as EventBridge does (see [`entry_size`]).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The final outcome an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventOutcome {
    /// The password was reset.
    Reset,
    /// Dry run: the password would have been reset.
    WouldReset,
    /// Refused for good (policy, unknown user, invalid request, ...).
    Rejected,
    /// A RETRY on an SQS record's last receive: its next stop is the dead-letter queue.
    GaveUp,
}

impl EventOutcome {
    /// `RESET`, `WOULD_RESET`, `REJECTED` or `GAVE_UP`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Reset => "RESET",
            EventOutcome::WouldReset => "WOULD_RESET",
            EventOutcome::Rejected => "REJECTED",
            EventOutcome::GaveUp => "GAVE_UP",
        }
    }

    /// The event for a record's outcome as the audit line spells it (`RESET`, `WOULD_RESET`,
    /// `REJECTED`, `RETRY`), or `None` when it is not final: a RETRY is final (`GAVE_UP`) only
    /// on the record's last receive (see [`is_last_receive`]).
    pub fn for_record(outcome: &str, last_receive: bool) -> Option<EventOutcome> {
        match outcome {
            "RESET" => Some(EventOutcome::Reset),
            "WOULD_RESET" => Some(EventOutcome::WouldReset),
            "REJECTED" => Some(EventOutcome::Rejected),
            "RETRY" if last_receive => Some(EventOutcome::GaveUp),
            _ => None,
        }
    }
}

/// Whether an SQS record is on its last receive: its `ApproximateReceiveCount` attribute has
/// reached `MAX_RECEIVE_COUNT` (the queue's redrive policy). Without either, it is not (an HTTP
/// record, or no dead-letter queue: the message will be received again).
pub fn is_last_receive(receive_count: Option<&str>, max_receive_count: Option<u32>) -> bool {
    match (
        receive_count.and_then(|c| c.trim().parse::<u32>().ok()),
        max_receive_count,
    ) {
        (Some(count), Some(max)) => count >= max,
        _ => false,
    }
}

/// The `detail` of one outcome event. Absent values are left out of the JSON.
///
/// There is deliberately no field for `ClientMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeEvent {
    pub outcome: EventOutcome,
    /// The outcome code (`denied-user`, `throttled`, ...); none for RESET and WOULD_RESET.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_pool_id: Option<String>,
    /// The username as the request gave it (username, alias or `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_username: Option<String>,
    /// Cognito's canonical username, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_username: Option<String>,
    /// The caller's identities as the audit line describes them.
    pub caller: String,
    /// The policy rule that allowed the reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The integration: `http-api`, `sqs`, ... (see `record::Source`).
    pub source: String,
    /// The request id (HTTP) or message id (SQS).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The request's `Reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version of the policy that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// When the record finished (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::outcome::rfc3339(*time))
}

impl OutcomeEvent {
    /// An event with only the required fields; set the others directly or with
    /// [`OutcomeEvent::with_request`].
    pub fn new(
        outcome: EventOutcome,
        source: &str,
        id: &str,
        caller: &str,
        time: SystemTime,
    ) -> OutcomeEvent {
        OutcomeEvent {
            outcome,
            code: None,
            user_pool_id: None,
            requested_username: None,
            canonical_username: None,
            caller: caller.to_owned(),
            rule: None,
            source: source.to_owned(),
            id: id.to_owned(),
            idempotency_key: None,
            reason: None,
            policy_version: None,
            time,
        }
    }

    /// Copies the pool, the requested username and the reason of `request` (never its
    /// `ClientMetadata`).
    pub fn with_request(mut self, request: &ResetRequest) -> OutcomeEvent {
        self.user_pool_id = Some(request.user_pool_id.as_str().to_owned());
        self.requested_username = Some(request.username.as_str().to_owned());
        self.reason = request.reason.clone();
        self
    }

    /// The `detail` JSON.
    pub fn detail(&self) -> String {
        // Plain strings and a timestamp: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The size EventBridge counts for an entry: 14 bytes for the time, plus the UTF-8 bytes of the
/// source, detail type, detail and resources.
pub fn entry_size(entry: &PutEventsRequestEntry) -> usize {
    let text = |s: Option<&str>| s.map_or(0, str::len);
    14 + text(entry.source())
        + text(entry.detail_type())
        + text(entry.detail())
        + entry.resources().iter().map(String::len).sum::<usize>()
}

/// What a publish achieved. Every event is counted exactly once among `delivered`,
/// `failed_entries`, `in_failed_calls`, `too_large` and `unsent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Events EventBridge accepted.
    pub delivered: usize,
    /// Entries EventBridge reported as failed (`FailedEntryCount`, per-entry `ErrorCode`).
    pub failed_entries: usize,
    /// `PutEvents` calls that failed (after the SDK's retries).
    pub failed_calls: usize,
    /// Events in those failed calls.
    pub in_failed_calls: usize,
    /// Events too large for a `PutEvents` request on their own: never sent.
    pub too_large: usize,
    /// Events not sent because the deadline of [`Bus::publish_before`] came first.
    pub unsent: usize,
}

impl Delivery {
    /// Events that did not reach the bus (the `EventsNotDelivered` metric).
    pub fn not_delivered(&self) -> usize {
        self.failed_entries + self.in_failed_calls + self.too_large + self.unsent
    }
}

/// What an EventBridge failure means for operators (the events are lost either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusErrorKind {
    /// Throttling or the account's PutEvents quota.
    Throttled,
    /// Timeouts and connection failures.
    Unavailable,
    /// Access denied, no such bus, bad credentials.
    Misconfigured,
    /// EventBridge's internal errors and anything not named.
    Upstream,
}

impl BusErrorKind {
    /// `throttled`, `unavailable`, `misconfigured` or `upstream-error`.
    pub fn code(self) -> &'static str {
        match self {
            BusErrorKind::Throttled => "throttled",
            BusErrorKind::Unavailable => "unavailable",
            BusErrorKind::Misconfigured => "misconfigured",
            BusErrorKind::Upstream => "upstream-error",
        }
    }
}

/// A classified `PutEvents` failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("eventbridge PutEvents failed ({})", self.kind.code())]
pub struct BusError {
    pub kind: BusErrorKind,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl BusError {
    fn from_sdk<E, R>(error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let kind = match &error {
            SdkError::ServiceError(context) => kind_from_code(context.err().code()),
            SdkError::TimeoutError(_) => BusErrorKind::Unavailable,
            SdkError::DispatchFailure(failure) if failure.is_user() => BusErrorKind::Misconfigured,
            SdkError::DispatchFailure(_) => BusErrorKind::Unavailable,
            SdkError::ConstructionFailure(_) => BusErrorKind::Misconfigured,
            _ => BusErrorKind::Upstream,
        };
        BusError {
            kind,
            source: Box::new(error),
        }
    }
}

/// Classification of EventBridge's error codes, for calls and for failed entries alike.
pub fn kind_from_code(code: Option<&str>) -> BusErrorKind {
    match code {
        Some("ThrottlingException" | "Throttling" | "LimitExceededException") => {
            BusErrorKind::Throttled
        }
        Some(
            "AccessDeniedException"
            | "AccessDenied"
            | "NotAuthorizedForSourceException"
            | "ResourceNotFoundException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ValidationException"
            | "InvalidArgument"
            | "MalformedDetail"
            | "MalformedQueryException",
        ) => BusErrorKind::Misconfigured,
        Some("ServiceUnavailable" | "ServiceUnavailableException") => BusErrorKind::Unavailable,
        _ => BusErrorKind::Upstream,
    }
}

/// Publishes outcome events to one bus, over one SDK client built at start-up.
#[derive(Debug, Clone)]
pub struct Bus {
    client: Client,
    bus: String,
    source: String,
}

impl Bus {
    /// `bus` is `EVENT_BUS` (a name or ARN), `source` is `EVENT_SOURCE`.
    pub fn new(client: Client, bus: &str, source: &str) -> Bus {
        Bus {
            client,
            bus: bus.to_owned(),
            source: source.to_owned(),
        }
    }

    /// The `PutEvents` entry of one event.
    pub fn entry(&self, event: &OutcomeEvent) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(&self.source)
            .detail_type(DETAIL_TYPE)
            .detail(event.detail())
            .time(aws_smithy_types::DateTime::from(event.time))
            .build()
    }

    /// Sends every event, in order, in calls of at most 10 entries and 256 KB. Never fails:
    /// what did not arrive is counted in the returned [`Delivery`] and logged.
    pub async fn publish(&self, events: &[OutcomeEvent]) -> Delivery {
        self.publish_until(events, None).await
    }

    /// Like [`Bus::publish`], but stops at `deadline` (leave room for the invocation's
    /// response): a call still running then is abandoned (counted as a failed call), and
    /// the events not sent yet are counted as `unsent`.
    pub async fn publish_before(&self, events: &[OutcomeEvent], deadline: Instant) -> Delivery {
        self.publish_until(events, Some(deadline)).await
    }

    async fn publish_until(&self, events: &[OutcomeEvent], deadline: Option<Instant>) -> Delivery {
        let mut delivery = Delivery::default();
        let mut batches: Vec<Vec<PutEventsRequestEntry>> = Vec::new();
        let mut batch_bytes = 0;
        for event in events {
            let entry = self.entry(event);
            let size = entry_size(&entry);
            if size > MAX_REQUEST_BYTES {
                delivery.too_large += 1;
                tracing::warn!(
                    id = %event.id,
                    bytes = size,
                    "outcome event larger than a PutEvents request: not sent"
                );
                continue;
            }
            match batches.last_mut() {
                Some(batch)
                    if batch.len() < MAX_ENTRIES_PER_CALL
                        && batch_bytes + size <= MAX_REQUEST_BYTES =>
                {
                    batch_bytes += size;
                    batch.push(entry);
                }
                _ => {
                    batch_bytes = size;
                    batches.push(vec![entry]);
                }
            }
        }
        let mut batches = batches.into_iter();
        for batch in batches.by_ref() {
            let Some(deadline) = deadline else {
                self.send(batch, &mut delivery).await;
                continue;
            };
            let sent = batch.len();
            if Instant::now() >= deadline {
                delivery.unsent += sent;
                break;
            }
            let call = self.send(batch, &mut delivery);
            if tokio::time::timeout_at(deadline.into(), call)
                .await
                .is_err()
            {
                tracing::warn!(
                    events = sent,
                    "PutEvents still running at the deadline: abandoned; the records' outcomes stand"
                );
                delivery.failed_calls += 1;
                delivery.in_failed_calls += sent;
            }
        }
        delivery.unsent += batches.map(|b| b.len()).sum::<usize>();
        if delivery.unsent > 0 {
            tracing::warn!(
                events = delivery.unsent,
                "outcome events not sent: the invocation's deadline came first"
            );
        }
        delivery
    }

    async fn send(&self, batch: Vec<PutEventsRequestEntry>, delivery: &mut Delivery) {
        let sent = batch.len();
        let result = self
            .client
            .put_events()
            .set_entries(Some(batch))
            .send()
            .await;
        match result {
            Ok(output) => {
                let mut failed = 0;
                for (index, entry) in output.entries().iter().enumerate() {
                    if let Some(code) = entry.error_code() {
                        failed += 1;
                        tracing::warn!(
                            index,
                            error.code = code,
                            error.kind = kind_from_code(Some(code)).code(),
                            error.message = entry.error_message().unwrap_or(""),
                            "EventBridge did not take an outcome event"
                        );
                    }
                }
                // Trust the larger of the two counts, never more than was sent.
                let reported = usize::try_from(output.failed_entry_count()).unwrap_or(0);
                let failed = failed.max(reported).min(sent);
                delivery.failed_entries += failed;
                delivery.delivered += sent - failed;
            }
            Err(error) => {
                let error = BusError::from_sdk(error);
                tracing::warn!(
                    events = sent,
                    error.kind = error.kind.code(),
                    error.cause_chain = %crate::audit::cause_chain(&error),
                    "could not publish outcome events; the records' outcomes stand"
                );
                delivery.failed_calls += 1;
                delivery.in_failed_calls += sent;
            }
        }
    }
}

/// Applies retries and timeouts to an EventBridge client configuration.
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_spelled_as_in_the_audit_line() {
        for outcome in [
            EventOutcome::Reset,
            EventOutcome::WouldReset,
            EventOutcome::Rejected,
            EventOutcome::GaveUp,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).expect("json"),
                serde_json::Value::from(outcome.as_str())
            );
        }
    }

    #[test]
    fn only_final_outcomes_make_events() {
        assert_eq!(
            EventOutcome::for_record("RESET", false),
            Some(EventOutcome::Reset)
        );
        assert_eq!(
            EventOutcome::for_record("WOULD_RESET", false),
            Some(EventOutcome::WouldReset)
        );
        assert_eq!(
            EventOutcome::for_record("REJECTED", false),
            Some(EventOutcome::Rejected)
        );
        assert_eq!(EventOutcome::for_record("RETRY", false), None);
        assert_eq!(
            EventOutcome::for_record("RETRY", true),
            Some(EventOutcome::GaveUp)
        );
        assert_eq!(EventOutcome::for_record("whatever", true), None);
    }

    #[test]
    fn the_last_receive_is_when_the_count_reaches_the_redrive_maximum() {
        assert!(!is_last_receive(Some("1"), Some(3)));
        assert!(!is_last_receive(Some("2"), Some(3)));
        assert!(is_last_receive(Some("3"), Some(3)));
        assert!(is_last_receive(Some("4"), Some(3)));
        assert!(
            !is_last_receive(None, Some(3)),
            "HTTP records never give up"
        );
        assert!(
            !is_last_receive(Some("9"), None),
            "no redrive policy: never"
        );
        assert!(!is_last_receive(Some("three"), Some(3)));
    }

    #[test]
    fn absent_fields_are_left_out_and_time_is_rfc3339() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_800_000);
        let event = OutcomeEvent::new(EventOutcome::Rejected, "sqs", "m1", "anonymous", time);
        let detail: serde_json::Value = serde_json::from_str(&event.detail()).expect("json");
        assert_eq!(
            detail,
            serde_json::json!({
                "outcome": "REJECTED", "caller": "anonymous", "source": "sqs", "id": "m1",
                "time": "2026-11-27T17:20:00Z"
            })
        );
    }

    #[test]
    fn entry_size_counts_like_eventbridge() {
        let entry = PutEventsRequestEntry::builder()
            .source("abc")
            .detail_type("de")
            .detail("{}")
            .resources("r")
            .build();
        assert_eq!(entry_size(&entry), 14 + 3 + 2 + 2 + 1);
    }
}
