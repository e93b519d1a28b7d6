//! Tracing to AWS X-Ray: the function's own `tracing` spans (the invocation, each record, each
//! AWS call, the guard's decisions, the pacing wait) as OpenTelemetry spans, exported as X-Ray
//! segment documents over UDP to the Lambda X-Ray daemon (`AWS_XRAY_DAEMON_ADDRESS`).
//!
//! - **Off unless the daemon is there.** Without `AWS_XRAY_DAEMON_ADDRESS` (local runs, tests,
//!   `Tracing: PassThrough`... Lambda sets it whenever the function may trace) nothing here is
//!   built: no exporter, no socket, no layer in the subscriber, and the AWS calls' interceptor
//!   ([`crate::aws::trace`]) returns at once.
//! - **The parent is the invocation's own trace header** (`Lambda-Runtime-Trace-Id`, read by the
//!   runtime into `Context::xray_trace_id`), never the process-wide `_X_AMZN_TRACE_ID`, which
//!   belongs to whichever invocation set it last. The sampler follows that parent and samples
//!   nothing without one: `Sampled=0` (or no header) exports nothing.
//! - **Only named fields leave the function.** The translator turns into X-Ray annotations
//!   ([`ANNOTATIONS`]) and metadata ([`METADATA`]) exactly the fields listed here and drops the
//!   rest; none of them is personal (no username, email, `ClientMetadata`, ticket text or
//!   caller). Only the function's own spans are exported (not the SDK's or the runtime's), and no
//!   event (log line) at all.
//! - **Flushed before the answer.** Spans are kept in memory while the invocation runs (no
//!   background thread: Lambda freezes the process between invocations) and sent, one UDP
//!   datagram each, once the invocation's span has ended ([`Tracing::flush`]), by a moment
//!   inside the deadline's margin; what is left then is dropped. The socket never blocks and a
//!   failed send is logged (once per process) and otherwise ignored: a failing or absent daemon
//!   never fails a record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_aws::trace::xray_propagator::span_context_from_str;
use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_aws::xray_exporter::{SegmentTranslator, XrayExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::time::Instant;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, Registry};

use crate::deadline::Deadline;

/// Span fields exported as X-Ray annotations (indexed: what operators filter on).
pub const ANNOTATIONS: [&str; 6] = ["ColdStart", "Service", "outcome", "code", "pool", "rule"];

/// Span fields exported as X-Ray metadata (shown, not indexed). Every other field is dropped.
pub const METADATA: [&str; 9] = [
    "request_id",
    "source",
    "id",
    "replayed",
    "attempts",
    "throttled",
    "stage_budget_ms",
    "decision",
    "category",
];

/// The most spans one invocation keeps (a batch of 10,000 SQS records would otherwise hold
/// hundreds of thousands); the rest are dropped and counted in the flush's log line.
pub const MAX_SPANS: usize = 4_000;

/// Spans translated and sent between two looks at the clock.
const CHUNK: usize = 64;

/// Set once a [`Tracing`] exists: the AWS calls' interceptor does nothing before.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True until the first invocation span is made: the `ColdStart` annotation.
static COLD_START: AtomicBool = AtomicBool::new(true);

/// Whether tracing is on in this process (a [`Tracing`] was built).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The daemon's UDP address from an `AWS_XRAY_DAEMON_ADDRESS` value: `host:port` (what Lambda
/// sets, e.g. `169.254.79.129:2000`) or the X-Ray SDKs' `tcp:host:port udp:host:port`.
pub fn daemon_address(value: &str) -> Option<SocketAddr> {
    let value = value.trim();
    let udp = value
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(value);
    udp.parse().ok()
}

/// The exporter, and the spans of the invocation under way.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    exporter: XrayExporter<XrayDaemonClient>,
    spans: Buffer,
    service: String,
}

/// Ended spans, kept until the flush.
#[derive(Debug, Clone, Default)]
struct Buffer {
    spans: Arc<Mutex<Vec<SpanData>>>,
    dropped: Arc<AtomicU64>,
}

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, Vec<SpanData>> {
        // A poisoned lock only means a thread panicked while pushing: the spans are still valid.
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpanProcessor for Buffer {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let mut spans = self.lock();
        if spans.len() < MAX_SPANS {
            spans.push(span);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Tracing {
    /// Tracing to the daemon named by `AWS_XRAY_DAEMON_ADDRESS`, or `None` when it is unset (or
    /// unreadable, or its socket cannot be made: logged by the caller's `warn` once the
    /// subscriber is up, see [`Tracing::from_env`]'s second value).
    pub fn from_env(service: &str) -> (Option<Tracing>, Option<String>) {
        let Ok(value) = std::env::var("AWS_XRAY_DAEMON_ADDRESS") else {
            return (None, None);
        };
        let Some(address) = daemon_address(&value) else {
            return (
                None,
                Some(format!(
                    "AWS_XRAY_DAEMON_ADDRESS {value:?} is not host:port: no tracing"
                )),
            );
        };
        match Tracing::new(address, service) {
            Ok(tracing) => (Some(tracing), None),
            Err(error) => (
                None,
                Some(format!(
                    "no UDP socket for the X-Ray daemon at {address}: {error}; no tracing"
                )),
            ),
        }
    }

    /// Tracing to the daemon at `daemon` (UDP), the invocation spans naming `service`.
    pub fn new(daemon: SocketAddr, service: &str) -> std::io::Result<Tracing> {
        let client = XrayDaemonClient::new(daemon)?;
        let translator = SegmentTranslator::new()
            .with_indexed_attrs(ANNOTATIONS.map(str::to_owned))
            .with_metadata_attrs(METADATA.map(str::to_owned));
        let exporter = XrayExporter::new(client).with_translator(translator);
        let spans = Buffer::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(spans.clone())
            // Follow the invocation's header; never start a trace of our own.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            // No resource detectors at start-up: the service name is the invocation's field.
            .with_resource(Resource::builder_empty().build())
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Tracing {
            provider,
            exporter,
            spans,
            service: service.to_owned(),
        })
    }

    /// The layer that turns the function's spans into OpenTelemetry spans: spans only (no
    /// event becomes a span event), and only the function's own (`cognito_reset::*`). The
    /// handler's `handle` span is seen (the records' tasks run inside it, as tasks of their own,
    /// and find their parent through it) and folded into the invocation's at the flush.
    pub fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let tracer = self.provider.tracer("cognito-reset");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("cognito_reset")
            }))
            .boxed()
    }

    /// The span of one invocation, a child of its trace header (`Root=…;Parent=…;Sampled=…`).
    /// Without a header, or with one that cannot be read, the span has no parent and is not
    /// sampled.
    pub fn invocation(&self, request_id: &str, trace_header: Option<&str>) -> Span {
        let cold_start = COLD_START.swap(false, Ordering::Relaxed);
        // DEBUG: not in the log lines' span lists at INFO (the handler's span is there).
        let span = tracing::debug_span!(
            "invocation",
            "ColdStart" = cold_start,
            "Service" = %self.service,
            request_id = %request_id,
        );
        let parent = trace_header
            .and_then(span_context_from_str)
            .map(|parent| Context::new().with_remote_span_context(parent))
            // An invalid parent, so that no span of the process's context is taken instead.
            .unwrap_or_default();
        // Only fails for a span this layer does not see, which then exports nothing anyway.
        let _ = span.set_parent(parent);
        span
    }

    /// Sends the ended spans to the daemon, until `ends_by`; what is left then is dropped.
    pub async fn flush(&self, ends_by: Instant) {
        let mut spans = std::mem::take(&mut *self.spans.lock());
        fold_handler_spans(&mut spans);
        let mut dropped = self.spans.dropped.swap(0, Ordering::Relaxed);
        while !spans.is_empty() {
            if Instant::now() >= ends_by {
                dropped += spans.len() as u64;
                break;
            }
            let rest = spans.split_off(spans.len().min(CHUNK));
            if let Err(error) = self.exporter.export(spans).await {
                failed_once(&error.to_string());
            }
            spans = rest;
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "spans dropped: over the invocation's limit or past the deadline's margin"
            );
        }
    }

    /// [`Tracing::flush`] by the deadline's margin: done `margin / 16` before the deadline, after
    /// the outcome events' stage (`margin / 8`), so the answer keeps the rest.
    pub async fn flush_within(&self, deadline: Deadline, margin: Duration) {
        self.flush(deadline.less(margin / 16)).await;
    }
}

/// Translates one made-up span, so that the X-Ray exporter's patterns (a segment's name, with
/// Unicode classes; an annotation's key), which the exporter compiles at their first use, are
/// compiled now rather than in the first invocation's flush, where they took about 3 ms
/// (`make bench-init`, tracing configured). Call it off the requests' path: start-up's
/// `tls-roots` thread does, once the roots are loaded. Nothing is sent, and the span is not the
/// provider's, so no trace sees it; a failure only leaves the work to the flush.
pub fn warm_up() {
    start_up_translation();
}

/// How many documents the made-up span of [`warm_up`] became: one, or the patterns were
/// not reached (the translator refuses a trace id whose time is not recent, for one).
fn start_up_translation() -> usize {
    let translator = SegmentTranslator::new().with_indexed_attrs(ANNOTATIONS.map(str::to_owned));
    let now = std::time::SystemTime::now();
    // An X-Ray trace id begins with its epoch second.
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let span = SpanData {
        span_context: SpanContext::new(
            TraceId::from((u128::from(secs) << 96) | 1),
            SpanId::from(1u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: "start-up".into(),
        start_time: now,
        end_time: now,
        attributes: vec![KeyValue::new(ANNOTATIONS[0], true)],
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status: Status::Unset,
        instrumentation_scope: Default::default(),
    };
    translator
        .translate_spans(std::slice::from_ref(&span))
        .len()
}

/// The handler's span (`sources::handle`, [`HANDLER_SPAN`]) is the invocation span's twin (the
/// same request id): its children are hung under its parent, the invocation, and it is dropped.
fn fold_handler_spans(spans: &mut Vec<SpanData>) {
    let twins: HashMap<SpanId, SpanId> = spans
        .iter()
        .filter(|span| span.name == HANDLER_SPAN)
        .map(|span| (span.span_context.span_id(), span.parent_span_id))
        .collect();
    if twins.is_empty() {
        return;
    }
    spans.retain(|span| !twins.contains_key(&span.span_context.span_id()));
    for span in spans {
        if let Some(parent) = twins.get(&span.parent_span_id) {
            span.parent_span_id = *parent;
        }
    }
}

/// The name of the handler's span (`#[instrument]` on [`crate::sources::handle`]).
const HANDLER_SPAN: &str = "handle";

/// Logs the first failed send of the process (a missing daemon refuses every datagram).
fn failed_once(error: &str) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    if !FAILED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error,
            "could not send spans to the X-Ray daemon; records are not affected (logged once)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_translation_reaches_the_patterns() {
        // Only a span that became a document went through the name's and the key's checks.
        assert_eq!(start_up_translation(), 1);
    }

    #[test]
    fn the_daemon_address_is_read_in_both_forms() {
        let lambda: SocketAddr = "169.254.79.129:2000".parse().unwrap();
        assert_eq!(daemon_address("169.254.79.129:2000"), Some(lambda));
        assert_eq!(
            daemon_address("tcp:127.0.0.1:2000 udp:169.254.79.129:2000"),
            Some(lambda)
        );
        assert_eq!(daemon_address(""), None);
        assert_eq!(daemon_address("localhost"), None);
    }
}
