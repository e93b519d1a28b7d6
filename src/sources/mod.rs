//! Events in, responses out: recognises each event's shape and hands it to its source.
//!
//! One binary serves every integration; the shape is detected per event. Anything else is an
//! invocation error with a clear message, never a panic.

pub mod http;
pub mod sqs;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::caller;
use crate::policy::Caller;
use crate::service::{App, Deadline};
use http::{Flavor, HttpRequest};

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

/// The longest a Lambda invocation can run.
const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);
/// 2000-01-01T00:00:00Z in epoch milliseconds: no real deadline is earlier.
const EPOCH_MS_2000: u64 = 946_684_800_000;

impl Deadline {
    /// The invocation's deadline, from the Lambda context.
    pub fn from_context(context: &lambda_runtime::Context) -> Deadline {
        Deadline::from_epoch_ms(context.deadline, SystemTime::now())
    }

    /// The deadline given as epoch milliseconds, seen at `now`.
    ///
    /// Lambda always sends a wall-clock deadline. A value before the year 2000 cannot be one
    /// (cargo-lambda's emulator sends its timeout, e.g. `600000`, instead); it is treated as the
    /// longest possible invocation, so that no record is refused for a deadline that isn't.
    pub fn from_epoch_ms(deadline_ms: u64, now: SystemTime) -> Deadline {
        let remaining = if deadline_ms < EPOCH_MS_2000 {
            tracing::debug!(
                deadline_ms,
                "implausible invocation deadline; assuming 15 minutes"
            );
            MAX_INVOCATION
        } else {
            (UNIX_EPOCH + Duration::from_millis(deadline_ms))
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
        };
        Deadline(Instant::now() + remaining)
    }
}

/// The Lambda handler.
#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
pub async fn handle(app: &Arc<App>, event: LambdaEvent<Value>) -> Result<Value, EventError> {
    let deadline = Deadline::from_context(&event.context);
    dispatch(app, event.payload, &event.context.request_id, deadline).await
}

/// Recognises the event and handles it; the testable core of [`handle`].
pub async fn dispatch(
    app: &Arc<App>,
    payload: Value,
    request_id: &str,
    deadline: Deadline,
) -> Result<Value, EventError> {
    match detect(&payload)? {
        Kind::Sqs => {
            let event: SqsEvent = parse("SQS", payload)?;
            sqs::handle(app, event, deadline).await
        }
        Kind::Alb => {
            let event: AlbTargetGroupRequest = parse("ALB", payload)?;
            let request = HttpRequest {
                flavor: Flavor::Alb {
                    multi_value_headers: !event.multi_value_headers.is_empty(),
                },
                method: event.http_method.as_str(),
                headers: if event.multi_value_headers.is_empty() {
                    &event.headers
                } else {
                    &event.multi_value_headers
                },
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: Caller::Anonymous,
            };
            Ok(http::handle(app, request, request_id, deadline).await)
        }
        Kind::HttpV2 { function_url } => {
            let event: ApiGatewayV2httpRequest = parse("HTTP API", payload)?;
            let request = HttpRequest {
                flavor: if function_url {
                    Flavor::FunctionUrl
                } else {
                    Flavor::HttpApi
                },
                method: event.request_context.http.method.as_str(),
                headers: &event.headers,
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: caller::from_http_v2(&event),
            };
            Ok(http::handle(app, request, request_id, deadline).await)
        }
        Kind::Rest => {
            let event: ApiGatewayProxyRequest = parse("REST API", payload)?;
            let request = HttpRequest {
                flavor: Flavor::RestApi,
                method: event.http_method.as_str(),
                headers: &event.headers,
                body: event.body.as_deref(),
                is_base64_encoded: event.is_base64_encoded,
                caller: caller::from_rest(&event),
            };
            Ok(http::handle(app, request, request_id, deadline).await)
        }
    }
}

enum Kind {
    Sqs,
    Alb,
    HttpV2 { function_url: bool },
    Rest,
}

fn detect(payload: &Value) -> Result<Kind, EventError> {
    if let Some(records) = payload.get("Records") {
        let source = records
            .get(0)
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str);
        return match source {
            Some("aws:sqs") => Ok(Kind::Sqs),
            None if records.as_array().is_some_and(Vec::is_empty) => Ok(Kind::Sqs),
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
        return Ok(Kind::Alb);
    }
    if payload.get("version").and_then(Value::as_str) == Some("2.0")
        && payload.pointer("/requestContext/http").is_some()
    {
        let function_url = payload
            .pointer("/requestContext/domainName")
            .and_then(Value::as_str)
            .is_some_and(|d| d.contains(".lambda-url."));
        return Ok(Kind::HttpV2 { function_url });
    }
    if payload.get("httpMethod").is_some() && payload.get("requestContext").is_some() {
        return Ok(Kind::Rest);
    }
    Err(EventError::Unsupported {
        hint: String::new(),
    })
}

fn parse<T: DeserializeOwned>(kind: &'static str, payload: Value) -> Result<T, EventError> {
    serde_json::from_value(payload).map_err(|source| EventError::Malformed { kind, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_deadline_leaves_the_time_until_it() {
        let now = SystemTime::now();
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let deadline = Deadline::from_epoch_ms(ms + 3_000, now);
        assert!(!deadline.too_close(Duration::from_millis(2_000)));
        assert!(deadline.too_close(Duration::from_millis(3_500)));
        // A passed deadline leaves nothing.
        assert!(Deadline::from_epoch_ms(ms - 1_000, now).too_close(Duration::from_millis(1)));
    }

    #[test]
    fn an_emulator_timeout_in_place_of_a_deadline_is_not_a_1970_deadline() {
        // cargo-lambda's emulator sends `lambda-runtime-deadline-ms: 600000`.
        let deadline = Deadline::from_epoch_ms(600_000, SystemTime::now());
        assert!(!deadline.too_close(Duration::from_secs(600)));
    }
}
