//! The one audit line every record ends with (target `audit`), and the warning that goes with a
//! RETRY. Never includes `ClientMetadata` or the body.

use std::time::Duration;

use crate::caller;
use crate::outcome::{Class, RecordResult, ResetError, Settled, failure_outcome};
use crate::record::Origin;
use crate::request::ResetRequest;

/// What the pipeline learned about a record, beyond its result.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// The canonical username, once resolved.
    pub canonical_username: Option<String>,
    /// The rule that allowed the reset.
    pub rule: Option<String>,
}

/// Writes the audit line of one record.
pub fn record(
    origin: &Origin,
    request: Option<&ResetRequest>,
    idempotency_key: Option<&str>,
    findings: &Findings,
    result: &RecordResult,
    elapsed: Duration,
) {
    let pool = request.map(|r| r.user_pool_id.as_str()).unwrap_or("");
    let requested = request.map(|r| r.username.as_str()).unwrap_or("");
    let reason = request.and_then(|r| r.reason.as_deref()).unwrap_or("");
    let callers = caller::describe(&origin.caller);
    let mut canonical = findings.canonical_username.as_deref().unwrap_or("");
    let rule = findings.rule.as_deref().unwrap_or("");
    // Cognito's request id of the reset, or of the call that failed.
    let cognito_request_id = match result {
        Ok(Settled::Reset(reset)) => reset.cognito_request_id.as_deref(),
        Err(ResetError::Cognito(e)) => e.request_id.as_deref(),
        _ => None,
    }
    .unwrap_or("");
    let duration_ms = elapsed.as_millis() as u64;
    let id = origin.audit_id();
    let (outcome, code, replayed, reset_at) = match result {
        Ok(Settled::Reset(reset)) => (reset.outcome(), "", false, None),
        Ok(Settled::Replayed(answer)) => {
            if let Some(username) = &answer.username {
                canonical = username;
            }
            (
                answer.outcome.as_str(),
                answer.code.as_deref().unwrap_or(""),
                true,
                answer.reset_at.clone(),
            )
        }
        Err(error) => (
            failure_outcome(error),
            error.actual_code(),
            false,
            match error {
                ResetError::RecentlyReset { reset_at, .. } => {
                    Some(crate::outcome::rfc3339(*reset_at))
                }
                _ => None,
            },
        ),
    };
    // What the caller was told, where it differs from the true code (a concealed failure).
    let told = match result {
        Err(error) if error.actual_code() != error.code() => error.code(),
        _ => "",
    };
    tracing::info!(
        target: "audit",
        source = %origin.source,
        id = %id,
        index = origin.index,
        caller = %callers,
        user_pool_id = pool,
        requested_username = requested,
        canonical_username = canonical,
        rule,
        outcome,
        code,
        told,
        idempotency_key = idempotency_key.unwrap_or(""),
        replayed,
        reset_at = reset_at.as_deref().unwrap_or(""),
        cognito_request_id,
        reason,
        duration_ms,
        "record done"
    );
    if let Err(error) = result
        && error.class() == Class::Retry
    {
        let chain = cause_chain(error);
        tracing::warn!(id = %id, code, error.cause_chain = %chain, "record will be retried");
    }
}

/// An error and its sources, `: `-separated, for logs (never for callers).
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
