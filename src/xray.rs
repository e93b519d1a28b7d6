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
//! - **Nothing is made for an unsampled invocation.** Whether the invocation is sampled is
//!   known from its header before any of its spans exist; when it is not (`Sampled=0`, most
//!   invocations under X-Ray's default sampling rule) the layer's filter turns its spans away,
//!   so they cost what a disabled span costs, not the making of an OpenTelemetry span that
//!   would only be dropped.
//! - **Flushed before the answer.** Spans are kept in memory while the invocation runs (no
//!   background thread: Lambda freezes the process between invocations) and sent once the
//!   invocation's span has ended ([`Tracing::flush`]), by a moment inside the deadline's
//!   margin; what is left then is dropped. Each subsegment is nested in its parent's document
//!   (the exporter's `always_nest_subsegments`), so that a reset's spans travel as one UDP
//!   datagram rather than one each; a flush is cut into runs of spans whose documents cannot
//!   outgrow a datagram ([`chunk_len`]). The socket never blocks and a failed send is logged
//!   (once per process) and otherwise ignored: a failing or absent daemon never fails a record.

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
use tracing::subscriber::Interest;
use tracing::{Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::dynamic_filter_fn;
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

/// The most spans translated and sent between two looks at the clock.
const CHUNK: usize = 64;

/// The most bytes of documents one chunk may become: a UDP datagram holds 65,507, less the
/// daemon's header line, with room to spare.
const CHUNK_BYTES: usize = 60_000;

/// What a span's document holds besides its name, attributes, events and status message, and
/// besides its precursor ids (ids, times, type, namespace, the error flags, the JSON around
/// them, the comma between two nested documents), with room to spare: the proptest
/// `a_chunk_never_outgrows_its_bound` holds [`span_bound`] to it.
const SPAN_FIXED_BYTES: usize = 512;

/// One precursor id in a nested subsegment (`"0123456789abcdef",`).
const PRECURSOR_BYTES: usize = 19;

/// Set once a [`Tracing`] exists: the AWS calls' interceptor does nothing before.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether the process's invocation under way (the last one begun, [`Tracing::invocation`]) is
/// sampled: the layer's filter and the AWS calls' interceptor make no span otherwise (Lambda
/// runs one invocation at a time in a process).
static SAMPLED: AtomicBool = AtomicBool::new(false);

/// True until the first invocation span is made: the `ColdStart` annotation.
static COLD_START: AtomicBool = AtomicBool::new(true);

/// Whether tracing is on in this process (a [`Tracing`] was built).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether tracing is on and the invocation under way is sampled ([`Tracing::invocation`]):
/// whether a span made now would be exported.
pub fn sampled() -> bool {
    enabled() && SAMPLED.load(Ordering::Relaxed)
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
    /// Subsegments nested in their parents' documents.
    exporter: XrayExporter<XrayDaemonClient>,
    /// One document a span: for a chunk the nesting exporter must not be given ([`nestable`]).
    unnested: XrayExporter<XrayDaemonClient>,
    /// Translates a chunk's first span alone, for [`nestable`].
    probe: SegmentTranslator,
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
        let exporter = XrayExporter::new(XrayDaemonClient::new(daemon)?)
            .with_translator(translator().always_nest_subsegments());
        let unnested =
            XrayExporter::new(XrayDaemonClient::new(daemon)?).with_translator(translator());
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
            unnested,
            probe: translator(),
            spans,
            service: service.to_owned(),
        })
    }

    /// The layer that turns the function's spans into OpenTelemetry spans: spans only (no
    /// event becomes a span event), only the function's own (`cognito_reset::*`), and only
    /// while the invocation under way is sampled ([`Tracing::invocation`] says). The
    /// handler's `handle` span is seen (the records' tasks run inside it, as tasks of their own,
    /// and find their parent through it) and folded into the invocation's at the flush.
    pub fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let tracer = self.provider.tracer("cognito-reset");
        let ours =
            |meta: &Metadata<'_>| meta.is_span() && meta.target().starts_with("cognito_reset");
        // Which callsites may ever be wanted is cached (`never` for every other one); whether
        // this span is, is asked at each span (`sometimes`): it depends on the invocation.
        let filter =
            dynamic_filter_fn(move |meta, _cx| ours(meta) && SAMPLED.load(Ordering::Relaxed))
                .with_callsite_filter(move |meta| {
                    if ours(meta) {
                        Interest::sometimes()
                    } else {
                        Interest::never()
                    }
                });
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter)
            .boxed()
    }

    /// The span of one invocation, a child of its trace header (`Root=…;Parent=…;Sampled=…`).
    /// Without a header, or with one that cannot be read, the span has no parent and is not
    /// sampled. Until the next invocation's, the layer makes spans only if this one is sampled
    /// (Lambda runs one invocation at a time in a process).
    pub fn invocation(&self, request_id: &str, trace_header: Option<&str>) -> Span {
        let cold_start = COLD_START.swap(false, Ordering::Relaxed);
        let parent = trace_header.and_then(span_context_from_str);
        let sampled = parent.as_ref().is_some_and(SpanContext::is_sampled);
        SAMPLED.store(sampled, Ordering::Relaxed);
        // DEBUG: not in the log lines' span lists at INFO (the handler's span is there).
        let span = tracing::debug_span!(
            "invocation",
            "ColdStart" = cold_start,
            "Service" = %self.service,
            request_id = %request_id,
        );
        let parent = parent
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
            let rest = spans.split_off(chunk_len(&spans));
            let exporter = if nestable(&self.probe, &spans) {
                &self.exporter
            } else {
                &self.unnested
            };
            if let Err(error) = exporter.export(spans).await {
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

/// Whether the exporter's nesting may be given `chunk`: it panics (an index out of bounds, so
/// an abort in the release build) on a chunk none of whose spans translates (opentelemetry-aws
/// 0.21.0: its tree's iterator starts at the last of no levels), which a trace id older than the
/// translator accepts would make of a whole invocation. The first span's translating alone
/// proves that one does; otherwise the chunk goes unnested, which sends what translates.
fn nestable(probe: &SegmentTranslator, chunk: &[SpanData]) -> bool {
    chunk
        .first()
        .is_some_and(|span| probe.translate_spans(std::slice::from_ref(span)).len() == 1)
}

/// How many of the first `spans` make one chunk: at most [`CHUNK`], and as many as can be
/// nested into documents of at most [`CHUNK_BYTES`] in all (the first span alone when even it
/// cannot: its send then fails, as it would unnested). The bound counts, for each span,
/// [`span_bound`] and a precursor id for each span before it in the chunk with the same parent
/// (the exporter lists a subsegment's earlier siblings that ended before it started).
fn chunk_len(spans: &[SpanData]) -> usize {
    let mut bytes = 0;
    let mut siblings: HashMap<SpanId, usize> = HashMap::new();
    for (n, span) in spans.iter().take(CHUNK).enumerate() {
        let earlier = siblings.entry(span.parent_span_id).or_default();
        bytes += span_bound(span) + *earlier * PRECURSOR_BYTES;
        *earlier += 1;
        if bytes > CHUNK_BYTES {
            return n.max(1);
        }
    }
    spans.len().min(CHUNK)
}

/// The most bytes one span's document can take, its precursor ids aside: [`SPAN_FIXED_BYTES`],
/// its name, its status message, its events, and each attribute's key once and value twice (a
/// value can be both a field of the document and part of its name), all as escaped JSON. Every
/// attribute counts, even those the translator drops.
fn span_bound(span: &SpanData) -> usize {
    let attributes = |attributes: &[KeyValue]| -> usize {
        attributes
            .iter()
            .map(|kv| json_len(kv.key.as_str()) + 2 * value_len(&kv.value) + 4)
            .sum()
    };
    let status = match &span.status {
        Status::Error { description } => json_len(description),
        Status::Unset | Status::Ok => 0,
    };
    let events: usize = span
        .events
        .iter()
        .map(|event| 64 + json_len(&event.name) + attributes(&event.attributes))
        .sum();
    SPAN_FIXED_BYTES + json_len(&span.name) + status + events + attributes(&span.attributes)
}

/// An attribute value's length as JSON: a string escaped, anything else as text, quoted and
/// escaped (arrays are written as text by the translator too), with room for its punctuation.
fn value_len(value: &opentelemetry::Value) -> usize {
    match value {
        opentelemetry::Value::String(text) => json_len(text.as_str()),
        other => 2 * json_len(&other.as_str()) + 8,
    }
}

/// The length of `text` as a JSON string: its quotes, two bytes for a quote, a backslash and
/// the short escapes, six for any other control character.
fn json_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The translator of the function's spans: the fields of [`ANNOTATIONS`] as annotations, those
/// of [`METADATA`] as metadata, nothing else.
fn translator() -> SegmentTranslator {
    SegmentTranslator::new()
        .with_indexed_attrs(ANNOTATIONS.map(str::to_owned))
        .with_metadata_attrs(METADATA.map(str::to_owned))
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
    let translator = translator();
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

    use proptest::prelude::*;
    use std::time::{SystemTime, UNIX_EPOCH};
    use tracing_subscriber::layer::SubscriberExt;

    /// A trace id the translator takes: its first 32 bits are a recent epoch second.
    fn trace_id(low: u64) -> TraceId {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        TraceId::from((u128::from(secs) << 96) | u128::from(low))
    }

    /// One made-up span: `parent` 0 is the remote parent of the invocation (not in the batch).
    fn span(
        id: u64,
        parent: u64,
        start_ms: u64,
        length_ms: u64,
        name: String,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        let start = SystemTime::now() + Duration::from_millis(start_ms);
        SpanData {
            span_context: SpanContext::new(
                trace_id(7),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(if parent == 0 { 0xfeed } else { parent }),
            parent_span_is_remote: parent == 0,
            span_kind: if parent == 0 {
                SpanKind::Server
            } else if id.is_multiple_of(3) {
                SpanKind::Client
            } else {
                SpanKind::Internal
            },
            name: name.into(),
            start_time: start,
            end_time: start + Duration::from_millis(length_ms),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: Default::default(),
        }
    }

    /// The bytes the nested documents of `spans` take, each as the daemon client writes it.
    fn nested_bytes(spans: &[SpanData]) -> (usize, usize) {
        let translator = if nestable(&translator(), spans) {
            translator().always_nest_subsegments()
        } else {
            translator()
        };
        let documents = translator.translate_spans(spans);
        let sizes: Vec<usize> = documents
            .iter()
            .map(|document| {
                let mut buf = Vec::new();
                document.to_writer(&mut buf);
                buf.len()
            })
            .collect();
        (sizes.iter().sum(), sizes.len())
    }

    /// Text with quotes, backslashes, control characters and non-ASCII in it.
    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => proptest::char::range('\u{0}', '\u{1f}'),
                1 => Just('é'),
            ],
            0..max,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// The attributes of the function's spans (exported or not), with any values.
    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        let keys: Vec<&'static str> = ANNOTATIONS
            .iter()
            .chain(METADATA.iter())
            .copied()
            .chain([
                "otel.kind",
                "rpc.system",
                "rpc.service",
                "rpc.method",
                "aws.request_id",
                "http.request.method",
                "url.full",
                "error.type",
                "username",
            ])
            .collect();
        proptest::collection::vec(
            (
                proptest::sample::select(keys),
                prop_oneof![
                    text(300).prop_map(opentelemetry::Value::from),
                    any::<i64>().prop_map(opentelemetry::Value::from),
                    any::<bool>().prop_map(opentelemetry::Value::from),
                    any::<f64>().prop_map(opentelemetry::Value::from),
                ],
            ),
            0..12,
        )
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect()
        })
    }

    /// A batch of spans as a flush finds them: an invocation (remote parent) and a tree of
    /// spans under it, each parent among the spans before it, siblings in a row or at once.
    fn batch() -> impl Strategy<Value = Vec<SpanData>> {
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                0..50u64,
                0..50u64,
                text(40),
                attributes(),
                prop_oneof![
                    Just(Status::Unset),
                    Just(Status::Ok),
                    text(200).prop_map(Status::error),
                ],
            ),
            1..80,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(n, (parent, start, length, name, attributes, status))| {
                    let id = n as u64 + 1;
                    let parent = if n == 0 {
                        0
                    } else {
                        parent.index(n) as u64 + 1
                    };
                    // Siblings' times overlap or follow each other: precursors both ways.
                    span(id, parent, start * id, length, name, attributes, status)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn a_chunk_never_outgrows_its_bound(spans in batch()) {
            let mut rest = &spans[..];
            while !rest.is_empty() {
                let n = chunk_len(rest);
                prop_assert!(n >= 1);
                let (bytes, _) = nested_bytes(&rest[..n]);
                // A datagram's worth, unless a span alone is bigger (then it goes alone).
                prop_assert!(
                    bytes <= CHUNK_BYTES || n == 1,
                    "{n} spans became {bytes} bytes of documents"
                );
                // And each span's bound holds whatever the chunk.
                let bound: usize = rest[..n].iter().map(span_bound).sum::<usize>()
                    + n * n * PRECURSOR_BYTES;
                prop_assert!(bytes <= bound, "{bytes} bytes over the bound {bound}");
                rest = &rest[n..];
            }
        }
    }

    #[test]
    fn a_bare_span_fits_the_fixed_part_of_its_bound() {
        // Spans with nothing variable in them but a one-letter name: the fixed part alone, for
        // every kind (the invocation's remote parent, clients, internal spans) and status, each
        // nested in the one before it and one unnested.
        for status in [Status::Unset, Status::Ok, Status::error("")] {
            let spans: Vec<SpanData> = (1..=12)
                .map(|id| {
                    span(
                        id,
                        id - 1,
                        id,
                        1_000_000,
                        "n".into(),
                        vec![],
                        status.clone(),
                    )
                })
                .rev()
                .collect();
            let (bytes, documents) = nested_bytes(&spans);
            assert_eq!(documents, 1);
            let bound: usize = spans.iter().map(span_bound).sum();
            assert!(bytes <= bound, "{bytes} bytes over the bound {bound}");
            let (alone, _) = nested_bytes(&spans[..1]);
            assert!(alone <= span_bound(&spans[0]), "{alone} bytes alone");
        }
    }

    #[test]
    fn a_flush_of_a_reset_sized_tree_is_one_document() {
        // An invocation, a record and four calls under it: one document, nested.
        let spans: Vec<SpanData> = (1..=6)
            .map(|id| {
                let parent = match id {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                };
                let attributes = vec![KeyValue::new("outcome", "RESET")];
                span(
                    id,
                    parent,
                    id * 10,
                    5,
                    format!("s{id}"),
                    attributes,
                    Status::Unset,
                )
            })
            .rev()
            .collect();
        assert_eq!(chunk_len(&spans), 6);
        let (_, documents) = nested_bytes(&spans);
        assert_eq!(documents, 1);
    }

    #[test]
    fn an_unsampled_invocation_makes_no_opentelemetry_span_and_a_sampled_one_does() {
        let daemon = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tracing = Tracing::new(daemon.local_addr().unwrap(), "test").unwrap();
        let subscriber = tracing_subscriber::registry().with(tracing.layer());
        // The OpenTelemetry span behind a `tracing` span, as the layer made it (if it did).
        let made = |span: &Span| span.context().span().span_context().clone();
        tracing::subscriber::with_default(subscriber, || {
            let header = |sampled: u8| {
                format!(
                    "Root=1-{:08x}-{:024x};Parent={:016x};Sampled={sampled}",
                    0x6000_0000u32, 1u8, 7u8
                )
            };
            let unsampled = tracing.invocation("r1", Some(&header(0)));
            // The AWS calls' interceptor asks this: no span for an unsampled invocation's calls.
            assert!(!sampled());
            let child = unsampled.in_scope(|| tracing::info_span!("record"));
            assert!(
                !made(&unsampled).is_valid(),
                "the unsampled invocation's span was made"
            );
            assert!(
                !made(&child).is_valid(),
                "a span of an unsampled invocation was made"
            );

            let sampled_one = tracing.invocation("r2", Some(&header(1)));
            assert!(sampled());
            let child = sampled_one.in_scope(|| tracing::info_span!("record"));
            let made_child = made(&child);
            assert!(made_child.is_valid() && made_child.is_sampled());
            assert_eq!(made_child.trace_id(), made(&sampled_one).trace_id());

            // Without a header: nothing, again.
            let none = tracing.invocation("r3", None);
            assert!(!sampled());
            let child = none.in_scope(|| tracing::info_span!("record"));
            assert!(!made(&child).is_valid());
        });
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
