//! How every record ends: the one table of outcomes, retry classes and HTTP statuses.
//!
//! A record ends as exactly one of RESET (or WOULD_RESET in dry-run), REJECTED(code) or
//! RETRY(code). A failure is a [`ResetError`]; [`ResetError::class`] decides once whether it can
//! succeed later without the requester changing anything, and [`ResetError::http_status`] is the
//! only place where a failure becomes an HTTP status.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::failure::{CognitoError, CognitoErrorKind, GuardError, GuardErrorKind};
use crate::policy::{DenyReason, TicketRefusal};
use crate::request::InvalidRequest;

/// `Retry-After` of a `delivery-limit` answer: the pool's sender used its daily quota, which
/// refills over the day; asking again within the hour is pointless (configure SES instead).
pub const DELIVERY_LIMIT_RETRY_AFTER_SECS: u64 = 3600;
/// `Retry-After` of an `attempt-limit` answer: Cognito's per-user attempt limit ("try after
/// some time"; Cognito does not publish the window), so not before a quarter of an hour.
pub const ATTEMPT_LIMIT_RETRY_AFTER_SECS: u64 = 900;

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
    /// A failure the caller may not learn about: no rule would admit the user for this caller
    /// and pool, so it is told `user-not-allowed`, exactly as for an existing user no rule
    /// admits. The audit line keeps the true reason.
    #[error("{0} (the caller is told user-not-allowed)")]
    Concealed(Box<ResetError>),
    #[error("the user is disabled")]
    UserDisabled,
    #[error(transparent)]
    Cognito(#[from] CognitoError),
    #[error("not done: the invocation ran out of time before this record finished")]
    Deadline,
    #[error("not started: an earlier message of the same FIFO group must be retried first")]
    FifoGroupHalted,
    #[error("the user was reset at {}, inside the cooldown window", rfc3339(*reset_at))]
    RecentlyReset {
        /// When the earlier reset (or the claim that may have reset) happened.
        reset_at: SystemTime,
        /// Whole seconds left in the window.
        retry_after_secs: u64,
        /// False when the earlier reset's answer was lost (or its sender died): it may or may
        /// not have sent a code (`reset-unconfirmed`).
        confirmed: bool,
    },
    /// The reset was sent and its answer is ambiguous (a timeout, a 5xx, an unreadable answer,
    /// cut at the deadline): the user may have a code, so it is final and never sent again by
    /// itself.
    #[error("the reset was sent but its answer was lost; the user may have received a code")]
    ResetUnconfirmed(#[source] Box<ResetError>),
    /// The reset was sent and its answer is ambiguous, on a user who was `CONFIRMED` before it:
    /// the SQS record is handed back, and its redelivery (once the call can no longer be in
    /// flight) reads the user's status, which says whether the reset happened.
    #[error("the reset was sent but its answer was lost; its redelivery reads the user's status")]
    ResetUnresolved(#[source] Box<ResetError>),
    #[error("another request for this user is being processed")]
    InProgress,
    #[error("the idempotency key was used before with a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    GuardUnavailable(GuardError),
    #[error("the policy in force was last read {age_secs} s ago, more than POLICY_MAX_AGE_SECONDS")]
    PolicyStale { age_secs: u64 },
    #[error("only POST is allowed")]
    MethodNotAllowed,
    #[error("the body must be JSON (content-type application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The user was invited and never signed in (`FORCE_CHANGE_PASSWORD`), and the rule's
    /// `invited` is `refuse`.
    #[error(
        "the user never signed in (an invitation is pending) and the rule does not resend invitations"
    )]
    InvitationPending,
    /// The user signed up and never confirmed (`UNCONFIRMED`): no reset, whatever the rule.
    #[error("the user signed up and never confirmed the account")]
    UserUnconfirmed,
    /// The user signs in through an external identity provider (`EXTERNAL_PROVIDER`): there is
    /// no Cognito password to reset, so no reset is sent.
    #[error("the user signs in through an external identity provider and has no password here")]
    ExternalUser,
    /// The request asked for `SignOut` and the rule's `signOut` is `never`.
    #[error("the request asks for a sign-out and the rule does not allow it")]
    SignOutNotAllowed,
    /// The caller performed its rule's `budget` of resets in the window.
    #[error(
        "the caller used its rule's budget of resets; the next one is admitted in {retry_after_secs} s"
    )]
    CallerBudgetExhausted {
        /// Whole seconds until the budget admits one more (at least 1).
        retry_after_secs: u64,
    },
    /// The rule (or every rule for this caller and pool) requires a `Ticket`, and the request
    /// names none.
    #[error("the policy requires a ticket and the request names none")]
    TicketRequired,
    /// The request's `Ticket` does not match the rule's (or any caller's rule's) pattern.
    #[error("the request's ticket does not match the policy's ticket pattern")]
    TicketInvalid,
    /// An approver denied the request (the request's final outcome).
    #[error("an approver denied the request")]
    ApprovalDenied,
    /// The requester tried to decide its own request.
    #[error("the requester may not decide its own request")]
    SelfApproval,
    /// The caller is not an approver of the request's rule (or of any rule).
    #[error("the caller is not an approver")]
    NotAnApprover,
    /// The approval's `ttlSeconds` passed without a decision.
    #[error("the approval expired without a decision")]
    ApprovalExpired,
    /// No such approval (an approver of some rule asked).
    #[error("no such approval")]
    ApprovalNotFound,
    /// `GET /requests/{id}`: no answer kept for this caller under this id.
    #[error("no request with this id is known to this caller")]
    RequestNotFound,
}

impl From<TicketRefusal> for ResetError {
    fn from(refusal: TicketRefusal) -> ResetError {
        match refusal {
            TicketRefusal::Required => ResetError::TicketRequired,
            TicketRefusal::Invalid => ResetError::TicketInvalid,
        }
    }
}

impl ResetError {
    /// The true code, for the audit line: for a concealed failure, the one the caller was not
    /// told.
    pub fn actual_code(&self) -> &'static str {
        match self {
            ResetError::Concealed(actual) => actual.actual_code(),
            other => other.code(),
        }
    }

    /// The stable code reported to callers (and, but for concealed failures, in the audit log).
    pub fn code(&self) -> &'static str {
        match self {
            ResetError::InvalidRequest(_) => "invalid-request",
            ResetError::Denied(reason) => reason.code(),
            ResetError::Concealed(_) => DenyReason::UserNotAllowed.code(),
            ResetError::UserDisabled => "user-disabled",
            ResetError::Cognito(e) => e.code(),
            ResetError::Deadline => "deadline",
            ResetError::FifoGroupHalted => "fifo-group-halted",
            ResetError::RecentlyReset {
                confirmed: true, ..
            } => "recently-reset",
            ResetError::RecentlyReset {
                confirmed: false, ..
            }
            | ResetError::ResetUnconfirmed(_) => "reset-unconfirmed",
            ResetError::ResetUnresolved(_) => "reset-unresolved",
            ResetError::InProgress => "in-progress",
            ResetError::IdempotencyKeyReused => "idempotency-key-reused",
            ResetError::GuardUnavailable(_) => "guard-unavailable",
            ResetError::PolicyStale { .. } => "policy-stale",
            ResetError::MethodNotAllowed => "method-not-allowed",
            ResetError::UnsupportedMediaType => "unsupported-media-type",
            ResetError::PayloadTooLarge { .. } => "payload-too-large",
            ResetError::InvitationPending => "invitation-pending",
            ResetError::UserUnconfirmed => "user-unconfirmed",
            ResetError::ExternalUser => "external-user",
            ResetError::SignOutNotAllowed => "sign-out-not-allowed",
            ResetError::CallerBudgetExhausted { .. } => "caller-budget-exhausted",
            ResetError::TicketRequired => "ticket-required",
            ResetError::TicketInvalid => "ticket-invalid",
            ResetError::ApprovalDenied => "approval-denied",
            ResetError::SelfApproval => "self-approval",
            ResetError::NotAnApprover => "not-an-approver",
            ResetError::ApprovalExpired => "approval-expired",
            ResetError::ApprovalNotFound => "approval-not-found",
            ResetError::RequestNotFound => "request-not-found",
        }
    }

    /// Retry or not: decided here, once, for every kind of failure.
    pub fn class(&self) -> Class {
        match self {
            ResetError::InvalidRequest(_)
            | ResetError::Denied(_)
            | ResetError::Concealed(_)
            | ResetError::UserDisabled
            | ResetError::RecentlyReset { .. }
            | ResetError::ResetUnconfirmed(_)
            | ResetError::IdempotencyKeyReused
            | ResetError::MethodNotAllowed
            | ResetError::UnsupportedMediaType
            | ResetError::PayloadTooLarge { .. }
            | ResetError::InvitationPending
            | ResetError::UserUnconfirmed
            | ResetError::ExternalUser
            | ResetError::SignOutNotAllowed
            | ResetError::CallerBudgetExhausted { .. } => Class::Rejected,
            ResetError::TicketRequired | ResetError::TicketInvalid => Class::Rejected,
            ResetError::ApprovalDenied
            | ResetError::SelfApproval
            | ResetError::NotAnApprover
            | ResetError::ApprovalExpired
            | ResetError::ApprovalNotFound
            | ResetError::RequestNotFound => Class::Rejected,
            ResetError::Cognito(e) => cognito_class(e.kind),
            ResetError::Deadline
            | ResetError::FifoGroupHalted
            | ResetError::InProgress
            | ResetError::ResetUnresolved(_)
            | ResetError::GuardUnavailable(_)
            | ResetError::PolicyStale { .. } => Class::Retry,
        }
    }

    /// The HTTP status for this failure: the only place statuses are decided.
    pub fn http_status(&self) -> u16 {
        use CognitoErrorKind as K;
        match self {
            ResetError::InvalidRequest(_) => 400,
            ResetError::Denied(_) | ResetError::Concealed(_) => 403,
            ResetError::UserDisabled => 409,
            ResetError::Cognito(e) => match e.kind {
                K::UserNotFound | K::PoolNotFound => 404,
                K::NotResettable => 409,
                K::CannotReset | K::TriggerRefused => 422,
                K::Throttled | K::AttemptLimit => 429,
                K::Upstream | K::Misconfigured | K::TriggerInvalidResponse => 502,
                K::Unavailable | K::DeliveryLimit => 503,
            },
            ResetError::Deadline | ResetError::FifoGroupHalted => 503,
            ResetError::RecentlyReset { .. } | ResetError::InProgress => 409,
            ResetError::ResetUnconfirmed(_) | ResetError::ResetUnresolved(_) => 502,
            ResetError::IdempotencyKeyReused => 422,
            ResetError::GuardUnavailable(_) | ResetError::PolicyStale { .. } => 503,
            ResetError::MethodNotAllowed => 405,
            ResetError::PayloadTooLarge { .. } => 413,
            ResetError::UnsupportedMediaType => 415,
            ResetError::InvitationPending
            | ResetError::UserUnconfirmed
            | ResetError::ExternalUser => 409,
            ResetError::SignOutNotAllowed => 403,
            ResetError::CallerBudgetExhausted { .. } => 429,
            ResetError::TicketRequired | ResetError::TicketInvalid => 400,
            ResetError::ApprovalDenied | ResetError::SelfApproval | ResetError::NotAnApprover => {
                403
            }
            ResetError::ApprovalExpired => 410,
            ResetError::ApprovalNotFound | ResetError::RequestNotFound => 404,
        }
    }

    /// A message safe to show the caller: no internal error text.
    pub fn public_message(&self) -> String {
        use CognitoErrorKind as K;
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
            ResetError::Concealed(_) => {
                ResetError::Denied(DenyReason::UserNotAllowed).public_message()
            }
            ResetError::UserDisabled => "the user is disabled; enable it first".into(),
            ResetError::Cognito(e) => match e.kind {
                K::UserNotFound => "no such user in this user pool".into(),
                K::PoolNotFound => "no such user pool".into(),
                K::NotResettable => "Cognito does not allow resetting this user now".into(),
                K::CannotReset => {
                    "Cognito cannot reset this user (e.g. no verified email or phone)".into()
                }
                K::Throttled => "Cognito is throttling requests; try again later".into(),
                K::DeliveryLimit => "the user pool reached its daily limit of messages (Cognito's \
                                     default email sender); nothing was sent: the pool's \
                                     operators must configure Amazon SES for it"
                    .into(),
                K::AttemptLimit => "Cognito's limit of reset attempts for this user is reached; \
                                    nothing was sent: try again after Retry-After seconds"
                    .into(),
                K::TriggerRefused => "the user pool's Lambda trigger refused the reset; nothing \
                                      was sent"
                    .into(),
                K::TriggerInvalidResponse => "the user pool's Lambda trigger gave Cognito an \
                                              invalid response; nothing was sent"
                    .into(),
                K::Upstream => "Cognito failed; try again later".into(),
                K::Misconfigured => {
                    "the service is misconfigured for Cognito and its operators must fix it; try again later".into()
                }
                K::Unavailable => "Cognito could not be reached; try again later".into(),
            },
            ResetError::Deadline => "the service ran out of time; try again".into(),
            ResetError::FifoGroupHalted => {
                "an earlier request in the same group must be retried first".into()
            }
            ResetError::RecentlyReset {
                confirmed: true, ..
            } => "this user was reset a moment ago; a new request is accepted after the cooldown"
                .into(),
            ResetError::RecentlyReset {
                confirmed: false, ..
            } => "a reset of this user was sent a moment ago and its answer was lost, so the user \
                  may have received a code; a new request is accepted after the cooldown"
                .into(),
            ResetError::ResetUnconfirmed(_) => {
                "the reset was sent to Cognito but its answer was lost, so the user may have \
                 received a code; it is not sent again automatically: check with the user first"
                    .into()
            }
            ResetError::ResetUnresolved(_) => {
                "the reset was sent to Cognito but its answer was lost; it is retried later, and \
                 then the user's status tells whether it happened (no second code is sent if it \
                 did)"
                    .into()
            }
            ResetError::InProgress => {
                "another request for this user is being processed; try again shortly".into()
            }
            ResetError::IdempotencyKeyReused => {
                "this idempotency key was used with a different request; use a new key".into()
            }
            ResetError::GuardUnavailable(_) => {
                "the duplicate-reset guard could not be reached; try again later".into()
            }
            ResetError::PolicyStale { .. } => {
                "the service cannot confirm its policy is current; try again later".into()
            }
            ResetError::MethodNotAllowed
            | ResetError::UnsupportedMediaType
            | ResetError::PayloadTooLarge { .. } => self.to_string(),
            ResetError::InvitationPending => {
                "the user never signed in (an invitation is pending), so there is no password to \
                 reset; the invitation can be resent where the policy allows it"
                    .into()
            }
            ResetError::UserUnconfirmed => {
                "the user signed up and never confirmed the account; it must be confirmed first"
                    .into()
            }
            ResetError::ExternalUser => {
                "the user signs in through an external identity provider and has no password to \
                 reset here; nothing was sent"
                    .into()
            }
            ResetError::SignOutNotAllowed => {
                "this caller may not sign users out (SignOut); nothing was done".into()
            }
            ResetError::CallerBudgetExhausted { .. } => {
                "this caller has used its budget of resets for now; try again after Retry-After \
                 seconds"
                    .into()
            }
            ResetError::TicketRequired => {
                "this reset must name the helpdesk ticket it is done for (Ticket); nothing was done"
                    .into()
            }
            ResetError::TicketInvalid => {
                "the Ticket is not in the form the policy requires; nothing was done".into()
            }
            ResetError::ApprovalDenied => {
                "an approver denied this reset; nothing was done".into()
            }
            ResetError::SelfApproval => {
                "the requester of a reset may not decide it; another approver must".into()
            }
            ResetError::NotAnApprover => "this caller may not decide approvals".into(),
            ResetError::ApprovalExpired => {
                "the approval's time ran out without a decision; nothing was done: ask again"
                    .into()
            }
            ResetError::ApprovalNotFound => "no such approval".into(),
            ResetError::RequestNotFound => "no such request".into(),
        }
    }

    /// Seconds to suggest in `Retry-After`: throttling, a request in progress, the rest of a
    /// cooldown window.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ResetError::Cognito(e) => match e.kind {
                CognitoErrorKind::Throttled => Some(1),
                CognitoErrorKind::DeliveryLimit => Some(DELIVERY_LIMIT_RETRY_AFTER_SECS),
                CognitoErrorKind::AttemptLimit => Some(ATTEMPT_LIMIT_RETRY_AFTER_SECS),
                _ => None,
            },
            ResetError::InProgress => Some(1),
            ResetError::RecentlyReset {
                retry_after_secs, ..
            }
            | ResetError::CallerBudgetExhausted { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Whether a REJECTED failure may pass later unchanged (a window ends, a quota refills):
    /// such an answer is never kept under an idempotency key, or its replay would say no when
    /// the truth is yes.
    pub fn passes_later(&self) -> bool {
        match self {
            ResetError::RecentlyReset { .. } | ResetError::CallerBudgetExhausted { .. } => true,
            ResetError::Cognito(e) => matches!(
                e.kind,
                CognitoErrorKind::DeliveryLimit | CognitoErrorKind::AttemptLimit
            ),
            _ => false,
        }
    }
}

impl ResetError {
    /// One failure of every kind and code a record can end with (every Cognito kind, every deny
    /// reason): what the metrics, the documentation and the alarms are checked against.
    pub fn samples() -> Vec<ResetError> {
        use crate::failure::Effect;
        use CognitoErrorKind as K;
        let cognito = |kind| {
            CognitoError::new(
                kind,
                crate::failure::cognito_operation::RESET_PASSWORD,
                Effect::None,
                "x",
            )
        };
        let mut all: Vec<ResetError> = [
            K::UserNotFound,
            K::PoolNotFound,
            K::NotResettable,
            K::CannotReset,
            K::Throttled,
            K::DeliveryLimit,
            K::AttemptLimit,
            K::TriggerRefused,
            K::TriggerInvalidResponse,
            K::Upstream,
            K::Misconfigured,
            K::Unavailable,
        ]
        .into_iter()
        .map(|kind| ResetError::Cognito(cognito(kind)))
        .collect();
        all.extend(
            [
                DenyReason::DeniedUser,
                DenyReason::DeniedGroup,
                DenyReason::NoRuleForCaller,
                DenyReason::PoolNotAllowed,
                DenyReason::UserNotAllowed,
            ]
            .map(ResetError::Denied),
        );
        let at = UNIX_EPOCH;
        all.extend([
            ResetError::InvalidRequest(InvalidRequest {
                field: None,
                message: "x".into(),
            }),
            ResetError::Concealed(Box::new(ResetError::UserDisabled)),
            ResetError::UserDisabled,
            ResetError::Deadline,
            ResetError::FifoGroupHalted,
            ResetError::RecentlyReset {
                reset_at: at,
                retry_after_secs: 1,
                confirmed: true,
            },
            ResetError::RecentlyReset {
                reset_at: at,
                retry_after_secs: 1,
                confirmed: false,
            },
            ResetError::ResetUnconfirmed(Box::new(ResetError::Deadline)),
            ResetError::ResetUnresolved(Box::new(ResetError::Deadline)),
            ResetError::InProgress,
            ResetError::IdempotencyKeyReused,
            ResetError::GuardUnavailable(GuardError::new(GuardErrorKind::Upstream, "x", "x")),
            ResetError::PolicyStale { age_secs: 1 },
            ResetError::MethodNotAllowed,
            ResetError::UnsupportedMediaType,
            ResetError::PayloadTooLarge { limit: 1 },
            ResetError::InvitationPending,
            ResetError::UserUnconfirmed,
            ResetError::ExternalUser,
            ResetError::SignOutNotAllowed,
            ResetError::CallerBudgetExhausted {
                retry_after_secs: 1,
            },
            ResetError::TicketRequired,
            ResetError::TicketInvalid,
            ResetError::ApprovalDenied,
            ResetError::SelfApproval,
            ResetError::NotAnApprover,
            ResetError::ApprovalExpired,
            ResetError::ApprovalNotFound,
            ResetError::RequestNotFound,
        ]);
        // A new variant must be added above: this match has no wildcard.
        for error in &all {
            match error {
                ResetError::InvalidRequest(_)
                | ResetError::Denied(_)
                | ResetError::Concealed(_)
                | ResetError::UserDisabled
                | ResetError::Cognito(_)
                | ResetError::Deadline
                | ResetError::FifoGroupHalted
                | ResetError::RecentlyReset { .. }
                | ResetError::ResetUnconfirmed(_)
                | ResetError::ResetUnresolved(_)
                | ResetError::InProgress
                | ResetError::IdempotencyKeyReused
                | ResetError::GuardUnavailable(_)
                | ResetError::PolicyStale { .. }
                | ResetError::MethodNotAllowed
                | ResetError::UnsupportedMediaType
                | ResetError::PayloadTooLarge { .. }
                | ResetError::InvitationPending
                | ResetError::UserUnconfirmed
                | ResetError::ExternalUser
                | ResetError::SignOutNotAllowed
                | ResetError::CallerBudgetExhausted { .. }
                | ResetError::TicketRequired
                | ResetError::TicketInvalid
                | ResetError::ApprovalDenied
                | ResetError::SelfApproval
                | ResetError::NotAnApprover
                | ResetError::ApprovalExpired
                | ResetError::ApprovalNotFound
                | ResetError::RequestNotFound => {}
            }
        }
        all
    }
}

/// Retry or not, for each kind of Cognito failure: a refusal about the user is final; throttling,
/// outages and misconfiguration may pass. Cognito's daily delivery limit and per-user attempt
/// limit are final too: a redelivery in minutes cannot pass (the operator re-drives them from
/// the report once the pool can send), and the pool's trigger refusals proved nothing was sent.
fn cognito_class(kind: CognitoErrorKind) -> Class {
    use CognitoErrorKind as K;
    match kind {
        K::UserNotFound
        | K::PoolNotFound
        | K::NotResettable
        | K::CannotReset
        | K::DeliveryLimit
        | K::AttemptLimit
        | K::TriggerRefused
        | K::TriggerInvalidResponse => Class::Rejected,
        K::Throttled | K::Upstream | K::Misconfigured | K::Unavailable => Class::Retry,
    }
}

/// A record's outcome: the label of the audit line, the metrics and the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The password was reset.
    Reset,
    /// Dry run: the password would have been reset.
    WouldReset,
    /// Refused for good: acknowledged, not retried.
    Rejected,
    /// Not done: hand the record back for another try.
    Retry,
    /// Checked and waiting for a second person's approval (a rule's `approval`).
    Pending,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Reset,
        Outcome::WouldReset,
        Outcome::Rejected,
        Outcome::Retry,
        Outcome::Pending,
    ];

    /// `RESET`, `WOULD_RESET`, `REJECTED`, `RETRY` or `PENDING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Reset => "RESET",
            Outcome::WouldReset => "WOULD_RESET",
            Outcome::Rejected => "REJECTED",
            Outcome::Retry => "RETRY",
            Outcome::Pending => "PENDING",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a RESET did: a password reset, or an invited user's invitation sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `AdminResetUserPassword`.
    #[default]
    ResetPassword,
    /// `AdminCreateUser` with `MessageAction=RESEND` (a user who never signed in).
    ResendInvitation,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 2] = [Action::ResetPassword, Action::ResendInvitation];

    /// `reset-password` or `resend-invitation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ResetPassword => "reset-password",
            Action::ResendInvitation => "resend-invitation",
        }
    }
}

/// How the sign-out after a reset went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedOut {
    /// `AdminUserGlobalSignOut` succeeded.
    Done,
    /// It failed with this Cognito failure code (`throttled`, ...). `retry`: the record is handed
    /// back (an SQS record with the guard on) and its redelivery only signs out again.
    Failed { code: &'static str, retry: bool },
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
    /// A password reset or a resent invitation.
    pub action: Action,
    /// The sign-out after the reset, when the rule or the request asked for one (never for a
    /// user who never signed in).
    pub signed_out: Option<SignedOut>,
    /// True when this delivery only retried the sign-out of a reset done by an earlier one.
    pub sign_out_only: bool,
}

impl Reset {
    /// A reset of `username` under `rule`, before any sign-out.
    pub fn new(username: String, rule: String, action: Action, dry_run: bool) -> Reset {
        Reset {
            username,
            rule,
            dry_run,
            cognito_request_id: None,
            action,
            signed_out: None,
            sign_out_only: false,
        }
    }

    /// Whether the record must be handed back so that its redelivery signs out again.
    pub fn retry_sign_out(&self) -> bool {
        matches!(self.signed_out, Some(SignedOut::Failed { retry: true, .. }))
    }

    /// Whether the sign-out after the reset happened (`None`: none was asked for).
    pub fn sign_out_done(&self) -> Option<bool> {
        self.signed_out.as_ref().map(|s| *s == SignedOut::Done)
    }

    /// The failure code of the sign-out, if it failed.
    pub fn sign_out_code(&self) -> Option<&'static str> {
        match self.signed_out {
            Some(SignedOut::Failed { code, .. }) => Some(code),
            _ => None,
        }
    }

    /// `RESET` or `WOULD_RESET`.
    pub fn outcome(&self) -> Outcome {
        if self.dry_run {
            Outcome::WouldReset
        } else {
            Outcome::Reset
        }
    }
}

impl From<GuardError> for ResetError {
    fn from(error: GuardError) -> ResetError {
        if error.kind == GuardErrorKind::Deadline {
            ResetError::Deadline
        } else {
            ResetError::GuardUnavailable(error)
        }
    }
}

/// A request checked and kept for a second person's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub approval_id: String,
    /// When the approval expires.
    pub expires_at: SystemTime,
    /// The canonical username.
    pub username: String,
    /// The rule that requires the approval.
    pub rule: String,
}

/// How a record ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Reset now (or would be, in dry run).
    Reset(Reset),
    /// The same request was answered before under this idempotency key: that answer again.
    Replayed(Answer),
    /// Waiting for approval: nothing was performed.
    Pending(Pending),
}

/// The result of one record.
pub type RecordResult = Result<Settled, ResetError>;

/// Whether a queue hands the record back for another delivery: a RETRY, or a RESET whose
/// sign-out failed in a way that may pass (the redelivery only signs out).
pub fn hand_back(result: &RecordResult) -> bool {
    match result {
        Err(error) => error.class() == Class::Retry,
        Ok(Settled::Reset(reset)) => reset.retry_sign_out(),
        Ok(Settled::Replayed(_) | Settled::Pending(_)) => false,
    }
}

/// What the caller is told about one record, independent of the transport: the guard keeps it
/// to replay it, and the HTTP source renders it (fresh or replayed) in one way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub outcome: Outcome,
    /// The failure's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The HTTP status of this answer.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pool_id: Option<String>,
    /// The canonical username, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub request_id: String,
    /// For `recently-reset`: when the earlier reset happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
    /// On success: `reset-password` or `resend-invitation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// On success, when a sign-out was asked for: whether it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_out: Option<bool>,
    /// The sign-out's failure code, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_out_error: Option<String>,
    /// The request's `Ticket`, when it named one (see [`Answer::with_ticket`]). Kept with the
    /// answer for the record; the body callers see does not repeat it (they sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// PENDING: the approval's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// PENDING: when the approval expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Answer {
    /// The answer to a reset or a failure (a replay is already an answer).
    pub fn new(
        result: Result<&Reset, &ResetError>,
        pool: Option<&str>,
        request_id: &str,
    ) -> Answer {
        match result {
            Ok(reset) => Answer {
                outcome: reset.outcome(),
                code: None,
                status: 200,
                message: None,
                user_pool_id: pool.map(str::to_owned),
                username: Some(reset.username.clone()),
                request_id: request_id.to_owned(),
                reset_at: None,
                action: Some(reset.action),
                signed_out: reset.sign_out_done(),
                sign_out_error: reset.sign_out_code().map(str::to_owned),
                ticket: None,
                approval_id: None,
                expires_at: None,
            },
            Err(error) => Answer {
                outcome: failure_outcome(error),
                code: Some(error.code().to_owned()),
                status: error.http_status(),
                message: Some(error.public_message()),
                user_pool_id: None,
                username: None,
                request_id: request_id.to_owned(),
                reset_at: match error {
                    ResetError::RecentlyReset { reset_at, .. } => Some(rfc3339(*reset_at)),
                    _ => None,
                },
                action: None,
                signed_out: None,
                sign_out_error: None,
                ticket: None,
                approval_id: None,
                expires_at: None,
            },
        }
    }

    /// The final answer of an ambiguous reset, `reset-unconfirmed` (HTTP 502), whatever its
    /// cause (the answer names none): what a key keeps for a reset its retries may still
    /// decide, including an SQS record handed back for its redelivery to decide.
    pub fn unconfirmed(pool: Option<&str>, request_id: &str) -> Answer {
        let error = ResetError::ResetUnconfirmed(Box::new(ResetError::Deadline));
        Answer::new(Err(&error), pool, request_id)
    }

    /// The answer to a request that waits for approval: HTTP 202.
    pub fn pending(pending: &Pending, pool: Option<&str>, request_id: &str) -> Answer {
        Answer {
            outcome: Outcome::Pending,
            code: None,
            status: 202,
            message: None,
            user_pool_id: pool.map(str::to_owned),
            username: None,
            request_id: request_id.to_owned(),
            reset_at: None,
            action: None,
            signed_out: None,
            sign_out_error: None,
            ticket: None,
            approval_id: Some(pending.approval_id.clone()),
            expires_at: Some(rfc3339(pending.expires_at)),
        }
    }

    /// The answer naming the request's ticket (kept, replayed and shown as `ticket`).
    pub fn with_ticket(mut self, ticket: Option<&str>) -> Answer {
        self.ticket = ticket.map(str::to_owned);
        self
    }

    /// The JSON body callers see: `{outcome, userPoolId, username, action, requestId}` (and
    /// `signedOut`, `signOutError`) on success,
    /// `{error, message, requestId}` (and `resetAt`) on failure.
    pub fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        match &self.code {
            None if self.outcome == Outcome::Pending => {
                body.insert("outcome".into(), Value::from(self.outcome.as_str()));
                body.insert("userPoolId".into(), self.user_pool_id.clone().into());
                body.insert("approvalId".into(), self.approval_id.clone().into());
                body.insert("expiresAt".into(), self.expires_at.clone().into());
            }
            None => {
                body.insert("outcome".into(), Value::from(self.outcome.as_str()));
                body.insert("userPoolId".into(), self.user_pool_id.clone().into());
                body.insert("username".into(), self.username.clone().into());
                // An answer kept before actions existed was a password reset.
                let action = self.action.unwrap_or_default();
                body.insert("action".into(), Value::from(action.as_str()));
                if let Some(signed_out) = self.signed_out {
                    body.insert("signedOut".into(), Value::Bool(signed_out));
                }
                if let Some(code) = &self.sign_out_error {
                    body.insert("signOutError".into(), Value::from(code.as_str()));
                }
            }
            Some(code) => {
                body.insert("error".into(), Value::from(code.as_str()));
                body.insert("message".into(), self.message.clone().into());
            }
        }
        body.insert("requestId".into(), Value::from(self.request_id.as_str()));
        if let Some(at) = &self.reset_at {
            body.insert("resetAt".into(), Value::from(at.as_str()));
        }
        body
    }
}

/// A time as RFC 3339 in UTC, to the second (`2026-11-27T17:30:00Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = crate::deadline::epoch_secs_floor(time);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The outcome of a failure: `REJECTED` or `RETRY`.
pub fn failure_outcome(error: &ResetError) -> Outcome {
    match error.class() {
        Class::Rejected => Outcome::Rejected,
        Class::Retry => Outcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_answer_that_passes_later_says_when() {
        // A 409 or 429 that passes later carries Retry-After (the one a caller waits on); a
        // final refusal carries none.
        for error in ResetError::samples() {
            let expected = match error.code() {
                "throttled" | "in-progress" => Some(1),
                "delivery-limit" => Some(DELIVERY_LIMIT_RETRY_AFTER_SECS),
                "attempt-limit" => Some(ATTEMPT_LIMIT_RETRY_AFTER_SECS),
                "recently-reset" | "caller-budget-exhausted" => Some(1),
                "reset-unconfirmed" if matches!(error, ResetError::RecentlyReset { .. }) => Some(1),
                _ => None,
            };
            assert_eq!(error.retry_after_secs(), expected, "{}", error.code());
        }
    }

    #[test]
    fn a_ticket_refusal_keeps_its_code_as_a_400() {
        for refusal in [TicketRefusal::Required, TicketRefusal::Invalid] {
            let error = ResetError::from(refusal);
            assert_eq!(error.code(), refusal.code());
            assert_eq!(error.http_status(), 400);
            assert_eq!(error.class(), Class::Rejected);
        }
    }

    #[test]
    fn rfc3339_spells_dates_like_the_calendar() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_800_600);
        assert_eq!(rfc3339(t), "2026-11-27T17:30:00Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }
}
