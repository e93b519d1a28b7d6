//! What every record ends with: its audit line (target `audit`), the warning that goes with a
//! RETRY, and its outcome event (marked `replayed` for a replayed answer). Never includes
//! `ClientMetadata` or the body (the request's `Ticket`, which Cognito also receives in
//! `ClientMetadata.ticket`, is its own field).

use std::time::Duration;

use crate::caller;
use crate::deadline::wall_now;
use crate::event::{EventOutcome, OutcomeEvent};
use crate::outcome::{Class, Outcome, RecordResult, ResetError, Settled, failure_outcome};
use crate::record::Origin;
use crate::request::ResetRequest;

/// What the pipeline learned about a record, beyond its result.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// The canonical username, once resolved.
    pub canonical_username: Option<String>,
    /// The rule that allowed the reset.
    pub rule: Option<String>,
    /// The version of the policy that decided.
    pub policy_version: Option<String>,
    /// The content hash of the policy that decided (`sha256:…`).
    pub policy_content: Option<String>,
    /// The approval of a request that needed one.
    pub approval: Option<ApprovalNote>,
}

/// An approval as the audit line and the event report it (never the request's metadata).
#[derive(Debug, Default, Clone)]
pub struct ApprovalNote {
    pub approval_id: String,
    /// Who decided (its identities), once decided.
    pub approver: Option<String>,
    /// When the request was made.
    pub requested_at: Option<std::time::SystemTime>,
    /// When it was decided.
    pub decided_at: Option<std::time::SystemTime>,
    /// When it expires (while pending).
    pub expires_at: Option<std::time::SystemTime>,
}

/// The sign-out after a reset, as the audit line and the event report it.
#[derive(Debug, Default)]
struct SignOutReport<'a> {
    signed_out: Option<bool>,
    error: Option<&'a str>,
    only: bool,
}

/// A finished record, as the audit line and the outcome event report it.
#[derive(Debug)]
pub struct Done<'a> {
    pub origin: &'a Origin,
    pub request: Option<&'a ResetRequest>,
    /// The account of the request's pool (its `POOL_ROLES` role's, or the function's own).
    pub pool_account: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub findings: &'a Findings,
    pub result: &'a RecordResult,
    pub elapsed: Duration,
}

impl Done<'_> {
    /// The outcome label and the code the caller was told (empty for RESET and WOULD_RESET).
    pub fn outcome(&self) -> (Outcome, &str) {
        match self.result {
            Ok(Settled::Reset(reset)) => (reset.outcome(), ""),
            Ok(Settled::Replayed(answer)) => (answer.outcome, answer.code.as_deref().unwrap_or("")),
            Ok(Settled::Pending(_)) => (Outcome::Pending, ""),
            Err(error) => (failure_outcome(error), error.code()),
        }
    }

    /// The canonical username, from the pipeline or the replayed answer.
    fn canonical(&self) -> Option<&str> {
        match self.result {
            Ok(Settled::Replayed(answer)) => answer.username.as_deref(),
            _ => self.findings.canonical_username.as_deref(),
        }
    }

    /// The action of a RESET or WOULD_RESET (fresh or replayed).
    pub fn action(&self) -> Option<&'static str> {
        match self.result {
            Ok(Settled::Reset(reset)) => Some(reset.action.as_str()),
            Ok(Settled::Replayed(answer)) if answer.code.is_none() => {
                Some(answer.action.unwrap_or_default().as_str())
            }
            _ => None,
        }
    }

    /// The sign-out after a reset, when one was asked for.
    fn sign_out(&self) -> SignOutReport<'_> {
        match self.result {
            Ok(Settled::Reset(reset)) => SignOutReport {
                signed_out: reset.sign_out_done(),
                error: reset.sign_out_code(),
                only: reset.sign_out_only,
            },
            Ok(Settled::Replayed(answer)) => SignOutReport {
                signed_out: answer.signed_out,
                error: answer.sign_out_error.as_deref(),
                only: false,
            },
            Ok(Settled::Pending(_)) | Err(_) => SignOutReport::default(),
        }
    }

    /// Whether the caller was told less than the truth (a concealed failure).
    fn concealed(&self) -> bool {
        matches!(self.result, Err(ResetError::Concealed(_)))
    }

    /// Writes the audit line (and, for a RETRY, a warning with the cause chain).
    pub fn log(&self) {
        let origin = self.origin;
        let request = self.request;
        let pool = request.map(|r| r.user_pool_id.as_str()).unwrap_or("");
        let requested = request.map(|r| r.username.as_str()).unwrap_or("");
        let reason = request.and_then(|r| r.reason.as_deref()).unwrap_or("");
        let ticket = request.and_then(ResetRequest::ticket).unwrap_or("");
        let callers = caller::describe(&origin.caller);
        let canonical = self.canonical().unwrap_or("");
        let rule = self.findings.rule.as_deref().unwrap_or("");
        let policy_version = self.findings.policy_version.as_deref().unwrap_or("");
        let policy_content = self.findings.policy_content.as_deref().unwrap_or("");
        // Cognito's request id of the reset, or of the call that failed.
        let cognito_request_id = match self.result {
            Ok(Settled::Reset(reset)) => reset.cognito_request_id.as_deref(),
            Err(ResetError::Cognito(e)) => e.request_id.as_deref(),
            Err(ResetError::ResetUnconfirmed(cause) | ResetError::ResetUnresolved(cause)) => {
                match cause.as_ref() {
                    ResetError::Cognito(e) => e.request_id.as_deref(),
                    _ => None,
                }
            }
            _ => None,
        }
        .unwrap_or("");
        let duration_ms = self.elapsed.as_millis() as u64;
        let approval = self.findings.approval.as_ref();
        let at = |t: Option<std::time::SystemTime>| t.map(crate::outcome::rfc3339);
        let approval_id = approval.map(|a| a.approval_id.as_str()).unwrap_or("");
        let approver = approval.and_then(|a| a.approver.as_deref()).unwrap_or("");
        let requested_at = at(approval.and_then(|a| a.requested_at)).unwrap_or_default();
        let decided_at = at(approval.and_then(|a| a.decided_at)).unwrap_or_default();
        let expires_at = at(approval.and_then(|a| a.expires_at)).unwrap_or_default();
        let id = origin.audit_id();
        let (outcome, told_code) = self.outcome();
        // The true code, and what the caller was told where it differs.
        let (code, told) = match self.result {
            Err(error) if self.concealed() => (error.actual_code(), told_code),
            _ => (told_code, ""),
        };
        let replayed = matches!(self.result, Ok(Settled::Replayed(_)));
        let sign = self.sign_out();
        let reset_at = match self.result {
            Ok(Settled::Replayed(answer)) => answer.reset_at.clone(),
            Err(ResetError::RecentlyReset { reset_at, .. }) => {
                Some(crate::outcome::rfc3339(*reset_at))
            }
            _ => None,
        };
        tracing::info!(
            target: "audit",
            source = %origin.source,
            id = %id,
            index = origin.index,
            caller = %callers,
            user_pool_id = pool,
            pool_account = self.pool_account.unwrap_or(""),
            requested_username = requested,
            canonical_username = canonical,
            rule,
            policy_version,
            policy_content,
            outcome = outcome.as_str(),
            code,
            told,
            idempotency_key = self.idempotency_key.unwrap_or(""),
            replayed,
            action = self.action().unwrap_or(""),
            signed_out = sign.signed_out.map(|b| if b { "true" } else { "false" }).unwrap_or(""),
            sign_out_error = sign.error.unwrap_or(""),
            sign_out_only = sign.only,
            reset_at = reset_at.as_deref().unwrap_or(""),
            cognito_request_id,
            reason,
            ticket,
            approval_id,
            approver,
            requested_at,
            decided_at,
            expires_at,
            duration_ms,
            "record done"
        );
        match self.result {
            Err(error) if error.class() == Class::Retry => {
                let chain = crate::logging::cause_chain(error);
                tracing::warn!(id = %id, code, error.cause_chain = %chain, "record will be retried");
            }
            Err(error @ ResetError::ResetUnconfirmed(_)) => {
                let chain = crate::logging::cause_chain(error);
                tracing::warn!(
                    id = %id,
                    code,
                    error.cause_chain = %chain,
                    "the reset's answer was lost: the user may have a code; not sent again"
                );
            }
            _ => {}
        }
    }

    /// Whether this record reported an outcome given before: a replayed answer, or a
    /// redelivery that only retried the sign-out of its own earlier reset.
    pub fn replayed(&self) -> bool {
        match self.result {
            Ok(Settled::Replayed(_)) => true,
            Ok(Settled::Reset(reset)) => reset.sign_out_only,
            Ok(Settled::Pending(_)) | Err(_) => false,
        }
    }

    /// The outcome event of a final outcome: RESET, WOULD_RESET, REJECTED, or a RETRY on an SQS
    /// record's last receive (`GAVE_UP`). A concealed failure's event says no more than the
    /// caller was told.
    pub fn event(&self, last_receive: bool) -> Option<OutcomeEvent> {
        let (outcome, code) = self.outcome();
        let outcome = EventOutcome::for_record(outcome, last_receive)?;
        let origin = self.origin;
        let mut event = OutcomeEvent::new(
            outcome,
            origin.source.as_str(),
            &origin.audit_id(),
            &caller::describe(&origin.caller),
            wall_now(),
        );
        if let Some(request) = self.request {
            event = event.with_request(request);
        }
        event.pool_account = self.pool_account.map(str::to_owned);
        event.code = (!code.is_empty()).then(|| code.to_owned());
        if !self.concealed() {
            event.canonical_username = self.canonical().map(str::to_owned);
            event.rule = self.findings.rule.clone();
        }
        event.idempotency_key = self.idempotency_key.map(str::to_owned);
        event.policy_version = self.findings.policy_version.clone();
        // A redelivery that only retried the sign-out reports the same reset again: marked
        // `replayed`, so that consumers count one RESET per reset.
        event.replayed = self.replayed();
        event.action = self.action().map(str::to_owned);
        let sign = self.sign_out();
        event.signed_out = sign.signed_out;
        event.sign_out_error = sign.error.map(str::to_owned);
        event.sign_out_only = sign.only;
        if let Some(approval) = &self.findings.approval {
            let at = |t: Option<std::time::SystemTime>| t.map(crate::outcome::rfc3339);
            event.approval_id = Some(approval.approval_id.clone());
            event.approver = approval.approver.clone();
            event.requested_at = at(approval.requested_at);
            event.decided_at = at(approval.decided_at);
            event.expires_at = at(approval.expires_at);
        }
        Some(event)
    }
}
