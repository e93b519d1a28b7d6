//! cognito-reset: resets Amazon Cognito user passwords on request, safely.
//!
//! The crate is a pure core (the allowlist [`policy`], validated [`request`] types, the
//! [`outcome`] table) behind two ports, Cognito ([`directory`]) and the duplicate-reset guard's
//! DynamoDB table ([`guard`]). The [`pipeline`] runs one record, the [`scheduler`] runs a batch of
//! them, the [`audit`] line records each; thin event adapters ([`sources`]) feed them, and there
//! are two binaries: the Lambda function `cognito-reset` and the operator CLI
//! `reset-policy`.

pub mod audit;
pub mod bus;
pub mod caller;
pub mod config;
pub mod deadline;
pub mod directory;
pub mod guard;
pub mod invocation;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod policy;
pub mod policy_source;
pub mod record;
pub mod request;
pub mod scheduler;
pub mod sources;
