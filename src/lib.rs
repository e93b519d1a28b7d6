//! cognito-reset: resets Amazon Cognito user passwords on request, safely.
//!
//! - **The model** knows no SDK and no port: the allowlist [`policy`], validated [`request`]
//!   types, the [`caller`], one [`record`], its [`outcome`] and the failure kinds it can meet
//!   ([`failure`]), its outcome [`event`], the invocation's [`deadline`].
//! - **The AWS layer** ([`aws`]): client settings, the deadline's stages and one classification
//!   of SDK errors, shared by the four ports (Cognito, the guard's table, the event bus, the
//!   parameter store), each a trait with its SDK implementation beside it.
//! - **The pipeline** runs one record ([`pipeline`]), the [`scheduler`] runs a batch of them,
//!   the [`audit`] line and the [`metrics`] record each; thin event adapters ([`sources`]) feed
//!   them. Two binaries: the Lambda function `cognito-reset` and the operator CLI
//!   `reset-policy`.

pub mod approvals;
pub mod audit;
pub mod aws;
pub mod caller;
pub mod config;
pub mod deadline;
pub mod event;
pub mod failure;
pub mod guard_logic;
pub mod invocation;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod pacing;
pub mod pipeline;
pub mod policy;
pub mod policy_source;
pub mod pool_roles;
pub mod record;
pub mod request;
pub mod scheduler;
pub mod sources;
pub mod xray;
