//! Events in, responses out: recognises each event's shape and hands it to its source.
//!
//! One binary serves every integration; the shape is detected per event. Anything else is an
//! invocation error with a clear message, never a panic.

pub mod http;
pub mod sqs;

use std::sync::Arc;

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use std::time::Instant;

use crate::aws::Stage;
use crate::caller;
use crate::deadline::Deadline;
use crate::invocation::Invocation;
use crate::metrics::Metrics;
use crate::pipeline::App;
use crate::policy::Caller;
use crate::policy_source::Refresh;
use crate::record::Source;
use http::HttpRequest;

/// Why an event could not be handled at all (the invocation fails).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "unsupported event: expected an API Gateway REST or HTTP API, Lambda function URL, ALB or SQS event{hint}"
    )]
    Unsupported { hint: String },
    #[error("malformed {kind} event: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "SQS record {index} has no messageId: no record was processed, so that a retry cannot reset anyone twice"
    )]
    MissingMessageId { index: usize },
}

impl From<EventError> for Diagnostic {
    fn from(error: EventError) -> Diagnostic {
        let error_type = match error {
            EventError::Unsupported { .. } => "UnsupportedEvent",
            EventError::Malformed { .. } => "MalformedEvent",
            EventError::MissingMessageId { .. } => "MissingMessageId",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// The Lambda handler.
#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
pub async fn handle(app: &Arc<App>, event: LambdaEvent<Value>) -> Result<Value, EventError> {
    // Lambda's deadline, in epoch milliseconds.
    let deadline = Deadline::from_epoch_ms(event.context.deadline, std::time::SystemTime::now());
    let (response, mut metrics) =
        invoke(app, event.payload, &event.context.request_id, deadline).await;
    // One EMF document per invocation, straight to stdout (not through the log formatter).
    if let Err(error) = metrics.flush(&mut std::io::stdout().lock()) {
        tracing::warn!(%error, "could not write the invocation's metrics");
    }
    response
}

/// Recognises the event and handles it; the testable core of [`handle`].
pub async fn dispatch(
    app: &Arc<App>,
    payload: Value,
    request_id: &str,
    deadline: Deadline,
) -> Result<Value, EventError> {
    invoke(app, payload, request_id, deadline).await.0
}

/// One invocation: refresh the policy if due, run the records, publish their outcome events
/// before the deadline; the response and the invocation's metrics (to be written once).
pub async fn invoke(
    app: &Arc<App>,
    payload: Value,
    request_id: &str,
    deadline: Deadline,
) -> (Result<Value, EventError>, Metrics) {
    let invocation = Arc::new(Invocation::new(&app.config.metrics_namespace));
    // Bounded by the deadline: a slow read never leaves the records less than the margin.
    let spare = deadline
        .remaining()
        .saturating_sub(app.config.deadline_margin * 2);
    match app.policy.refresh_within(Instant::now(), spare).await {
        Refresh::Swapped { .. } => invocation.metrics().policy_reload(),
        Refresh::Refused { .. } => invocation.metrics().policy_refused(),
        Refresh::NotDue | Refresh::Unchanged { .. } => {}
    }
    let response = route(app, payload, request_id, deadline, &invocation).await;
    let (events, mut metrics) = invocation.finish();
    if let Some(bus) = &app.bus
        && !events.is_empty()
    {
        // After the records (whose results are recorded by deadline − margin/4), an eighth of
        // the margin is left for the response itself.
        let until = crate::aws::ends_by(deadline, app.config.deadline_margin, Stage::Publish);
        let delivery = bus.publish_before(&events, until).await;
        metrics.events_not_delivered(delivery.not_delivered());
    }
    (response, metrics)
}

/// Recognises the event and hands it to its source.
async fn route(
    app: &Arc<App>,
    payload: Value,
    request_id: &str,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
) -> Result<Value, EventError> {
    match detect(&payload)? {
        Source::Sqs | Source::SqsFifo => {
            let event: SqsEvent = parse("SQS", payload)?;
            sqs::handle(app, event, deadline, invocation).await
        }
        Source::Alb => {
            let event: AlbTargetGroupRequest = parse("ALB", payload)?;
            let request = HttpRequest {
                source: Source::Alb,
                multi_value_headers: !event.multi_value_headers.is_empty(),
                method: event.http_method.as_str(),
                headers: if event.multi_value_headers.is_empty() {
                    &event.headers
                } else {
                    &event.multi_value_headers
                },
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: Caller::Anonymous,
                principal_id: None,
                path: event.path.as_deref(),
            };
            Ok(http::handle(app, request, request_id, deadline, invocation).await)
        }
        source @ (Source::HttpApi | Source::FunctionUrl) => {
            let event: ApiGatewayV2httpRequest = parse("HTTP API", payload)?;
            let request = HttpRequest {
                source,
                multi_value_headers: false,
                method: event.request_context.http.method.as_str(),
                headers: &event.headers,
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: caller::from_http_v2(&event),
                principal_id: event
                    .request_context
                    .authorizer
                    .as_ref()
                    .and_then(|a| a.iam.as_ref())
                    .and_then(|iam| iam.caller_id.as_deref()),
                path: event
                    .raw_path
                    .as_deref()
                    .or(event.request_context.http.path.as_deref()),
            };
            Ok(http::handle(app, request, request_id, deadline, invocation).await)
        }
        Source::RestApi => {
            let event: ApiGatewayProxyRequest = parse("REST API", payload)?;
            let request = HttpRequest {
                source: Source::RestApi,
                multi_value_headers: false,
                method: event.http_method.as_str(),
                headers: &event.headers,
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: caller::from_rest(&event),
                principal_id: event.request_context.identity.caller.as_deref(),
                path: event.path.as_deref(),
            };
            Ok(http::handle(app, request, request_id, deadline, invocation).await)
        }
    }
}

/// Which integration sent the event (SQS events are told apart from FIFO ones later).
fn detect(payload: &Value) -> Result<Source, EventError> {
    if let Some(records) = payload.get("Records") {
        let source = records
            .get(0)
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str);
        return match source {
            Some("aws:sqs") => Ok(Source::Sqs),
            None if records.as_array().is_some_and(Vec::is_empty) => Ok(Source::Sqs),
            Some("aws:sns") => Err(EventError::Unsupported {
                hint: " (got SNS records: subscribe an SQS queue to the topic instead)".into(),
            }),
            other => Err(EventError::Unsupported {
                hint: format!(
                    " (got records from {})",
                    other.unwrap_or("an unknown source")
                ),
            }),
        };
    }
    if payload.pointer("/requestContext/elb").is_some() {
        return Ok(Source::Alb);
    }
    if payload.get("version").and_then(Value::as_str) == Some("2.0")
        && payload.pointer("/requestContext/http").is_some()
    {
        let function_url = payload
            .pointer("/requestContext/domainName")
            .and_then(Value::as_str)
            .is_some_and(|d| d.contains(".lambda-url."));
        return Ok(if function_url {
            Source::FunctionUrl
        } else {
            Source::HttpApi
        });
    }
    if payload.get("httpMethod").is_some() && payload.get("requestContext").is_some() {
        return Ok(Source::RestApi);
    }
    Err(EventError::Unsupported {
        hint: String::new(),
    })
}

fn parse<T: DeserializeOwned>(kind: &'static str, payload: Value) -> Result<T, EventError> {
    serde_json::from_value(payload).map_err(|source| EventError::Malformed { kind, source })
}
