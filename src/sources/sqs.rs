//! SQS batches (standard and FIFO, optionally SNS-wrapped) with partial batch responses.
//!
//! Every record's body is one request; the caller is the record's queue ARN, never anything in
//! the body. The response lists exactly the records to retry; rejected records are acknowledged
//! (and audited). A record without a `messageId` fails the whole invocation before any record
//! is processed, so that a retry cannot reset anyone twice.
//!
//! A record's idempotency key is its `messageId`, or for an SNS notification the SNS
//! `MessageId` (SNS redelivery makes a new SQS message with the same SNS id): with the guard on,
//! a redelivered record is acknowledged with no second reset.

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::Deserialize;
use serde_json::Value;

use super::EventError;
use crate::caller;
use crate::deadline::Deadline;
use crate::event::is_last_receive;
use crate::invocation::Invocation;
use crate::outcome::ResetError;
use crate::pipeline::App;
use crate::record::{Job, Origin, Source};
use crate::request::{InvalidRequest, ResetRequest, UserPoolId};
use crate::scheduler::{run_all, run_fifo};

/// The part of an SNS notification envelope the function reads.
#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
}

/// A record body: the request, and the SNS message id when it came through SNS.
#[derive(Debug)]
pub struct Body {
    pub request: Result<ResetRequest, InvalidRequest>,
    pub sns_message_id: Option<String>,
}

/// Parses a record body: a request, or an SNS notification whose `Message` is a request.
pub fn parse_body(body: Option<&str>, default_pool: Option<&UserPoolId>) -> Body {
    let Some(body) = body.filter(|b| !b.trim().is_empty()) else {
        return Body {
            request: Err(InvalidRequest::body("the message body is empty")),
            sns_message_id: None,
        };
    };
    match serde_json::from_str::<SnsEnvelope>(body) {
        Ok(envelope) if envelope.kind == "Notification" => Body {
            request: ResetRequest::from_json(&envelope.message, default_pool),
            sns_message_id: envelope.message_id.filter(|id| !id.is_empty()),
        },
        _ => Body {
            request: ResetRequest::from_json(body, default_pool),
            sns_message_id: None,
        },
    }
}

/// Processes a batch and returns `{"batchItemFailures": [...]}`.
pub async fn handle(
    app: &Arc<App>,
    event: SqsEvent,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
) -> Result<Value, EventError> {
    // Check every record before touching any.
    let mut ids = Vec::with_capacity(event.records.len());
    for (index, record) in event.records.iter().enumerate() {
        match record.message_id.as_deref() {
            Some(id) if !id.is_empty() => ids.push(id.to_owned()),
            _ => return Err(EventError::MissingMessageId { index }),
        }
    }
    let fifo = event.records.iter().any(|r| {
        r.event_source_arn
            .as_deref()
            .is_some_and(|arn| arn.ends_with(".fifo"))
    });
    let default_pool = app.config.default_user_pool_id.as_ref();
    let job = |record: &SqsMessage, id: String| {
        let body = parse_body(record.body.as_deref(), default_pool);
        let receive_count = record.attributes.get("ApproximateReceiveCount");
        Job {
            idempotency_key: Some(body.sns_message_id.unwrap_or_else(|| id.clone())),
            last_receive: is_last_receive(
                receive_count.map(String::as_str),
                app.config.max_receive_count,
            ),
            origin: Origin {
                source: if fifo { Source::SqsFifo } else { Source::Sqs },
                id,
                index: None,
                caller: Arc::new(caller::from_queue(record.event_source_arn.as_deref())),
                reader: caller::sender_reader(
                    record.attributes.get("SenderId").map(String::as_str),
                ),
            },
            request: body.request.map_err(ResetError::from),
        }
    };
    let results = if fifo {
        let jobs = event
            .records
            .iter()
            .zip(ids.iter().cloned())
            .map(|(record, id)| {
                let group = record
                    .attributes
                    .get("MessageGroupId")
                    .cloned()
                    .unwrap_or_default();
                (group, job(record, id))
            })
            .collect();
        run_fifo(app, jobs, deadline, invocation).await
    } else {
        let jobs = event
            .records
            .iter()
            .zip(ids.iter().cloned())
            .map(|(r, id)| job(r, id))
            .collect();
        run_all(app, jobs, deadline, invocation).await
    };
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = results
        .iter()
        .zip(ids)
        .filter(|(result, _)| crate::outcome::hand_back(result))
        .map(|(_, id)| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    serde_json::to_value(response).map_err(|source| EventError::Malformed {
        kind: "SQS response",
        source,
    })
}
