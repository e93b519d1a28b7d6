//! A second person for privileged targets, and a request's status (issue 27, parts 2 and 3).
//!
//! - A request that a rule with `approval` admits is checked and kept (the pipeline's
//!   `ask_approval`): [`pending_approval`] builds its item, which holds the request as made.
//! - `POST /approvals/{approvalId}` ([`decide`]): an approver of the request's rule, who is not
//!   its requester, approves (the reset runs now, as the requester, under the guard and the
//!   approval's own idempotency key) or denies (REJECTED `approval-denied`). The decision is one
//!   conditional write ([`crate::guard_logic::approval_decide`]): of two racing approvers exactly
//!   one wins, and the other is given the winner's answer.
//! - `GET /requests/{id}` ([`status`]): the kept answer of an HTTP request id, an SQS message id
//!   or an approval id, to the caller that made the request (and, while an approval is pending,
//!   to its approvers); anyone else gets the same 404 as an unknown id.
//!
//! The approval item is the only item of the guard's table that holds a request's
//! `ClientMetadata` (the reset is performed from it). It is never logged, put in an outcome event
//! or in a metric: the audit line and the event name the approval by its id.
//!
//! Who counts as the requester: the caller's identities with an assumed role's session name
//! left out (as for budgets), so a role can never approve its own requests under a new session
//! name.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::audit::{ApprovalNote, Done, Findings};
use crate::aws::guard::{
    ApprovalRecord, ApprovalStatus, Decide, Decision, KeyRef, PendingApproval, Verdict,
};
use crate::caller;
use crate::deadline::{Deadline, epoch_secs_floor, wall_now};
use crate::guard_logic::{answer_pk, approval_key, sha256_hex};
use crate::invocation::Invocation;
use crate::outcome::{Answer, Outcome, ResetError, Settled};
use crate::pipeline::App;
use crate::policy::Caller;
use crate::record::{Job, Origin, Source};
use crate::request::{InvalidRequest, ResetRequest};

/// Longest id `GET /requests/{id}` looks up, in bytes.
pub const MAX_REQUEST_ID: usize = 256;

/// Longest `Reason` of a decision, in bytes.
pub const MAX_DECISION_REASON: usize = 256;

/// An approved request's approval, as its reset runs: the key it runs under and what the audit
/// line and the event say of the approval.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: KeyRef,
    pub note: ApprovalNote,
}

static IDS: AtomicU64 = AtomicU64::new(0);

/// A new approval id: 32 hex digits from the time, a counter and the process's random keys.
fn new_approval_id(record_id: &str, now: SystemTime) -> String {
    let random = RandomState::new().hash_one((record_id, IDS.fetch_add(1, Ordering::Relaxed)));
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut id = sha256_hex(&[
        record_id.as_bytes(),
        &nanos.to_be_bytes(),
        &random.to_be_bytes(),
    ]);
    id.truncate(32);
    id
}

/// The identities that make a caller the same requester (sessions of one role alike).
fn requester_identities(caller: &Caller) -> Vec<String> {
    match caller {
        Caller::Anonymous => Vec::new(),
        Caller::Identified(_) => caller::budget_identity(caller)
            .split(',')
            .map(str::to_owned)
            .collect(),
    }
}

/// The approval item of a request that `caller` made under `rule`, for `canonical`; it waits
/// `ttl` for a decision.
pub fn pending_approval(
    caller: &Caller,
    rule: &str,
    request: &ResetRequest,
    canonical: &str,
    now: SystemTime,
    ttl: Duration,
) -> PendingApproval {
    let requester = match caller {
        Caller::Anonymous => Value::Null,
        Caller::Identified(ids) => json!(ids),
    };
    // The request as made, in the request's own JSON shape, bound to the canonical user.
    let mut fields = Map::new();
    fields.insert("UserPoolId".into(), json!(request.user_pool_id.as_str()));
    fields.insert("Username".into(), json!(canonical));
    fields.insert(
        "ClientMetadata".into(),
        json!(request.client_metadata.entries()),
    );
    if request.sign_out {
        fields.insert("SignOut".into(), json!(true));
    }
    if let Some(ticket) = request.ticket() {
        fields.insert("Ticket".into(), json!(ticket));
    }
    if let Some(reason) = &request.reason {
        fields.insert("Reason".into(), json!(reason));
    }
    let decide_by = UNIX_EPOCH + Duration::from_secs(epoch_secs_floor(now)) + ttl;
    PendingApproval {
        approval_id: new_approval_id(&caller::describe(caller), now),
        requester: requester.to_string(),
        requester_desc: caller::describe(caller),
        rule: rule.to_owned(),
        request: Value::Object(fields).to_string(),
        created_at: now,
        decide_by,
    }
}

/// The requester of an approval, as a caller.
fn requester_of(record: &ApprovalRecord) -> Caller {
    match serde_json::from_str::<Option<Vec<String>>>(&record.pending.requester) {
        Ok(Some(ids)) => Caller::Identified(ids),
        _ => Caller::Anonymous,
    }
}

/// The body of `POST /approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(alias = "decision", rename = "Decision")]
    decision: String,
    #[serde(default, alias = "reason", rename = "Reason")]
    reason: Option<String>,
}

fn parse_decision(body: Option<&str>) -> Result<(Verdict, Option<String>), ResetError> {
    let text = body.unwrap_or("").trim();
    if text.is_empty() {
        return Err(InvalidRequest::body(
            "the body is empty: send {\"Decision\": \"approve\" | \"deny\"}",
        )
        .into());
    }
    let parsed: DecisionBody = serde_json::from_str(text).map_err(|e| {
        InvalidRequest::body(format!(
            "the body is not a decision ({{\"Decision\": \"approve\" | \"deny\", \"Reason\": ..}}): {e}"
        ))
    })?;
    let verdict = match parsed.decision.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        _ => {
            return Err(InvalidRequest {
                field: Some("Decision".to_owned()),
                message: "Decision must be \"approve\" or \"deny\"".to_owned(),
            }
            .into());
        }
    };
    if let Some(reason) = &parsed.reason
        && (reason.len() > MAX_DECISION_REASON || reason.chars().any(char::is_control))
    {
        return Err(InvalidRequest {
            field: Some("Reason".to_owned()),
            message: format!(
                "Reason must be at most {MAX_DECISION_REASON} bytes of text without control characters"
            ),
        }
        .into());
    }
    Ok((verdict, parsed.reason))
}

/// What an HTTP route answers: status, extra headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, Map<String, Value>);

fn error_reply(error: &ResetError, request_id: &str) -> Reply {
    let answer = Answer::new(Err(error), None, request_id);
    (answer.status, Vec::new(), answer.body())
}

/// Replies with a record's result (an approved request's reset, fresh or replayed).
fn result_reply(result: &crate::outcome::RecordResult, pool: &str, request_id: &str) -> Reply {
    match result {
        Ok(Settled::Replayed(answer)) => {
            let mut body = answer.body();
            body.insert("replayed".into(), Value::Bool(true));
            (
                answer.status,
                vec![("idempotent-replayed", "true".to_owned())],
                body,
            )
        }
        Ok(Settled::Reset(reset)) => {
            let answer = Answer::new(Ok(reset), Some(pool), request_id);
            (answer.status, Vec::new(), answer.body())
        }
        Ok(Settled::Pending(pending)) => {
            let answer = Answer::pending(pending, Some(pool), request_id);
            (answer.status, Vec::new(), answer.body())
        }
        Err(error) => {
            let mut headers = Vec::new();
            if let Some(seconds) = error.retry_after_secs() {
                headers.push(("retry-after", seconds.to_string()));
            }
            let answer = Answer::new(Err(error), Some(pool), request_id);
            (answer.status, headers, answer.body())
        }
    }
}

/// The audit note of a decided approval.
fn note(record: &ApprovalRecord) -> ApprovalNote {
    ApprovalNote {
        approval_id: record.pending.approval_id.clone(),
        approver: record.decided.as_ref().map(|d| d.approver.clone()),
        requested_at: Some(record.pending.created_at),
        decided_at: record.decided.as_ref().map(|d| d.decided_at),
        expires_at: None,
    }
}

/// The stored request, as the requester made it.
fn stored_request(record: &ApprovalRecord) -> Result<ResetRequest, ResetError> {
    ResetRequest::from_json(&record.pending.request, None).map_err(|_| {
        ResetError::GuardUnavailable(crate::failure::GuardError::new(
            crate::failure::GuardErrorKind::Misconfigured,
            "GetItem",
            "an approval item holds an unreadable request",
        ))
    })
}

/// `POST /approvals/{approvalId}`.
#[allow(clippy::too_many_arguments)]
pub async fn decide(
    app: &Arc<App>,
    source: Source,
    caller: &Caller,
    approval_id: &str,
    body: Option<&str>,
    request_id: &str,
    deadline: Deadline,
    invocation: &Invocation,
) -> Reply {
    match decide_inner(app, source, caller, approval_id, body, deadline, invocation).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::info!(
                target: "audit",
                source = %source,
                id = request_id,
                caller = %caller::describe(caller),
                approval_id,
                outcome = "REJECTED",
                code = error.code(),
                "approval decision refused"
            );
            if let ResetError::GuardUnavailable(cause) = &error {
                tracing::warn!(error.cause_chain = %crate::logging::cause_chain(cause), "approval decision failed");
            }
            error_reply(&error, request_id)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn decide_inner(
    app: &Arc<App>,
    source: Source,
    caller: &Caller,
    approval_id: &str,
    body: Option<&str>,
    deadline: Deadline,
    invocation: &Invocation,
) -> Result<Reply, ResetError> {
    let (verdict, reason) = parse_decision(body)?;
    let snapshot = app.policy.current();
    let policy = &snapshot.policy;
    // A caller who approves nothing learns nothing: not even whether the id exists.
    if !policy.approves_any(caller) {
        return Err(ResetError::NotAnApprover);
    }
    let Some(guard) = &app.guard else {
        return Err(ResetError::ApprovalNotFound);
    };
    if !is_approval_id(approval_id) {
        return Err(ResetError::ApprovalNotFound);
    }
    let record = guard
        .approval(approval_id, deadline)
        .await
        .map_err(ResetError::from)?
        .ok_or(ResetError::ApprovalNotFound)?;
    let approvers = policy
        .approval(&record.pending.rule)
        .ok_or(ResetError::NotAnApprover)?;
    if !approvers.is_approver(caller) {
        return Err(ResetError::NotAnApprover);
    }
    let requester = requester_of(&record);
    let mine = requester_identities(caller);
    if requester_identities(&requester)
        .iter()
        .any(|id| mine.contains(id))
    {
        return Err(ResetError::SelfApproval);
    }
    let now = wall_now();
    let record = match record.status(now) {
        ApprovalStatus::Pending => {
            let decision = Decision {
                approval_id: approval_id.to_owned(),
                verdict,
                approver: caller::describe(caller),
                reason,
            };
            match guard.decide(&decision, deadline).await? {
                Decide::Unknown => return Err(ResetError::ApprovalNotFound),
                Decide::Won(record) => {
                    invocation.metrics().approval(match verdict {
                        Verdict::Approve => "approved",
                        Verdict::Deny => "denied",
                    });
                    return Ok(performed(
                        app, source, &record, requester, false, deadline, invocation,
                    )
                    .await);
                }
                Decide::Lost(record) => record,
            }
        }
        _ => record,
    };
    // Decided before (or expired): the first decision's answer.
    if record.status(wall_now()) == ApprovalStatus::Expired {
        invocation.metrics().approval("expired");
        return Err(ResetError::ApprovalExpired);
    }
    Ok(performed(app, source, &record, requester, true, deadline, invocation).await)
}

/// The answer of a decided approval: the approved reset (run now, or its kept answer
/// replayed), or REJECTED `approval-denied`.
async fn performed(
    app: &Arc<App>,
    source: Source,
    record: &ApprovalRecord,
    requester: Caller,
    replay: bool,
    deadline: Deadline,
    invocation: &Invocation,
) -> Reply {
    let approval_id = &record.pending.approval_id;
    let origin = Origin {
        source,
        id: approval_id.clone(),
        index: None,
        caller: Arc::new(requester),
        reader: None,
    };
    let request = stored_request(record);
    let pool = request
        .as_ref()
        .map(|r| r.user_pool_id.as_str().to_owned())
        .unwrap_or_default();
    match record.decided.as_ref().map(|d| d.verdict) {
        Some(Verdict::Approve) => {
            let grant = Grant {
                key: approval_key(&record.pending.requester_desc, approval_id),
                note: note(record),
            };
            let job = Job {
                origin,
                request,
                idempotency_key: None,
                last_receive: false,
            };
            let result = app.run_approved(job, &grant, deadline, invocation).await;
            result_reply(&result, &pool, approval_id)
        }
        _ => {
            let error = ResetError::ApprovalDenied;
            if !replay {
                // The request's final outcome: its audit line and event, as the requester's.
                let findings = Findings {
                    canonical_username: None,
                    rule: Some(record.pending.rule.clone()),
                    approval: Some(note(record)),
                    ..Findings::default()
                };
                let result = Err(error);
                let done = Done {
                    origin: &origin,
                    request: request.as_ref().ok(),
                    pool_account: None,
                    idempotency_key: None,
                    findings: &findings,
                    result: &result,
                    elapsed: Duration::ZERO,
                };
                crate::pipeline::end(&done, false, invocation);
                let mut reply = error_reply(&ResetError::ApprovalDenied, approval_id);
                reply.2.insert("userPoolId".into(), json!(pool));
                return reply;
            }
            let (status, mut headers, mut body) = error_reply(&error, approval_id);
            // The first denial's answer again: its pool included.
            body.insert("userPoolId".into(), json!(pool));
            body.insert("replayed".into(), Value::Bool(true));
            headers.push(("idempotent-replayed", "true".to_owned()));
            (status, headers, body)
        }
    }
}

/// `GET /requests/{id}`: the kept answer (`200`, the answer's own status in `status`), or the
/// same 404 for an unknown id and for someone else's.
pub async fn status(
    app: &Arc<App>,
    caller: &Caller,
    reader: Option<String>,
    id: &str,
    request_id: &str,
    deadline: Deadline,
) -> Reply {
    match status_inner(app, caller, reader, id, deadline).await {
        Ok(Some(answer)) => {
            let mut body = answer.body();
            body.insert("status".into(), json!(answer.status));
            (200, Vec::new(), body)
        }
        Ok(None) => error_reply(&ResetError::RequestNotFound, request_id),
        Err(error) => error_reply(&error, request_id),
    }
}

async fn status_inner(
    app: &Arc<App>,
    caller: &Caller,
    reader: Option<String>,
    id: &str,
    deadline: Deadline,
) -> Result<Option<Answer>, ResetError> {
    let Some(guard) = &app.guard else {
        return Ok(None);
    };
    // No id the function gives out is longer (a batch item's `<request id>#<index>` included).
    if id.len() > MAX_REQUEST_ID {
        return Ok(None);
    }
    let me = caller::describe(caller);
    let mut kept: Option<Answer> = guard.kept(&answer_pk(&me, id), deadline).await?;
    // Or a queued request this caller's IAM principal sent.
    if kept.is_none()
        && let Some(reader) = reader
    {
        kept = guard.kept(&answer_pk(&reader, id), deadline).await?;
    }
    let made_it = kept.is_some();
    let approval_id = match &kept {
        // A request kept for approval: what became of the approval.
        Some(answer) if answer.outcome == Outcome::Pending => answer.approval_id.clone(),
        Some(_) => return Ok(kept),
        None => Some(id.to_owned()),
    };
    let Some(approval_id) = approval_id.filter(|a| is_approval_id(a)) else {
        return Ok(kept);
    };
    let Some(record) = guard.approval(&approval_id, deadline).await? else {
        return Ok(kept);
    };
    let now = wall_now();
    let is_requester = record.pending.requester_desc == me;
    let snapshot = app.policy.current();
    let is_approver = snapshot
        .policy
        .approval(&record.pending.rule)
        .is_some_and(|a| a.is_approver(caller));
    let pool = stored_request(&record)
        .ok()
        .map(|r| r.user_pool_id.as_str().to_owned());
    let status = record.status(now);
    // The requester by the approval id, whoever's answer was kept under the request's id.
    let may_read = is_requester || made_it || (is_approver && status == ApprovalStatus::Pending);
    if !may_read {
        return Ok(None);
    }
    let answer_of = |error: ResetError| {
        let mut answer = Answer::new(Err(&error), None, &approval_id);
        answer.user_pool_id = pool.clone();
        answer
    };
    Ok(Some(match status {
        ApprovalStatus::Pending => Answer::pending(
            &crate::outcome::Pending {
                approval_id: approval_id.clone(),
                expires_at: record.pending.decide_by,
                username: String::new(),
                rule: record.pending.rule.clone(),
            },
            pool.as_deref(),
            &approval_id,
        ),
        ApprovalStatus::Expired => answer_of(ResetError::ApprovalExpired),
        ApprovalStatus::Denied => answer_of(ResetError::ApprovalDenied),
        ApprovalStatus::Approved => {
            let key = approval_key(&record.pending.requester_desc, &approval_id);
            match guard.kept::<Answer>(&key.pk, deadline).await? {
                Some(answer) => answer,
                // Approved, its reset not finished yet.
                None => answer_of(ResetError::InProgress),
            }
        }
    }))
}

/// Whether `id` has the shape of an approval id (32 lower-case hex digits).
pub fn is_approval_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_ids_are_new_each_time_and_have_their_shape() {
        let now = wall_now();
        let a = new_approval_id("r", now);
        let b = new_approval_id("r", now);
        assert_ne!(a, b);
        assert!(is_approval_id(&a), "{a}");
        assert!(!is_approval_id("not-an-id"));
    }

    #[test]
    fn a_decision_body_is_approve_or_deny_with_a_bounded_reason() {
        assert_eq!(
            parse_decision(Some(r#"{"Decision":"approve"}"#)).ok(),
            Some((Verdict::Approve, None))
        );
        assert_eq!(
            parse_decision(Some(r#"{"decision":"deny","reason":"no"}"#)).ok(),
            Some((Verdict::Deny, Some("no".into())))
        );
        for bad in [
            "",
            "{}",
            r#"{"Decision":"maybe"}"#,
            r#"{"Decision":"approve","Username":"x"}"#,
        ] {
            let error = parse_decision(Some(bad)).expect_err(bad);
            assert_eq!(error.code(), "invalid-request", "{bad}");
        }
        let long = format!(r#"{{"Decision":"deny","Reason":"{}"}}"#, "x".repeat(257));
        assert!(parse_decision(Some(&long)).is_err());
    }

    #[test]
    fn sessions_of_one_role_are_one_requester() {
        let alice = Caller::Identified(vec![
            "arn:aws:sts::1:assumed-role/helpdesk/alice".to_owned(),
        ]);
        let bob = Caller::Identified(vec!["arn:aws:sts::1:assumed-role/helpdesk/bob".to_owned()]);
        assert_eq!(requester_identities(&alice), requester_identities(&bob));
    }
}
