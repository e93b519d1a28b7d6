//! Log set-up: the level the operator asked for, except that the targets that log payloads are
//! never let below INFO, whatever was asked.
//!
//! Request bodies carry `ClientMetadata`, which is passed to Cognito's Lambda triggers and may
//! hold secrets; responses carry user attributes. At TRACE these crates log them (read in their
//! sources, versions as in `Cargo.lock`):
//!
//! | target (prefix) | what it logs below INFO |
//! |---|---|
//! | `lambda_runtime` | `layers::api_response`: every raw invocation event, body included ("raw JSON event received from Lambda"); `requests`: the streaming response prelude |
//! | `aws_smithy_runtime` | `client::orchestrator`: each HTTP request with its body ("transmitting request"), each response ("received response from service") and the deserialized output; `client::orchestrator::http`: response bodies ("read HTTP response body", or all of them with `LOG_SENSITIVE_BODIES=true`) |
//! | `aws_sigv4` | `http_request::sign`: the request being signed; its body too with `LOG_SIGNABLE_BODY=true` |
//! | `aws_smithy_http` | `event_stream`: event stream messages (not used by Cognito; the same family) |
//!
//! Targets match by prefix, as in `RUST_LOG`: `lambda_runtime` also covers
//! `lambda_runtime_api_client`, `aws_smithy_http` also `aws_smithy_http_client`. The cap is a
//! second filter that every line must also pass ([`FilterExt::and`]), so no directive of the
//! requested level can lift it: not `trace`, not `aws_smithy_runtime::client::orchestrator=trace`,
//! not a span directive such as `[invoke]=trace`. Everything else (the function's own targets)
//! logs at the level asked for, and the `audit` target always logs at INFO, whatever is asked:
//! no filter of this process can silence the audit trail. Lambda's own filter
//! (`AWS_LAMBDA_LOG_LEVEL`, the template's `LogLevel`) would drop it above INFO, so the function
//! refuses to start with such a level ([`drops_info`], checked by [`crate::config`]).

use tracing::Subscriber;
use tracing_subscriber::filter::combinator::{And, Or};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Targets (prefixes) that log invocation events, request or response bodies below INFO.
pub const PAYLOAD_TARGETS: [&str; 4] = [
    "lambda_runtime",
    "aws_smithy_runtime",
    "aws_sigv4",
    "aws_smithy_http",
];

/// The most verbose level [`PAYLOAD_TARGETS`] may log at.
pub const PAYLOAD_CAP: LevelFilter = LevelFilter::INFO;

/// The level used when none is asked for.
const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// How log lines are written (`AWS_LAMBDA_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// tracing-subscriber's text lines (the default).
    Text,
    /// One JSON object per line (`AWS_LAMBDA_LOG_FORMAT=JSON`, set by Lambda's logging config).
    Json,
}

impl Format {
    /// The format named by `AWS_LAMBDA_LOG_FORMAT`: `JSON` (any letter case) or text.
    pub fn from_setting(value: Option<&str>) -> Format {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// The filter for a requested level or `RUST_LOG`-style directives, with the payload cap.
///
/// `requested` is a level (`TRACE` … `ERROR`, any letter case; `FATAL` means ERROR) or
/// `RUST_LOG` directives (`info,cognito_reset=trace`); `None` or an empty value means INFO.
/// Unreadable directives are skipped, as `lambda_runtime`'s default subscriber does.
pub fn log_filter<S>(requested: Option<&str>) -> And<Or<EnvFilter, Targets, S>, Targets, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let requested = requested.map(str::trim).unwrap_or_default();
    let requested = if requested.eq_ignore_ascii_case("fatal") {
        "error"
    } else {
        requested
    };
    let asked = EnvFilter::builder()
        .with_default_directive(DEFAULT_LEVEL.into())
        .parse_lossy(requested);
    asked.or(audit_floor()).and(payload_cap())
}

/// The audit line's target, at INFO whatever else is asked.
fn audit_floor() -> Targets {
    Targets::new().with_target("audit", LevelFilter::INFO)
}

/// Whether Lambda's log filter at `level` (an `AWS_LAMBDA_LOG_LEVEL` value) drops INFO lines:
/// WARN, ERROR and FATAL do. An unreadable level is treated as INFO, as [`lambda_log_level`]
/// does.
pub fn drops_info(level: &str) -> bool {
    matches!(lambda_log_level(level), "warn" | "error")
}

/// Lets everything through except [`PAYLOAD_TARGETS`] below [`PAYLOAD_CAP`].
fn payload_cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(PAYLOAD_TARGETS.map(|target| (target, PAYLOAD_CAP)))
}

/// The function's subscriber: lines in `format` to `writer`, filtered by [`log_filter`].
///
/// The same lines as `lambda_runtime::tracing::init_default_subscriber` (no time stamp, which
/// CloudWatch adds; no target), with the payload cap.
pub fn subscriber<W>(requested: Option<&str>, format: Format, writer: W) -> impl Subscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with(requested, format, writer, None)
}

/// [`subscriber`], with `spans` beside the log lines: the X-Ray layer
/// ([`crate::xray::Tracing::layer`]), which has its own filter (the log level does not decide
/// what is traced). The function's own ([`init_with`]), and the handler benchmark's.
pub fn subscriber_with<W>(
    requested: Option<&str>,
    format: Format,
    writer: W,
    spans: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layers = vec![lines_layer(requested, format, writer)];
    layers.extend(spans);
    tracing_subscriber::registry().with(layers)
}

/// The log lines' layer of [`subscriber`], boxed so that other layers can sit beside it.
fn lines_layer<W>(
    requested: Option<&str>,
    format: Format,
    writer: W,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(writer);
    match format {
        Format::Json => Box::new(lines.json().with_filter(log_filter(requested))),
        Format::Text => Box::new(lines.with_filter(log_filter(requested))),
    }
}

/// The directive for Lambda's `AWS_LAMBDA_LOG_LEVEL` (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`,
/// `FATAL`, any letter case): its level, FATAL as ERROR, anything else INFO (as
/// `lambda_runtime`'s default subscriber does; an unreadable level never silences the audit).
pub fn lambda_log_level(value: &str) -> &'static str {
    let value = value.trim();
    ["trace", "debug", "info", "warn", "error"]
        .into_iter()
        .find(|level| value.eq_ignore_ascii_case(level))
        .or_else(|| value.eq_ignore_ascii_case("fatal").then_some("error"))
        .unwrap_or("info")
}

/// Installs the function's subscriber, writing to stdout, from the environment:
/// `AWS_LAMBDA_LOG_LEVEL` (a level, see [`lambda_log_level`]) or, when it is unset, `RUST_LOG`
/// (directives), and `AWS_LAMBDA_LOG_FORMAT`.
pub fn init() {
    init_with(None);
}

/// [`init`], with `spans` beside the log lines ([`subscriber_with`]).
pub fn init_with(spans: Option<Box<dyn Layer<Registry> + Send + Sync>>) {
    let requested = match std::env::var("AWS_LAMBDA_LOG_LEVEL") {
        Ok(level) => Some(lambda_log_level(&level).to_owned()),
        Err(_) => std::env::var("RUST_LOG").ok(),
    };
    let format = Format::from_setting(std::env::var("AWS_LAMBDA_LOG_FORMAT").ok().as_deref());
    subscriber_with(requested.as_deref(), format, std::io::stdout, spans).init();
}

/// An error and its sources, `: `-separated, for logs (never for callers).
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::subscriber::with_default;

    use super::*;

    /// Whether `emit` writes anything through the subscriber for `requested`.
    fn written_by(requested: Option<&str>, emit: impl FnOnce()) -> bool {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = std::sync::Arc::clone(&lines);
        let writer = move || Sink(std::sync::Arc::clone(&sink));
        with_default(subscriber(requested, Format::Text, writer), emit);
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        text.contains("probe")
    }

    /// Whether an event at `level` with `target` is written under `requested` (a macro: an
    /// event's target and level are part of its static call site).
    macro_rules! written {
        ($requested:expr, $target:literal, $level:ident) => {
            written_by($requested, || {
                tracing::event!(target: $target, Level::$level, "probe")
            })
        };
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_reaches_the_functions_own_targets() {
        for requested in ["TRACE", "trace", "cognito_reset=trace", " Trace "] {
            assert!(
                written!(Some(requested), "cognito_reset::pipeline", TRACE),
                "{requested}"
            );
        }
        assert!(written!(Some("TRACE"), "audit", TRACE));
    }

    #[test]
    fn payload_targets_stay_at_info_whatever_is_asked() {
        for requested in [
            "TRACE",
            "trace,aws_smithy_runtime=trace",
            "aws_smithy_runtime::client::orchestrator=trace",
            "lambda_runtime::layers::api_response=trace,aws_sigv4=trace",
            "[invoke]=trace",
            "trace,[{body}]=trace",
        ] {
            let requested = Some(requested);
            for (written, what) in [
                (
                    written!(requested, "aws_smithy_runtime::client::orchestrator", TRACE),
                    "aws_smithy_runtime::client::orchestrator at TRACE",
                ),
                (
                    written!(requested, "lambda_runtime::layers::api_response", TRACE),
                    "lambda_runtime::layers::api_response at TRACE",
                ),
                (
                    written!(requested, "lambda_runtime::layers::api_response", DEBUG),
                    "lambda_runtime::layers::api_response at DEBUG",
                ),
                (
                    written!(requested, "aws_sigv4::http_request::sign", TRACE),
                    "aws_sigv4::http_request::sign at TRACE",
                ),
                (
                    written!(requested, "aws_smithy_http_client::client", DEBUG),
                    "aws_smithy_http_client::client at DEBUG",
                ),
            ] {
                assert!(!written, "{requested:?}: {what}");
            }
        }
        // INFO and above still come through.
        assert!(written!(
            Some("TRACE"),
            "aws_smithy_runtime::client::orchestrator",
            INFO
        ));
    }

    #[test]
    fn default_and_unreadable_levels_are_info() {
        for requested in [None, Some(""), Some(" "), Some("=")] {
            assert!(
                !written!(requested, "cognito_reset::pipeline", DEBUG),
                "{requested:?}"
            );
            assert!(
                written!(requested, "cognito_reset::pipeline", WARN),
                "{requested:?}"
            );
        }
        assert!(written!(Some("debug"), "cognito_reset::pipeline", DEBUG));
    }

    #[test]
    fn lambda_levels_are_read_as_levels() {
        assert_eq!(lambda_log_level("TRACE"), "trace");
        assert_eq!(lambda_log_level("Debug"), "debug");
        assert_eq!(lambda_log_level("WARN"), "warn");
        assert_eq!(lambda_log_level("FATAL"), "error");
        // A typo must not turn into a target directive that silences everything else.
        assert_eq!(lambda_log_level("verbose"), "info");
        assert_eq!(lambda_log_level(""), "info");
        assert!(written!(
            Some(lambda_log_level("verbose")),
            "cognito_reset::pipeline",
            WARN
        ));
    }

    #[test]
    fn fatal_means_error() {
        assert!(!written!(Some("FATAL"), "cognito_reset::pipeline", WARN));
        assert!(!written!(
            Some("FATAL"),
            "aws_smithy_runtime::client::orchestrator",
            INFO
        ));
    }

    #[test]
    fn format_is_json_only_when_asked() {
        assert_eq!(Format::from_setting(Some("JSON")), Format::Json);
        assert_eq!(Format::from_setting(Some("json")), Format::Json);
        assert_eq!(Format::from_setting(Some("Text")), Format::Text);
        assert_eq!(Format::from_setting(None), Format::Text);
    }

    #[test]
    fn json_format_writes_one_json_object_per_line() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = std::sync::Arc::clone(&lines);
        let writer = move || Sink(std::sync::Arc::clone(&sink));
        with_default(subscriber(Some("INFO"), Format::Json, writer), || {
            tracing::info!(target: "audit", outcome = "RESET", "record done");
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["outcome"], "RESET");
        assert_eq!(line["fields"]["message"], "record done");
    }
}
