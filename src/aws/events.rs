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

use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::{Client, config};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tokio::time::Instant;

use super::error::{classify, fault_of_code};
use super::{BoxFuture, ClientSettings};
use crate::failure::Fault;

pub use crate::event::{EventOutcome, OutcomeEvent, is_last_receive};

/// The events' `detail-type`.
pub const DETAIL_TYPE: &str = "Password Reset Outcome";
/// Default for `EVENT_SOURCE`.
pub const DEFAULT_SOURCE: &str = "cognito-reset";
/// `PutEvents` takes at most 10 entries per call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// `PutEvents` requests are at most 256 KB, counted as EventBridge does (see [`entry_size`]).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

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
pub type BusErrorKind = Fault;

/// EventBridge's own codes for a configuration problem.
const MISCONFIGURED: &[&str] = &[
    "ResourceNotFoundException",
    "ValidationException",
    "InvalidArgument",
    "MalformedDetail",
    "MalformedQueryException",
];

/// A classified `PutEvents` failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("eventbridge PutEvents failed ({})", self.kind.code())]
pub struct BusError {
    pub kind: BusErrorKind,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl BusError {
    fn from_sdk<E>(error: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        BusError {
            kind: classify(&error, MISCONFIGURED).fault,
            source: Box::new(error),
        }
    }
}

/// Classification of EventBridge's error codes, for failed entries.
pub fn kind_from_code(code: Option<&str>) -> BusErrorKind {
    fault_of_code(code, MISCONFIGURED)
}

/// The outcome events' port: publish them all before a moment, never failing.
pub trait EventPublisher: Send + Sync + std::fmt::Debug {
    /// Sends every event, in order, before `until`; what did not arrive is counted.
    fn publish_before<'a>(
        &'a self,
        events: &'a [OutcomeEvent],
        until: Instant,
    ) -> BoxFuture<'a, Delivery>;
}

impl EventPublisher for Bus {
    fn publish_before<'a>(
        &'a self,
        events: &'a [OutcomeEvent],
        until: Instant,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(Bus::publish_before(self, events, until))
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
            if tokio::time::timeout_at(deadline, call).await.is_err() {
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
                    error.cause_chain = %crate::logging::cause_chain(&error),
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
