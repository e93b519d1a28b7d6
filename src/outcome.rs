//! How every record ends: the one table of outcomes, retry classes and HTTP statuses.
//!
//! A record ends as exactly one of RESET (or WOULD_RESET in dry-run), REJECTED(code) or
//! RETRY(code). A failure is a [`ResetError`]; [`ResetError::class`] decides once whether it can
//! succeed later without the requester changing anything, and [`ResetError::http_status`] is the
//! only place where a failure becomes an HTTP status.

use crate::directory::CognitoError;
use crate::policy::DenyReason;
use crate::request::InvalidRequest;

/// Whether a failed record may succeed if tried again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The requester must change something (or nothing can be done): acknowledge and audit.
    Rejected,
    /// Transient or operational: hand the record back for another try.
    Retry,
}

/// Why a record was not reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] InvalidRequest),
    #[error("the policy denies this reset ({0})")]
    Denied(DenyReason),
    #[error("the user is disabled")]
    UserDisabled,
    #[error(transparent)]
    Cognito(#[from] CognitoError),
    #[error("not started: the invocation is too close to its deadline")]
    Deadline,
    #[error("not started: an earlier message of the same FIFO group must be retried first")]
    FifoGroupHalted,
    #[error("only POST is allowed")]
    MethodNotAllowed,
    #[error("the body must be JSON (content-type application/json)")]
    UnsupportedMediaType,
    #[error(
        "the body is larger than {} bytes",
        crate::sources::http::MAX_BODY_BYTES
    )]
    PayloadTooLarge,
}

impl ResetError {
    /// The stable code reported to callers and in the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            ResetError::InvalidRequest(_) => "invalid-request",
            ResetError::Denied(reason) => reason.code(),
            ResetError::UserDisabled => "user-disabled",
            ResetError::Cognito(e) => e.code(),
            ResetError::Deadline => "deadline",
            ResetError::FifoGroupHalted => "fifo-group-halted",
            ResetError::MethodNotAllowed => "method-not-allowed",
            ResetError::UnsupportedMediaType => "unsupported-media-type",
            ResetError::PayloadTooLarge => "payload-too-large",
        }
    }

    /// Retry or not: decided here, once, for every kind of failure.
    pub fn class(&self) -> Class {
        match self {
            ResetError::InvalidRequest(_)
            | ResetError::Denied(_)
            | ResetError::UserDisabled
            | ResetError::MethodNotAllowed
            | ResetError::UnsupportedMediaType
            | ResetError::PayloadTooLarge => Class::Rejected,
            ResetError::Cognito(e) => e.class(),
            ResetError::Deadline | ResetError::FifoGroupHalted => Class::Retry,
        }
    }

    /// The HTTP status for this failure: the only place statuses are decided.
    pub fn http_status(&self) -> u16 {
        use crate::directory::CognitoErrorKind as K;
        match self {
            ResetError::InvalidRequest(_) => 400,
            ResetError::Denied(_) => 403,
            ResetError::UserDisabled => 409,
            ResetError::Cognito(e) => match e.kind {
                K::UserNotFound | K::PoolNotFound => 404,
                K::NotResettable => 409,
                K::CannotReset => 422,
                K::Throttled => 429,
                K::Upstream | K::Misconfigured => 502,
                K::Unavailable => 503,
            },
            ResetError::Deadline | ResetError::FifoGroupHalted => 503,
            ResetError::MethodNotAllowed => 405,
            ResetError::PayloadTooLarge => 413,
            ResetError::UnsupportedMediaType => 415,
        }
    }

    /// A message safe to show the caller: no internal error text.
    pub fn public_message(&self) -> String {
        use crate::directory::CognitoErrorKind as K;
        match self {
            ResetError::InvalidRequest(e) => e.message.clone(),
            ResetError::Denied(reason) => match reason {
                DenyReason::DeniedUser => "this user may not be reset by this service".into(),
                DenyReason::DeniedGroup => {
                    "this user is in a group that may not be reset by this service".into()
                }
                DenyReason::NoRuleForCaller => "no policy rule allows this caller".into(),
                DenyReason::PoolNotAllowed => {
                    "this caller may not reset users in this user pool".into()
                }
                DenyReason::UserNotAllowed => "this caller may not reset this user".into(),
            },
            ResetError::UserDisabled => "the user is disabled; enable it first".into(),
            ResetError::Cognito(e) => match e.kind {
                K::UserNotFound => "no such user in this user pool".into(),
                K::PoolNotFound => "no such user pool".into(),
                K::NotResettable => "Cognito does not allow resetting this user now".into(),
                K::CannotReset => {
                    "Cognito cannot reset this user (e.g. no verified email or phone)".into()
                }
                K::Throttled => "Cognito is throttling requests; try again later".into(),
                K::Upstream => "Cognito failed; try again later".into(),
                K::Misconfigured => {
                    "the service is misconfigured for Cognito; operators have been alerted".into()
                }
                K::Unavailable => "Cognito could not be reached; try again later".into(),
            },
            ResetError::Deadline => "the service ran out of time; try again".into(),
            ResetError::FifoGroupHalted => {
                "an earlier request in the same group must be retried first".into()
            }
            ResetError::MethodNotAllowed
            | ResetError::UnsupportedMediaType
            | ResetError::PayloadTooLarge => self.to_string(),
        }
    }

    /// Seconds to suggest in `Retry-After`, for throttling.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ResetError::Cognito(e) if e.kind == crate::directory::CognitoErrorKind::Throttled => {
                Some(1)
            }
            _ => None,
        }
    }
}

/// What happened to one record that was not a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The canonical Cognito username that was reset.
    pub username: String,
    /// The rule that allowed it.
    pub rule: String,
    /// True when `DRY_RUN` stopped short of the reset call.
    pub dry_run: bool,
    /// Cognito's request id of the reset call.
    pub cognito_request_id: Option<String>,
}

impl Reset {
    /// `RESET` or `WOULD_RESET`.
    pub fn outcome(&self) -> &'static str {
        if self.dry_run { "WOULD_RESET" } else { "RESET" }
    }
}

/// The outcome label of a failure: `REJECTED` or `RETRY`.
pub fn failure_outcome(error: &ResetError) -> &'static str {
    match error.class() {
        Class::Rejected => "REJECTED",
        Class::Retry => "RETRY",
    }
}
