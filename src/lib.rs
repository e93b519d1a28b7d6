//! cognito-reset: resets Amazon Cognito user passwords on request, safely.
//!
//! The crate is a pure core (the allowlist [`policy`], validated [`request`] types, the
//! [`outcome`] table) behind one port to Cognito ([`directory`]), driven by thin event adapters
//! ([`sources`]) and two binaries: the Lambda function `cognito-reset` and the operator CLI
//! `reset-policy`.

pub mod caller;
pub mod config;
pub mod directory;
pub mod logging;
pub mod outcome;
pub mod policy;
pub mod request;
pub mod service;
pub mod sources;
