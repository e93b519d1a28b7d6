//! The model's own failure kinds: what a failed call to another service means for a record.
//!
//! The AWS layer ([`crate::aws`]) classifies every SDK error once, into these types; nothing here
//! knows an SDK type. Two questions are answered for every failure: which [`Fault`] it is (how
//! an operator fixes it, whether a retry may pass) and, for a call with an effect, whether the
//! call may have taken effect ([`Effect`]): a reset whose answer is ambiguous may have mailed a
//! code, and is never sent again by itself.

use std::error::Error as StdError;

/// The classes every AWS call's failure falls into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Throttling or a quota: nothing happened, later may pass.
    Throttled,
    /// Timeouts and connection failures.
    Unavailable,
    /// Access denied, a missing resource the configuration names, bad credentials.
    Misconfigured,
    /// The service's internal errors, unreadable answers and anything not named.
    Upstream,
}

impl Fault {
    /// `throttled`, `unavailable`, `misconfigured` or `upstream-error`.
    pub fn code(self) -> &'static str {
        match self {
            Fault::Throttled => "throttled",
            Fault::Unavailable => "unavailable",
            Fault::Misconfigured => "misconfigured",
            Fault::Upstream => "upstream-error",
        }
    }
}

/// Whether a failed call may have been performed by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The answer proves nothing happened: a refusal (4xx), throttling, a request that never
    /// left (connection refused, construction failed). Safe to send again.
    None,
    /// The request may have been performed: a timeout, a 5xx, an unreadable answer, a
    /// connection lost after sending. For a reset: the user may have a code.
    Unknown,
}

/// What a Cognito failure means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CognitoErrorKind {
    /// `UserNotFoundException`.
    UserNotFound,
    /// `ResourceNotFoundException`: no such user pool.
    PoolNotFound,
    /// `NotAuthorizedException`: the user cannot be reset in its current state.
    NotResettable,
    /// `InvalidParameterException`: e.g. no verified email or phone to send the code to.
    CannotReset,
    /// `TooManyRequestsException`, throttling, and a `LimitExceededException` whose message names
    /// neither limit below.
    Throttled,
    /// `LimitExceededException` "Exceeded daily email limit ..." (or SMS): the pool's sender
    /// used its daily quota. Nothing was sent; retrying today cannot pass until the pool sends
    /// with its own SES configuration (or the day's quota refills).
    DeliveryLimit,
    /// `LimitExceededException` "Attempt limit exceeded, please try after some time.": Cognito's
    /// per-user limit on reset attempts. Nothing was sent; a retry in minutes cannot pass.
    AttemptLimit,
    /// `UserLambdaValidationException` on a reset: the pool's custom-message trigger raised an
    /// error, so Cognito built no message and sent nothing.
    TriggerRefused,
    /// `InvalidLambdaResponseException` on a reset: the pool's custom-message trigger answered
    /// something Cognito cannot read, so it had no message to send and sent nothing.
    TriggerInvalidResponse,
    /// Cognito's internal errors, unknown modeled errors, bad responses, and
    /// `UnexpectedLambdaException` (a trigger that could not be run to its end: with
    /// [`Effect::Unknown`], since a custom sender may have sent the code).
    Upstream,
    /// SMS/email role errors, access denied, bad or missing credentials.
    Misconfigured,
    /// Timeouts and connection failures.
    Unavailable,
}

impl From<Fault> for CognitoErrorKind {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Throttled => CognitoErrorKind::Throttled,
            Fault::Unavailable => CognitoErrorKind::Unavailable,
            Fault::Misconfigured => CognitoErrorKind::Misconfigured,
            Fault::Upstream => CognitoErrorKind::Upstream,
        }
    }
}

/// The Cognito operations the function calls, by their API names: the `operation` of a
/// [`CognitoError`], the latency metrics' dimension and the audit's call names.
pub mod cognito_operation {
    pub const GET_USER: &str = "AdminGetUser";
    pub const LIST_GROUPS: &str = "AdminListGroupsForUser";
    pub const RESET_PASSWORD: &str = "AdminResetUserPassword";
    pub const CREATE_USER: &str = "AdminCreateUser";
    pub const GLOBAL_SIGN_OUT: &str = "AdminUserGlobalSignOut";
    /// Every one of them.
    pub const ALL: [&str; 5] = [
        GET_USER,
        LIST_GROUPS,
        RESET_PASSWORD,
        CREATE_USER,
        GLOBAL_SIGN_OUT,
    ];
}

/// A classified Cognito failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("cognito {operation} failed ({})", self.code())]
pub struct CognitoError {
    pub kind: CognitoErrorKind,
    /// The Cognito operation that failed.
    pub operation: &'static str,
    /// Cognito's request id, when a response came back.
    pub request_id: Option<String>,
    /// Whether the call may have been performed although it failed.
    pub effect: Effect,
    /// The service's error code, when it sent one (e.g. `LimitExceededException`).
    pub service_code: Option<String>,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl CognitoError {
    /// A failure of `operation`, caused by `source`.
    pub fn new(
        kind: CognitoErrorKind,
        operation: &'static str,
        effect: Effect,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> CognitoError {
        CognitoError {
            kind,
            operation,
            request_id: None,
            effect,
            service_code: None,
            source: source.into(),
        }
    }

    /// Sets Cognito's request id and error code.
    pub fn with_ids(mut self, request_id: Option<String>, service_code: Option<String>) -> Self {
        self.request_id = request_id;
        self.service_code = service_code;
        self
    }

    /// The outcome code (`user-not-found`, `throttled`, ...).
    pub fn code(&self) -> &'static str {
        match self.kind {
            CognitoErrorKind::UserNotFound => "user-not-found",
            CognitoErrorKind::PoolNotFound => "pool-not-found",
            CognitoErrorKind::NotResettable => "not-resettable",
            CognitoErrorKind::CannotReset => "cannot-reset",
            CognitoErrorKind::Throttled => "throttled",
            CognitoErrorKind::DeliveryLimit => "delivery-limit",
            CognitoErrorKind::AttemptLimit => "attempt-limit",
            CognitoErrorKind::TriggerRefused => "trigger-refused",
            CognitoErrorKind::TriggerInvalidResponse => "trigger-invalid-response",
            CognitoErrorKind::Upstream => "upstream-error",
            CognitoErrorKind::Misconfigured => "misconfigured",
            CognitoErrorKind::Unavailable => "unavailable",
        }
    }

    /// Whether the call may have taken effect although it failed.
    pub fn outcome_unknown(&self) -> bool {
        self.effect == Effect::Unknown
    }
}

/// Why the guard could not answer: every kind but `Deadline` is RETRY `guard-unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardErrorKind {
    /// Throttling or provisioned-throughput errors.
    Throttled,
    /// Timeouts and connection failures.
    Unavailable,
    /// Access denied, missing table, bad credentials, a malformed item.
    Misconfigured,
    /// DynamoDB's internal errors and anything not named.
    Upstream,
    /// No time left before `deadline − DEADLINE_MARGIN_MS` (the record is RETRY `deadline`).
    Deadline,
}

impl From<Fault> for GuardErrorKind {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Throttled => GuardErrorKind::Throttled,
            Fault::Unavailable => GuardErrorKind::Unavailable,
            Fault::Misconfigured => GuardErrorKind::Misconfigured,
            Fault::Upstream => GuardErrorKind::Upstream,
        }
    }
}

/// A classified failure of the guard's table, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("guard {operation} failed ({kind:?})")]
pub struct GuardError {
    pub kind: GuardErrorKind,
    /// The operation that failed.
    pub operation: &'static str,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl GuardError {
    /// A failure of `operation`, caused by `source`.
    pub fn new(
        kind: GuardErrorKind,
        operation: &'static str,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> GuardError {
        GuardError {
            kind,
            operation,
            source: source.into(),
        }
    }
}
