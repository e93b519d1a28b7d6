//! One record to process: where it came from, who asked, and what it asks for.

use std::fmt;
use std::sync::Arc;

use crate::outcome::ResetError;
use crate::pacing::Priority;
use crate::policy::Caller;
use crate::request::ResetRequest;

/// Where a record came from: the integration that delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// API Gateway REST API (payload 1.0).
    RestApi,
    /// API Gateway HTTP API (payload 2.0).
    HttpApi,
    /// A Lambda function URL.
    FunctionUrl,
    /// An Application Load Balancer target group.
    Alb,
    /// A standard SQS queue (optionally fed by SNS).
    Sqs,
    /// A FIFO SQS queue.
    SqsFifo,
}

impl Source {
    /// Whether records come from a queue (and a RETRY is redelivered).
    pub fn is_queue(self) -> bool {
        matches!(self, Source::Sqs | Source::SqsFifo)
    }

    /// The name used in audit lines: `rest-api`, `http-api`, `function-url`, `alb`, `sqs`,
    /// `sqs-fifo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::RestApi => "rest-api",
            Source::HttpApi => "http-api",
            Source::FunctionUrl => "function-url",
            Source::Alb => "alb",
            Source::Sqs => "sqs",
            Source::SqsFifo => "sqs-fifo",
        }
    }

    /// Whose turn comes first at the rate limiter: a person waits on an HTTP request, nobody on
    /// a queue record.
    pub fn priority(self) -> Priority {
        match self {
            Source::RestApi | Source::HttpApi | Source::FunctionUrl | Source::Alb => {
                Priority::Interactive
            }
            Source::Sqs | Source::SqsFifo => Priority::Batch,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record came from and who asked.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: Source,
    /// The request id (HTTP) or message id (SQS).
    pub id: String,
    /// The item's place in an HTTP batch body.
    pub index: Option<usize>,
    pub caller: Arc<Caller>,
    /// Who reads this record's kept answer (`GET /requests/{id}`) in place of its caller: an
    /// SQS message's sender ([`crate::caller::sender_reader`]); `None` for the caller itself.
    pub reader: Option<String>,
}

impl Origin {
    /// The record's id in the audit log: the request or message id, and `#<index>` for an item
    /// of an HTTP batch.
    pub fn audit_id(&self) -> String {
        match self.index {
            Some(index) => format!("{}#{index}", self.id),
            None => self.id.clone(),
        }
    }
}

/// One record to process: its origin, the request (or why it has none) and its idempotency key.
#[derive(Debug)]
pub struct Job {
    pub origin: Origin,
    pub request: Result<ResetRequest, ResetError>,
    /// The HTTP `Idempotency-Key` (with `#<index>` for batch items), the SQS message id, or
    /// the SNS message id of an SNS-in-SQS record.
    pub idempotency_key: Option<String>,
    /// An SQS record on its last receive (`ApproximateReceiveCount` ≥ `MAX_RECEIVE_COUNT`): a
    /// RETRY now sends it to the dead-letter queue, so it is reported as `GAVE_UP`.
    pub last_receive: bool,
}
