//! The outcome event of a record: what whoever asked (a ticketing system, a portal) learns of it.
//!
//! One event per record that reached a final outcome (`RESET`, `WOULD_RESET`, `REJECTED`, or
//! `GAVE_UP` for a RETRY on an SQS record's last receive). A replayed answer's event is marked
//! `"replayed": true`, so consumers that count outcomes count each request once. The event never
//! carries the request's `ClientMetadata`: [`OutcomeEvent`] has no field for it.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::outcome::Outcome;
use crate::request::ResetRequest;

/// The final outcome an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventOutcome {
    /// The password was reset.
    Reset,
    /// Dry run: the password would have been reset.
    WouldReset,
    /// Refused for good (policy, unknown user, invalid request, ...).
    Rejected,
    /// A RETRY on an SQS record's last receive: its next stop is the dead-letter queue.
    GaveUp,
    /// Checked and waiting for a second person (a rule's `approval`): notify the approvers.
    PendingApproval,
}

impl EventOutcome {
    /// `RESET`, `WOULD_RESET`, `REJECTED` or `GAVE_UP`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Reset => "RESET",
            EventOutcome::WouldReset => "WOULD_RESET",
            EventOutcome::Rejected => "REJECTED",
            EventOutcome::GaveUp => "GAVE_UP",
            EventOutcome::PendingApproval => "PENDING_APPROVAL",
        }
    }

    /// The event for a record's outcome, or `None` when it is not final: a RETRY is final
    /// (`GAVE_UP`) only on the record's last receive (see [`is_last_receive`]).
    pub fn for_record(outcome: Outcome, last_receive: bool) -> Option<EventOutcome> {
        match outcome {
            Outcome::Reset => Some(EventOutcome::Reset),
            Outcome::WouldReset => Some(EventOutcome::WouldReset),
            Outcome::Rejected => Some(EventOutcome::Rejected),
            Outcome::Retry if last_receive => Some(EventOutcome::GaveUp),
            Outcome::Retry => None,
            Outcome::Pending => Some(EventOutcome::PendingApproval),
        }
    }
}

/// Whether an SQS record is on its last receive: its `ApproximateReceiveCount` attribute has
/// reached `MAX_RECEIVE_COUNT` (the queue's redrive policy). Without either, it is not (an HTTP
/// record, or no dead-letter queue: the message will be received again).
pub fn is_last_receive(receive_count: Option<&str>, max_receive_count: Option<u32>) -> bool {
    match (
        receive_count.and_then(|c| c.trim().parse::<u32>().ok()),
        max_receive_count,
    ) {
        (Some(count), Some(max)) => count >= max,
        _ => false,
    }
}

/// The `detail` of one outcome event. Absent values are left out of the JSON.
///
/// There is deliberately no field for `ClientMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeEvent {
    pub outcome: EventOutcome,
    /// The outcome code (`denied-user`, `throttled`, ...); none for RESET and WOULD_RESET.
    /// REJECTED `delivery-limit` (the pool's sender used its daily quota) and `attempt-limit`
    /// (Cognito's per-user attempt limit) say nothing was sent and the request may pass later:
    /// they are final here (a redelivery cannot pass soon) and re-driven by the operator
    /// (`reset-enqueue --retry-from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_pool_id: Option<String>,
    /// The account the pool is in: its `POOL_ROLES` role's, or the function's own
    /// (`FUNCTION_ACCOUNT_ID`; absent when that is not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_account: Option<String>,
    /// The username as the request gave it (username, alias or `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_username: Option<String>,
    /// Cognito's canonical username, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_username: Option<String>,
    /// The caller's identities as the audit line describes them.
    pub caller: String,
    /// The policy rule that allowed the reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The integration: `http-api`, `sqs`, ... (see `record::Source`).
    pub source: String,
    /// The request id (HTTP) or message id (SQS).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The request's `Reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request's `Ticket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The version of the policy that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// True when this is the replay of an answer given before under the same idempotency
    /// key: the outcome was counted then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// For RESET and WOULD_RESET: `reset-password` or `resend-invitation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When a sign-out followed the reset: whether it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_out: Option<bool>,
    /// The sign-out's failure code, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_out_error: Option<String>,
    /// True when this delivery only retried the sign-out of an earlier delivery's reset (that
    /// reset's event was sent then).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sign_out_only: bool,
    /// The approval of a request that needed one (PENDING_APPROVAL, and the final outcome
    /// of an approved or denied request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// PENDING_APPROVAL: when the approval expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Who decided the approval (its identities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// When the request was made (RFC 3339), for a decided approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    /// When the approval was decided (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// When the record finished (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::outcome::rfc3339(*time))
}

impl OutcomeEvent {
    /// An event with only the required fields; set the others directly or with
    /// [`OutcomeEvent::with_request`].
    pub fn new(
        outcome: EventOutcome,
        source: &str,
        id: &str,
        caller: &str,
        time: SystemTime,
    ) -> OutcomeEvent {
        OutcomeEvent {
            outcome,
            code: None,
            user_pool_id: None,
            pool_account: None,
            requested_username: None,
            canonical_username: None,
            caller: caller.to_owned(),
            rule: None,
            source: source.to_owned(),
            id: id.to_owned(),
            idempotency_key: None,
            reason: None,
            ticket: None,
            policy_version: None,
            replayed: false,
            action: None,
            signed_out: None,
            sign_out_error: None,
            sign_out_only: false,
            approval_id: None,
            expires_at: None,
            approver: None,
            requested_at: None,
            decided_at: None,
            time,
        }
    }

    /// Copies the pool, the requested username, the reason and the ticket of `request` (never
    /// its `ClientMetadata`).
    pub fn with_request(mut self, request: &ResetRequest) -> OutcomeEvent {
        self.user_pool_id = Some(request.user_pool_id.as_str().to_owned());
        self.requested_username = Some(request.username.as_str().to_owned());
        self.reason = request.reason.clone();
        self.ticket = request.ticket().map(str::to_owned);
        self
    }

    /// The `detail` JSON.
    pub fn detail(&self) -> String {
        // Plain strings and a timestamp: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_spelled_as_in_the_audit_line() {
        for outcome in [
            EventOutcome::Reset,
            EventOutcome::WouldReset,
            EventOutcome::Rejected,
            EventOutcome::GaveUp,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).expect("json"),
                serde_json::Value::from(outcome.as_str())
            );
        }
    }

    #[test]
    fn only_final_outcomes_make_events() {
        assert_eq!(
            EventOutcome::for_record(Outcome::Reset, false),
            Some(EventOutcome::Reset)
        );
        assert_eq!(
            EventOutcome::for_record(Outcome::WouldReset, false),
            Some(EventOutcome::WouldReset)
        );
        assert_eq!(
            EventOutcome::for_record(Outcome::Rejected, false),
            Some(EventOutcome::Rejected)
        );
        assert_eq!(EventOutcome::for_record(Outcome::Retry, false), None);
        assert_eq!(
            EventOutcome::for_record(Outcome::Retry, true),
            Some(EventOutcome::GaveUp)
        );
    }

    #[test]
    fn the_last_receive_is_when_the_count_reaches_the_redrive_maximum() {
        assert!(!is_last_receive(Some("1"), Some(3)));
        assert!(!is_last_receive(Some("2"), Some(3)));
        assert!(is_last_receive(Some("3"), Some(3)));
        assert!(is_last_receive(Some("4"), Some(3)));
        assert!(
            !is_last_receive(None, Some(3)),
            "HTTP records never give up"
        );
        assert!(
            !is_last_receive(Some("9"), None),
            "no redrive policy: never"
        );
        assert!(!is_last_receive(Some("three"), Some(3)));
    }

    #[test]
    fn absent_fields_are_left_out_and_time_is_rfc3339() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_800_000);
        let event = OutcomeEvent::new(EventOutcome::Rejected, "sqs", "m1", "anonymous", time);
        let detail: serde_json::Value = serde_json::from_str(&event.detail()).expect("json");
        assert_eq!(
            detail,
            serde_json::json!({
                "outcome": "REJECTED", "caller": "anonymous", "source": "sqs", "id": "m1",
                "time": "2026-11-27T17:20:00Z"
            })
        );
    }
}
