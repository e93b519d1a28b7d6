//! The invariants (docs/guarantees.md, "Guarantees"), each a plain function over what a schedule produced:
//! the answers given, the Cognito calls (resets sent, performed, ambiguous), the guard calls and
//! the events handed to the bus.
//!
//! Windows: a reset performed (or a claim taken) in invocation *j* opens a cooldown window that
//! starts no earlier than *j*'s start and ends no later than *j*'s deadline + cooldown + 1 s (the
//! guard counts whole seconds and completes by the deadline).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::faults::{Answered, CognitoCall, GuardCall, Op};
use crate::harness::{Attempt, History, UNKNOWN_APPROVAL, last_receive};
use crate::schedule::Mix;
use crate::world::{
    COOLDOWN, FOREIGN_ACCOUNT, FOREIGN_POOL, FUNCTION_ACCOUNT, MARGIN, POOL, Pool, SignOut, User,
    refusal_by_policy,
};
use cognito_reset::failure::CognitoErrorKind;

/// A broken promise, in words.
#[derive(Debug)]
pub struct Violation {
    pub invariant: &'static str,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VIOLATED: {}: {}", self.invariant, self.what)
    }
}

type Checked = Result<(), Violation>;

/// Every invariant, in order.
pub fn check(history: &History) -> Checked {
    every_record_accounted_for(history)?;
    nothing_lost(history)?;
    one_code(history)?;
    ambiguous_never_again_under_its_key(history)?;
    replays_are_faithful(history)?;
    refused_requests_write_nothing(history)?;
    sign_out_follows_its_reset(history)?;
    budgets_hold(history)?;
    dry_run_changes_nothing(history)?;
    other_account_is_named(history)?;
    approvals_hold(history)?;
    decisions_are_true(history)?;
    Ok(())
}

fn violation(invariant: &'static str, what: String) -> Checked {
    Err(Violation { invariant, what })
}

/// The latest moment a window opened in invocation `inv` can still be running.
fn window_end(h: &History, inv: usize) -> Instant {
    h.invocations[inv].deadline + COOLDOWN + Duration::from_secs(1)
}

fn describe(h: &History, a: &Attempt) -> String {
    let mut text = format!(
        "record {} ({} T{}) of invocation {} (t={}..{} ms)",
        a.audit_id,
        a.req,
        a.request,
        a.inv,
        h.at(h.inv(a).start),
        h.at(h.inv(a).end)
    );
    if let Some(label) = &a.label {
        text += &format!(" key {label}");
    }
    text
}

fn told(a: &Attempt) -> String {
    let mut text = a.answer.outcome.clone();
    if let Some(code) = &a.answer.code {
        text += &format!(" {code}");
    }
    if a.answer.replayed {
        text += " (replayed)";
    }
    text
}

/// The calls that may send `canonical` of `pool` a code: resets and resent invitations.
fn resets_of<'h>(
    h: &'h History,
    pool: &'h str,
    canonical: &'h str,
) -> impl Iterator<Item = &'h CognitoCall> {
    h.journal
        .cognito
        .iter()
        .filter(move |c| c.op.sends_code() && c.pool == pool && c.name == canonical)
}

fn user_pk(pool: &str, canonical: &str) -> String {
    format!("user#{pool}#{canonical}")
}

/// Claims nobody finished: written, never completed, because the store failed under them after
/// every attempt the production client makes (the claim landed and its caller was told an
/// error, or every completion failed). This is the one case the promise cannot cover: no write
/// can record anything while the table answers nothing, so the user item says "claimed" until
/// its lease ends and then counts as a possible reset. A lost answer that a retry can recover
/// (a 5xx or a cut connection after the write) is not abandoned: the retry meets its own claim.
/// A claim whose completion was never even attempted is not abandoned either: that is the bug
/// the margin's stages exist to prevent.
fn abandoned_claims<'h>(h: &'h History, pool: &str, canonical: &str) -> Vec<&'h GuardCall> {
    let pk = user_pk(pool, canonical);
    h.journal
        .guard
        .iter()
        .filter(|c| c.op == Op::Claim && c.wrote && c.pk == pk)
        .filter(|claim| {
            let completions: Vec<&GuardCall> = h
                .journal
                .guard
                .iter()
                .filter(|c| c.op == Op::Complete && c.claim_id == claim.claim_id)
                .collect();
            // A settle writes the key's answer first: a completion its caller was told failed
            // may have written the key and not the claim.
            let completed = completions.iter().any(|c| c.wrote && !c.failed());
            let failed = completions.iter().any(|c| c.failed());
            // Never completed, and either a completion failed after its retries, or the claim
            // landed and its holder was told an error (so it could not know it held it).
            !completed && (failed || claim.failed())
        })
        .collect()
}

/// The one exception to "recently-reset only inside a reset's window": while a record's sign-out
/// is pending (its reset done, its sign-out to be retried by its SQS redelivery), the user item
/// stays, so that the redelivery only signs out and never resets again; other requests are told
/// `recently-reset` (with Retry-After pointing at the cooldown's end) until that redelivery ends
/// it, after which the item lives only for the reset's cooldown. Keeping the promise here would
/// let another request take the item over and a lost redelivery then reset the user a second
/// time for the same record. True when, at `at`, the user item of `pool`/`canonical` held a
/// pending sign-out.
fn sign_out_pending(h: &History, pool: &str, canonical: &str, at: Instant) -> bool {
    use cognito_reset::aws::guard::Completion;
    let pk = user_pk(pool, canonical);
    let mut pending = false;
    for call in h
        .journal
        .guard
        .iter()
        .filter(|c| c.op == Op::Complete && c.pk == pk && c.wrote && c.start < at)
    {
        match call.completion {
            Some(Completion::ResetSignOutPending) => pending = true,
            Some(Completion::SignedOut { .. }) => pending = false,
            _ => {}
        }
    }
    pending
}

/// A record is answered final (acknowledged over SQS; 2xx, 4xx or 502 `reset-unconfirmed` over
/// HTTP) only if its outcome is true.
pub fn nothing_lost(h: &History) -> Checked {
    const NAME: &str = "nothing lost";
    // RESET: a reset was performed for this record (its ticket) in its invocation.
    let mut fresh_resets: BTreeMap<(usize, String), Vec<&Attempt>> = BTreeMap::new();
    for a in &h.attempts {
        if a.answer.outcome == "RESET" && a.answer.code.is_none() {
            // A redelivery that only signed out reports its earlier delivery's reset (in an
            // earlier invocation, or a copy of the same message earlier in the same batch: a
            // run that only signs out never sends a reset itself).
            if sign_out_only(a) {
                let earlier = h.journal.cognito.iter().any(|c| {
                    c.op == Op::Reset
                        && c.inv <= a.inv
                        && c.ticket.as_deref() == Some(a.ticket().as_str())
                        && c.performed
                });
                if !earlier {
                    return violation(
                        NAME,
                        format!(
                            "{} was told RESET for its sign-out alone, but no earlier delivery reset the user for {}",
                            describe(h, a),
                            a.ticket()
                        ),
                    );
                }
                continue;
            }
            if a.answer.replayed {
                continue;
            }
            fresh_resets.entry((a.inv, a.ticket())).or_default().push(a);
        }
    }
    for ((inv, ticket), told_reset) in &fresh_resets {
        let performed = h
            .journal
            .cognito
            .iter()
            .filter(|c| {
                c.op.sends_code()
                    && c.inv == *inv
                    && c.ticket.as_deref() == Some(ticket.as_str())
                    && c.performed
                    && c.answered == Answered::Ok
            })
            .count();
        // Or the same request's earlier reset was performed, and its answer was lost or its
        // end never recorded (the claim stayed): the user's status (RESET_REQUIRED) proved it,
        // and the record is told RESET with no second call.
        // (Earlier in time: another instance's invocation of the same step may have a higher
        // index.)
        let proved_earlier = h.journal.cognito.iter().any(|c| {
            c.op == Op::Reset
                && c.inv != *inv
                && c.start < h.invocations[*inv].end
                && c.ticket.as_deref() == Some(ticket.as_str())
                && c.performed
        });
        if told_reset.len() > performed && !proved_earlier {
            return violation(
                NAME,
                format!(
                    "{} was told {}, but {performed} reset(s) were performed and answered for {ticket} in that invocation",
                    describe(h, told_reset[0]),
                    told(told_reset[0])
                ),
            );
        }
    }
    for a in h
        .attempts
        .iter()
        .filter(|a| a.answer.is_final && !a.answer.replayed)
    {
        let inv = h.inv(a);
        let canonical = a.req.user.canonical().unwrap_or_default();
        let pool = a.req.pool_id();
        let code = a.answer.code.as_deref();
        // A decision's own answers are checked by `decisions_are_true`; the approved reset's
        // refusals (its cooldown, its budget) here, as the request's.
        if a.decision.is_some() && (code.is_none_or(|c| APPROVAL_CODES.contains(&c))) {
            continue;
        }
        if let Some(expected) = refusal_by_policy(a.sender, &a.req).filter(|_| a.decision.is_none())
        {
            if code != Some(expected) {
                return violation(
                    NAME,
                    format!(
                        "{} was told {}, but it must be refused {expected}",
                        describe(h, a),
                        told(a)
                    ),
                );
            }
            continue;
        }
        let Some(code) = code else {
            // WOULD_RESET only in DRY_RUN, for a user a rule would reset; RESET never there.
            let would = h.options.dry_run
                && (matches!(a.req.user, User::Ann | User::Bob)
                    || (a.req.user == User::Ivy && h.options.resend));
            let fine = match a.answer.outcome.as_str() {
                "RESET" => !h.options.dry_run,
                "WOULD_RESET" => would,
                // PENDING: a privileged user's request, its approval created in this invocation.
                "PENDING" => {
                    !h.options.dry_run
                        && a.req.user == User::Pam
                        && pending_id(a).is_some_and(|id| {
                            asked(h).iter().any(|r| r.id == id && r.call.inv == a.inv)
                        })
                }
                _ => false,
            };
            if !fine {
                return violation(NAME, format!("{} was told {}", describe(h, a), told(a)));
            }
            continue;
        };
        let inside =
            |start: Instant, in_inv: usize| start <= inv.end && inv.start < window_end(h, in_inv);
        let refused_by_cognito = |kinds: &[CognitoErrorKind]| {
            h.journal.cognito.iter().any(|c| {
                c.inv == a.inv
                    && c.pool == pool
                    && (c.name.eq_ignore_ascii_case(&a.req.name()) || c.name == canonical)
                    && matches!(c.answered, Answered::Err(kind, _) if kinds.contains(&kind))
            })
        };
        let (true_, because) = match code {
            "recently-reset" => (
                resets_of(h, pool, &canonical).any(|r| r.performed && inside(r.start, r.inv))
                    || sign_out_pending(h, pool, &canonical, inv.start),
                format!("no reset of {canonical} was performed inside the window"),
            ),
            "reset-unconfirmed" => (
                resets_of(h, pool, &canonical).any(|r| r.ambiguous() && inside(r.start, r.inv))
                    || abandoned_claims(h, pool, &canonical)
                        .iter()
                        .any(|c| inside(c.start, c.inv))
                    || key_end_unwritten(h, a),
                format!(
                    "no reset of {canonical} got an ambiguous answer inside the window, no claim on it was abandoned by a failure of the store, and no earlier attempt under its key failed to write the key's end"
                ),
            ),
            "idempotency-key-reused" => (
                // Sent before this record's invocation ended (by another instance at the same
                // time, too).
                h.attempts.iter().any(|b| {
                    b.key.is_some()
                        && b.key == a.key
                        && b.request != a.request
                        && h.inv(b).start <= inv.end
                }),
                "no other request was ever sent with this key".to_owned(),
            ),
            "denied-group" => (
                a.req.user == User::Mal,
                "the user is in no denied group".to_owned(),
            ),
            "user-not-found" | "user-not-allowed" => (
                refused_by_cognito(&[CognitoErrorKind::UserNotFound]),
                "Cognito found the user".to_owned(),
            ),
            "not-resettable" => (
                refused_by_cognito(&[CognitoErrorKind::NotResettable]),
                "Cognito refused no reset".to_owned(),
            ),
            "invitation-pending" => (
                a.req.user == User::Ivy && !h.options.resend,
                "the user is not an invited user under a rule that refuses invited users"
                    .to_owned(),
            ),
            "sign-out-not-allowed" => (
                a.req.sign_out && h.options.sign_out == SignOut::Never,
                "the request asked no sign-out, or the rule allows it".to_owned(),
            ),
            "caller-budget-exhausted" => (
                h.options.budget.is_some()
                    && (segments(h).iter().any(|seg| {
                        seg.inv == a.inv
                            && seg.record == a.audit_id
                            && seg.spend.is_some_and(|s| s.result == "exhausted")
                    })
                        // A request waiting for approval looks at its caller's budget.
                        || (a.req.user == User::Pam
                            && h.journal.guard.iter().any(|c| {
                                c.inv == a.inv
                                    && c.op == Op::PeekBudget
                                    && c.result == "exhausted"
                            }))),
                "no spend of this record was answered exhausted by the budget".to_owned(),
            ),
            _ => (false, "nothing in this world makes it true".to_owned()),
        };
        if !true_ {
            return violation(
                NAME,
                format!("{} was told {}, but {because}", describe(h, a), told(a)),
            );
        }
    }
    Ok(())
}

/// At most one performed reset per user per cooldown window, and a reset whose answer was
/// ambiguous is never sent again inside its window: not by the retry policy, not by a
/// redelivery, not by a client retrying its key.
pub fn one_code(h: &History) -> Checked {
    const NAME: &str = "one code";
    let users: Vec<(&str, String)> = [POOL, FOREIGN_POOL]
        .into_iter()
        .flat_map(|pool| {
            User::EXISTING
                .into_iter()
                .filter_map(move |u| u.canonical().map(|c| (pool, c)))
        })
        .collect();
    for (pool, user) in &users {
        let sent: Vec<&CognitoCall> = resets_of(h, pool, user).collect();
        let performed: Vec<&&CognitoCall> = sent.iter().filter(|c| c.performed).collect();
        for pair in performed.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if second.start < h.invocations[first.inv].start + COOLDOWN {
                return violation(
                    NAME,
                    format!(
                        "{user} got two codes: resets performed at t={} ms (invocation {}, {}) and t={} ms (invocation {}, {}), less than the cooldown apart",
                        h.at(first.start),
                        first.inv,
                        first.ticket.as_deref().unwrap_or("?"),
                        h.at(second.start),
                        second.inv,
                        second.ticket.as_deref().unwrap_or("?"),
                    ),
                );
            }
        }
        // An ambiguous reset may be sent again only when it never happened (the user's status,
        // still CONFIRMED once the call can no longer be in flight, proved it): the fake knows
        // whether it was performed.
        for (i, first) in sent
            .iter()
            .enumerate()
            .filter(|(_, c)| c.ambiguous() && c.performed)
        {
            let window = h.invocations[first.inv].start + COOLDOWN;
            if let Some(again) = sent[i + 1..].iter().find(|c| c.start < window) {
                let by = if again.inv == first.inv && again.ticket == first.ticket {
                    "by the retry policy, in the same record attempt"
                } else {
                    "inside its window"
                };
                return violation(
                    NAME,
                    format!(
                        "the reset of {user} sent at t={} ms (invocation {}, {}) got an ambiguous answer, and was sent again {by} at t={} ms (invocation {}, {})",
                        h.at(first.start),
                        first.inv,
                        first.ticket.as_deref().unwrap_or("?"),
                        h.at(again.start),
                        again.inv,
                        again.ticket.as_deref().unwrap_or("?"),
                    ),
                );
            }
        }
    }
    Ok(())
}

/// A reset sent under a key (performed, its answer clean or ambiguous) is never sent again
/// under that key, however late the key's retry comes and whatever failed: the key keeps a
/// clean reset's RESET, and an ambiguous one's `reset-unconfirmed` undecided while the user item
/// holds that reset (a retry inside the window is decided by the user's status) and final after
/// it; a key whose end was never written (the guard's store failed under it after every retry
/// the client makes) reads as a dead holder's, and a retry after the window from its first take
/// is refused rather than sent (`docs/guarantees.md`). No exception.
pub fn ambiguous_never_again_under_its_key(h: &History) -> Checked {
    const NAME: &str = "one code";
    let sent = || h.journal.cognito.iter().filter(|c| c.op.sends_code());
    for first in sent().filter(|c| c.performed) {
        let Some(a) = sender_of(h, first).filter(|a| a.key.is_some()) else {
            continue;
        };
        let again = sent()
            .filter(|c| c.start > first.start)
            .find(|c| sender_of(h, c).is_some_and(|b| same_key(a, b)));
        if let Some(again) = again {
            return violation(
                NAME,
                format!(
                    "the reset of {} sent at t={} ms ({}, its answer {}) was sent again under the same key at t={} ms (invocation {})",
                    first.name,
                    h.at(first.start),
                    describe(h, a),
                    if first.ambiguous() {
                        "ambiguous"
                    } else {
                        "clean"
                    },
                    h.at(again.start),
                    again.inv,
                ),
            );
        }
    }
    Ok(())
}

/// Whether an earlier attempt of the same request under the same key may have left the key
/// without its end (the store failed under it after the client's retries): the key then reads
/// as a dead holder's, and a retry after the window from its first take is answered
/// `reset-unconfirmed`, not sent (`KeyState::Abandoned`): that attempt may have sent a reset
/// nothing else remembers.
fn key_end_unwritten(h: &History, a: &Attempt) -> bool {
    let approval = |x: &Attempt| x.decision.as_ref().map(|d| d.approval_id.clone());
    h.attempts.iter().any(|b| {
        b.inv < a.inv
            && match approval(a) {
                // A decision's reset runs under its approval's key: any failure of the store
                // under an earlier decision on it (one record per invocation).
                Some(id) => {
                    approval(b) == Some(id)
                        && h.journal.guard.iter().any(|c| c.inv == b.inv && c.failed())
                }
                None => same_key(a, b) && store_failed(h, b),
            }
    })
}

/// Whether two attempts are the same request under the same idempotency key.
fn same_key(a: &Attempt, b: &Attempt) -> bool {
    a.key.is_some() && a.key == b.key && a.request == b.request
}

/// The attempt on whose behalf Cognito call `c` was sent: the record of its invocation that
/// last claimed the user before it (records of one batch may share a ticket).
fn sender_of<'h>(h: &'h History, c: &CognitoCall) -> Option<&'h Attempt> {
    let pk = user_pk(&c.pool, &c.name);
    let claim = h.journal.guard.iter().rfind(|g| {
        g.inv == c.inv
            && g.op == Op::Claim
            && g.pk == pk
            && g.start <= c.start
            && g.result == "claimed"
    })?;
    let record = cognito_reset::guard_logic::claim_record(claim.claim_id.as_deref()?);
    h.attempts
        .iter()
        .find(|a| a.inv == c.inv && a.audit_id == record)
}

/// Whether a record's own reset got an ambiguous answer (HTTP 502 `reset-unconfirmed`, final
/// and kept), as opposed to meeting another reset's window (409, passes with the window). Over
/// SQS, where no status tells, a message's ticket is its own: its reset in that invocation.
fn own_reset_ambiguous(h: &History, a: &Attempt) -> bool {
    if a.source.is_http() {
        return a.answer.status == Some(502);
    }
    h.journal.cognito.iter().any(|c| {
        c.op.sends_code()
            && c.inv == a.inv
            && c.ticket.as_deref() == Some(&a.ticket())
            && c.ambiguous()
    })
}

/// A rejection that passes when the cooldown window ends (it comes with `Retry-After`).
fn passes_with_window(h: &History, a: &Attempt) -> bool {
    match a.answer.code.as_deref() {
        Some("recently-reset") => true,
        Some("reset-unconfirmed") => !own_reset_ambiguous(h, a) && !abandoned_refusal(h, a),
        _ => false,
    }
}

/// Whether a record was refused because the key it took over from a dead holder was past that
/// holder's window (`UserState::Abandoned`): `reset-unconfirmed`, final and kept.
fn abandoned_refusal(h: &History, a: &Attempt) -> bool {
    let pk = user_pk(a.req.pool_id(), &a.req.user.canonical().unwrap_or_default());
    h.journal.guard.iter().any(|c| {
        c.inv == a.inv
            && c.op == Op::Claim
            && c.pk == pk
            && c.result == "abandoned"
            && c.claim_id
                .as_deref()
                .is_some_and(|id| cognito_reset::guard_logic::claim_record(id) == a.audit_id)
    })
}

/// Answers a key keeps: RESET, and the refusals decided after the key was taken (not
/// `recently-reset` nor a `reset-unconfirmed` that came from another request's window: both pass
/// when the window ends; a reset's own ambiguous answer is kept).
fn kept(h: &History, a: &Attempt) -> bool {
    // DRY_RUN writes nothing: no answer is kept under its key.
    if h.options.dry_run {
        return false;
    }
    match a.answer.code.as_deref() {
        // A RESET handed back for its sign-out is not kept: its redelivery must run.
        // A request kept for approval: a repeat learns the same approval.
        None => matches!(a.answer.outcome.as_str(), "RESET" | "PENDING") && a.answer.acked,
        // Kept only when the user's status cannot settle it later (the user was not CONFIRMED
        // before the reset); the harness does not follow the status at each request, so it
        // demands no replay of a reset-unconfirmed (a weaker check, never a wrong one).
        Some("reset-unconfirmed") => false,
        Some(code) => matches!(
            code,
            "denied-group"
                | "user-not-found"
                | "user-not-allowed"
                | "not-resettable"
                | "cannot-reset"
                | "user-disabled"
                | "invitation-pending"
                | "sign-out-not-allowed"
        ),
    }
}

fn same_answer(a: &Attempt, b: &Attempt) -> bool {
    let without_replayed = |attempt: &Attempt| {
        attempt.answer.body.clone().map(|mut body| {
            body.remove("replayed");
            body
        })
    };
    a.answer.outcome == b.answer.outcome
        && a.answer.code == b.answer.code
        && a.answer.status == b.answer.status
        && without_replayed(a) == without_replayed(b)
}

/// Whether the guard's store failed this record after the client's retries: its key's calls,
/// or its user's claim calls (a slow claim result can use up the time its key's result had).
/// Then nothing can be recorded, and a repeat of the key may run again (its user claim still
/// stops a second reset).
fn store_failed(h: &History, a: &Attempt) -> bool {
    let pk = user_pk(a.req.pool_id(), &a.req.user.canonical().unwrap_or_default());
    h.journal.guard.iter().any(|c| {
        c.inv == a.inv
            && c.failed()
            && match c.op {
                Op::Begin | Op::Finish => Some(&c.label) == a.label.as_ref(),
                _ => c.pk == pk,
            }
    })
}

/// A repeated key gets the earlier final answer (unless the store failed to keep it), and never
/// a rejection that `Retry-After` said would have passed.
pub fn replays_are_faithful(h: &History) -> Checked {
    const NAME: &str = "replays are faithful";
    for (j, b) in h.attempts.iter().enumerate() {
        // A decision's replay is checked by `decisions_are_true`.
        if !b.answer.replayed || b.decision.is_some() {
            continue;
        }
        let originals: Vec<&Attempt> = h
            .attempts
            .iter()
            .enumerate()
            // Earlier, or in another instance's invocation at the same time.
            .filter(|(i, a)| {
                *i != j && (a.inv <= b.inv || h.inv(a).start <= h.inv(b).start) && same_key(a, b)
            })
            .filter(|(_, a)| a.answer.is_final && !a.answer.replayed && same_answer(a, b))
            .map(|(_, a)| a)
            .collect();
        // An ambiguous reset's `reset-unconfirmed` is kept under its key, undecided while the
        // user item holds that reset, also when its SQS record was handed back (RETRY) for the
        // redelivery to decide: once the window is over, that answer is replayed, never given
        // before. True exactly when an earlier attempt under the key sent a reset whose answer
        // was ambiguous.
        let unconfirmed_kept = || {
            b.answer.code.as_deref() == Some("reset-unconfirmed")
                && h.attempts.iter().enumerate().any(|(i, a)| {
                    i != j && a.inv <= b.inv && same_key(a, b) && own_reset_ambiguous(h, a)
                })
        };
        if unconfirmed_kept() {
            continue;
        }
        let Some(latest) = originals.last() else {
            return violation(
                NAME,
                format!(
                    "{} was replayed {}, an answer never given under its key",
                    describe(h, b),
                    told(b)
                ),
            );
        };
        if passes_with_window(h, latest) {
            // Its Retry-After, or (no header: SQS, a batch item) the longest a window can last.
            let (wait, said) = match latest.answer.retry_after {
                Some(secs) => (
                    Duration::from_secs(secs),
                    format!("its Retry-After ({secs} s)"),
                ),
                None => (
                    COOLDOWN + Duration::from_secs(1),
                    format!("its window (at most {} s)", COOLDOWN.as_secs() + 1),
                ),
            };
            if h.inv(b).start >= h.inv(latest).end + wait {
                return violation(
                    NAME,
                    format!(
                        "{} was replayed {}, the answer of {}, after {said} had passed",
                        describe(h, b),
                        told(b),
                        describe(h, latest),
                    ),
                );
            }
        }
    }
    for (i, a) in h.attempts.iter().enumerate() {
        if !a.answer.is_final || a.answer.replayed {
            continue;
        }
        // A rejection with Retry-After passes when it says: a client that waits and repeats
        // its key is not refused the same way again.
        if a.answer.code.as_deref() == Some("recently-reset")
            && let Some(secs) = a.answer.retry_after
        {
            let passes = h.inv(a).end + Duration::from_secs(secs);
            let canonical = a.req.user.canonical().unwrap_or_default();
            // A reset performed since opened a new window: that one may refuse. "Since": by
            // another invocation once this one had started (this one may end after it, its last
            // steps slow; on the paused clock the other may even start at this one's end).
            let reset_since = |until: Instant| {
                resets_of(h, a.req.pool_id(), &canonical).any(|r| {
                    r.performed && r.inv != a.inv && r.start >= h.inv(a).start && r.start <= until
                })
            };
            if let Some(b) = h.attempts.iter().find(|b| {
                b.inv > a.inv
                    && same_key(a, b)
                    && h.inv(b).start >= passes
                    && b.answer.code.as_deref() == Some("recently-reset")
                    && !reset_since(h.inv(b).end)
                    && !sign_out_pending(h, a.req.pool_id(), &canonical, h.inv(b).start)
            }) {
                return violation(
                    NAME,
                    format!(
                        "{} was told {} with Retry-After {secs}; {} repeated the key after that and was told {}",
                        describe(h, a),
                        told(a),
                        describe(h, b),
                        told(b)
                    ),
                );
            }
        }
        if !kept(h, a) || store_failed(h, a) {
            continue;
        }
        let later = h
            .attempts
            .iter()
            .enumerate()
            // After its invocation ended (another instance's invocation at the same time may
            // meet the key in progress: `in-progress` is RETRY, checked below).
            .filter(|(j, b)| {
                *j != i && b.inv > a.inv && h.inv(b).start >= h.inv(a).end && same_key(a, b)
            })
            .map(|(_, b)| b);
        for b in later {
            // A repeat that was handed back (RETRY) did not contradict the kept answer: it never
            // got to read its key (no time left, a halted FIFO group, its store failed after the
            // client's retries) or the key was held by a copy of itself in the same batch
            // (`in-progress` is checked above). Over SQS the harness cannot see a RETRY's code.
            let own_retry = !b.answer.is_final && b.answer.code.as_deref() != Some("in-progress");
            if !b.answer.replayed && !own_retry {
                return violation(
                    NAME,
                    format!(
                        "{} was told {}; {} repeated the key and was told {}",
                        describe(h, a),
                        told(a),
                        describe(h, b),
                        told(b)
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Every record of every invocation gets exactly one answer, the invocation returns before its
/// deadline (by D − m/8), and every final outcome has exactly one outcome event, a replay's
/// marked `"replayed": true`.
pub fn every_record_accounted_for(h: &History) -> Checked {
    const NAME: &str = "every record accounted for";
    for (index, inv) in h.invocations.iter().enumerate() {
        if let Some(problem) = &inv.problem {
            return violation(NAME, format!("invocation {index}: {problem}"));
        }
        let last_eighth = inv.deadline - MARGIN / 8;
        if inv.end > last_eighth {
            return violation(
                NAME,
                format!(
                    "invocation {index} returned at t={} ms, after D-m/8 (t={} ms)",
                    h.at(inv.end),
                    h.at(last_eighth)
                ),
            );
        }
        let publishes: Vec<_> = h
            .journal
            .published
            .iter()
            .filter(|p| p.inv == index)
            .collect();
        if publishes.len() > 1
            || publishes
                .iter()
                .any(|p| p.until != last_eighth || p.events.is_empty())
        {
            return violation(
                NAME,
                format!(
                    "invocation {index} published {} times, or not until D-m/8",
                    publishes.len()
                ),
            );
        }
        let attempts = &h.attempts[inv.attempts.clone()];
        if let Some(stray) = inv
            .events
            .iter()
            .find(|e| !attempts.iter().any(|a| a.audit_id == e.id))
        {
            return violation(
                NAME,
                format!(
                    "invocation {index} sent an event for {}, no record of it",
                    stray.id
                ),
            );
        }
        // A message is handed back at most once per copy in the batch.
        if let Some(id) = inv.failed_ids.iter().find(|id| {
            let listed = inv.failed_ids.iter().filter(|f| f == id).count();
            listed
                > attempts
                    .iter()
                    .filter(|a| a.message_id.as_ref() == Some(*id))
                    .count()
        }) {
            return violation(
                NAME,
                format!("invocation {index} handed back {id} more often than it was given it"),
            );
        }
        for a in attempts {
            let events: Vec<_> = inv.events.iter().filter(|e| e.id == a.audit_id).collect();
            if a.source.is_http() {
                // A decision's outcome event is the approved request's final outcome (the
                // approved reset's, a fresh denial's); refusing a decision (self-approval,
                // expired, ...) or replaying a denial ends no request.
                let expected = match &a.decision {
                    None => usize::from(a.answer.is_final),
                    Some(_) => usize::from(
                        a.answer.is_final
                            && !APPROVAL_CODES
                                .iter()
                                .any(|c| a.answer.code.as_deref() == Some(*c))
                            || (a.answer.code.as_deref() == Some("approval-denied")
                                && !a.answer.replayed),
                    ),
                };
                let event_matches = events.first().is_none_or(|e| {
                    event_outcome(e) == a.answer.outcome
                        && e.code == a.answer.code
                        && e.replayed == a.answer.replayed
                });
                if events.len() != expected || !event_matches {
                    return violation(
                        NAME,
                        format!(
                            "{} was told {} and {} outcome event(s) say {:?}",
                            describe(h, a),
                            told(a),
                            events.len(),
                            events
                                .iter()
                                .map(|e| format!(
                                    "{} {:?} replayed={}",
                                    event_outcome(e),
                                    e.code,
                                    e.replayed
                                ))
                                .collect::<Vec<_>>()
                        ),
                    );
                }
            } else {
                let copies = attempts
                    .iter()
                    .filter(|b| b.message_id == a.message_id)
                    .count();
                let gave_up = events
                    .iter()
                    .filter(|e| e.outcome.as_str() == "GAVE_UP")
                    .count();
                let fine = if a.answer.acked {
                    events.len() == copies && gave_up == 0
                } else if last_receive(a) {
                    events.len() == copies && gave_up >= 1
                } else {
                    // Handed back: no final outcome, unless one copy's reset happened and only
                    // its sign-out is to be retried (its RESET event says `signedOut: false`).
                    let sign_out_retried = events
                        .iter()
                        .any(|e| e.outcome.as_str() == "RESET" && e.signed_out == Some(false));
                    gave_up == 0
                        && (events.len() < copies || (sign_out_retried && events.len() == copies))
                };
                if !fine {
                    return violation(
                        NAME,
                        format!(
                            "message {} ({} cop(ies), receive {}) was {} with {} outcome event(s), {gave_up} GAVE_UP",
                            a.audit_id,
                            copies,
                            a.receive,
                            if a.answer.acked {
                                "acknowledged"
                            } else {
                                "handed back"
                            },
                            events.len()
                        ),
                    );
                }
            }
        }
        // Replays are marked: as many replayed events per key as the guard answered replays.
        let mut labels: Vec<&String> = attempts.iter().filter_map(|a| a.label.as_ref()).collect();
        labels.sort();
        labels.dedup();
        for label in labels {
            let replays = h
                .journal
                .guard
                .iter()
                .filter(|c| c.inv == index && c.op == Op::Begin && c.replay && &c.label == label)
                .count();
            // A run that took over an undecided key and found the earlier reset's window over
            // replays that answer too (after its claim).
            let resumed = h
                .journal
                .guard
                .iter()
                .filter(|c| {
                    c.inv == index
                        && c.op == Op::Begin
                        && c.result == "resumed undecided"
                        && &c.label == label
                })
                .count();
            // A sign-out-only redelivery's event repeats its earlier delivery's RESET: it is
            // marked replayed without a replay of the key.
            let marked = inv
                .events
                .iter()
                .filter(|e| {
                    e.replayed && !e.sign_out_only && e.idempotency_key.as_ref() == Some(label)
                })
                .count();
            if marked < replays || marked > replays + resumed {
                return violation(
                    NAME,
                    format!(
                        "invocation {index}: the guard replayed key {label} {replays} time(s), and {marked} outcome event(s) are marked replayed"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// A request refused before the user decision (no rule for the caller or the pool, an invalid
/// request) writes nothing to the guard's table.
pub fn refused_requests_write_nothing(h: &History) -> Checked {
    const NAME: &str = "refused requests write nothing";
    for a in &h.attempts {
        let refused = matches!(
            a.answer.code.as_deref(),
            Some("no-rule-for-caller" | "pool-not-allowed" | "invalid-request")
        );
        let Some(label) = a.label.as_ref().filter(|_| refused) else {
            continue;
        };
        if let Some(call) =
            h.journal.guard.iter().find(|c| {
                c.inv == a.inv && matches!(c.op, Op::Begin | Op::Finish) && &c.label == label
            })
        {
            return violation(
                NAME,
                format!(
                    "{} was told {}, yet its key was written ({} at t={} ms: {})",
                    describe(h, a),
                    told(a),
                    call.op.name(),
                    h.at(call.start),
                    call.result
                ),
            );
        }
    }
    Ok(())
}

/// What a history exercised, for `FAULTS_STATS=1`: a suite that never meets an edge proves
/// nothing about it.
pub fn coverage(h: &History) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut note = |cond: bool, what: &str| {
        if cond {
            seen.push(what.to_owned());
        }
    };
    let answers = || h.attempts.iter().map(|a| &a.answer);
    note(
        answers().any(|a| a.outcome == "RESET" && !a.replayed),
        "fresh RESET",
    );
    note(
        answers().any(|a| a.outcome == "RESET" && a.replayed),
        "replayed RESET",
    );
    note(
        answers().any(|a| a.replayed && a.outcome == "REJECTED"),
        "replayed REJECTED",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("recently-reset")),
        "recently-reset",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("recently-reset") && a.retry_after.is_some()),
        "recently-reset with Retry-After",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("reset-unconfirmed") && a.status == Some(502)),
        "reset-unconfirmed 502",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("reset-unconfirmed") && a.status != Some(502)),
        "reset-unconfirmed other",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("in-progress")),
        "in-progress",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("idempotency-key-reused")),
        "idempotency-key-reused",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("deadline")),
        "RETRY deadline",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("guard-unavailable")),
        "RETRY guard-unavailable",
    );
    note(
        answers().any(|a| a.code.as_deref() == Some("fifo-group-halted")),
        "fifo-group-halted",
    );
    note(answers().any(|a| a.outcome == "GAVE_UP"), "GAVE_UP");
    note(
        answers().any(|a| a.code.as_deref() == Some("no-rule-for-caller")),
        "no-rule-for-caller",
    );
    note(
        h.journal
            .cognito
            .iter()
            .any(|c| c.performed && c.ambiguous()),
        "reset performed, answer ambiguous",
    );
    note(
        h.journal
            .cognito
            .iter()
            .any(|c| !c.performed && c.op == Op::Reset && c.ambiguous()),
        "reset not performed, answer ambiguous",
    );
    note(
        h.journal.cognito.iter().any(|c| {
            c.op == Op::Reset && c.performed && c.answered == Answered::Ok && {
                let d = h.invocations[c.inv].deadline;
                c.end > d - MARGIN && c.end <= d - MARGIN / 2
            }
        }),
        "reset answered OK inside [m/2, m)",
    );
    note(
        h.journal.cognito.iter().any(|c| {
            c.op == Op::Reset
                && matches!(
                    c.answered,
                    Answered::Err(_, cognito_reset::failure::Effect::None)
                )
                && {
                    let d = h.invocations[c.inv].deadline;
                    c.end > d - MARGIN
                }
        }),
        "reset refused inside the margin",
    );
    let resets_per_attempt = {
        let mut count: BTreeMap<(usize, Option<&String>), usize> = BTreeMap::new();
        for c in h.journal.cognito.iter().filter(|c| c.op == Op::Reset) {
            *count.entry((c.inv, c.ticket.as_ref())).or_default() += 1;
        }
        count.values().any(|n| *n > 1)
    };
    note(
        resets_per_attempt,
        "a reset sent twice in one attempt (retried)",
    );
    note(
        h.journal.guard.iter().any(|c| c.injected() && c.wrote),
        "guard write landed under a fault",
    );
    note(
        h.journal
            .guard
            .iter()
            .any(|c| c.fault == Some(crate::faults::Fault::Echo) && c.op == Op::Claim),
        "claim echo",
    );
    note(!abandoned_claims_any(h).is_empty(), "abandoned claim");
    note(
        h.invocations
            .windows(2)
            .any(|w| w[1].start >= w[0].start + COOLDOWN),
        "a delivery after the cooldown",
    );
    note(
        h.journal.guard.iter().any(|c| {
            c.op == Op::Begin && c.result == "fresh" && c.wrote && {
                h.journal
                    .guard
                    .iter()
                    .any(|d| d.op == Op::Begin && d.pk == c.pk && d.inv < c.inv && d.wrote)
            }
        }),
        "a key taken over",
    );
    note(
        h.attempts.iter().any(|a| {
            a.answer.retry_after.is_some()
                && a.answer.code.as_deref() == Some("recently-reset")
                && {
                    let passes =
                        h.inv(a).end + Duration::from_secs(a.answer.retry_after.unwrap_or(0));
                    h.attempts.iter().any(|b| {
                        b.inv > a.inv
                            && b.key.is_some()
                            && b.key == a.key
                            && b.request == a.request
                            && h.inv(b).start >= passes
                    })
                }
        }),
        "a key repeated after its Retry-After",
    );
    // The edge classes asserted by `assert_coverage`.
    let mut edges: Vec<String> = Vec::new();
    for call in &h.journal.cognito {
        if let Some(fault) = call.fault {
            edges.push(format!("fault: {} at {}", fault.kind(), call.op.name()));
        }
        if let Some(at) = call.at {
            edges.push(format!("answer {at} at Cognito"));
        }
    }
    for call in &h.journal.guard {
        if let Some(fault) = call.fault {
            edges.push(format!("fault: {} at {}", fault.kind(), call.op.name()));
        }
        if let Some(at) = call.at {
            edges.push(format!("answer {at} at the guard"));
        }
    }
    for call in &h.journal.published {
        if let Some(fault) = call.fault {
            edges.push(format!("fault: {} at {}", fault.kind(), Op::Publish.name()));
        }
    }
    let lease_faults = h.journal.buckets.iter().filter(|b| b.failed).count();
    if lease_faults > 0 {
        edges.push("pacing bucket write failed (static share)".to_owned());
    }
    if h.attempts
        .iter()
        .any(|a| !a.source.is_http() && a.receive > 1)
    {
        edges.push("SQS redelivery".to_owned());
    }
    if h.attempts.iter().any(|a| {
        a.source.is_http()
            && a.key.is_some()
            && h.attempts
                .iter()
                .any(|b| b.inv < a.inv && b.key == a.key && b.request == a.request)
    }) {
        edges.push("HTTP key repeated".to_owned());
    }
    if h.attempts.iter().any(|a| a.answer.replayed) {
        edges.push("key replay".to_owned());
    }
    if h.attempts
        .iter()
        .any(|a| a.answer.code.as_deref() == Some("caller-budget-exhausted"))
    {
        edges.push("budget exhausted".to_owned());
    }
    if h.journal
        .cognito
        .iter()
        .any(|c| c.op == Op::SignOut && c.answered != Answered::Ok)
    {
        edges.push("sign-out failed".to_owned());
    }
    if h.attempts.iter().any(|a| {
        !a.source.is_http()
            && !a.answer.acked
            && a.answer.outcome == "RESET"
            && a.answer
                .event
                .as_ref()
                .is_some_and(|e| e.signed_out == Some(false))
    }) {
        edges.push("SQS record handed back for its sign-out".to_owned());
    }
    if h.attempts.iter().any(sign_out_only) {
        edges.push("sign-out retried alone on redelivery".to_owned());
    }
    if h.journal
        .cognito
        .iter()
        .any(|c| c.op == Op::Resend && c.performed)
    {
        edges.push("invitation resent".to_owned());
    }
    if h.attempts.iter().any(|a| a.answer.outcome == "WOULD_RESET") {
        edges.push("DRY_RUN WOULD_RESET".to_owned());
    }
    if h.options.other_account
        && h.attempts.iter().any(|a| {
            a.req.pool == Pool::Foreign
                && a.answer.event.as_ref().is_some_and(|e| {
                    e.pool_account.as_deref() == Some(FOREIGN_ACCOUNT)
                        && e.outcome.as_str() == "RESET"
                })
        })
    {
        edges.push("reset in another account".to_owned());
    }
    if !h.cut_after.is_empty() {
        edges.push("throttle cut the rate (AIMD)".to_owned());
    }
    if h.journal.buckets.iter().any(|b| b.cut && b.applied) {
        edges.push("rate cut written to the shared bucket".to_owned());
    }
    if h.journal.buckets.iter().any(|b| !b.cut && b.applied) {
        edges.push("lease from the shared bucket".to_owned());
    }
    if h.attempts
        .iter()
        .any(|a| a.answer.code.as_deref() == Some("deadline"))
        && h.options.pacing != crate::world::Pacing::Off
    {
        edges.push("RETRY deadline under pacing".to_owned());
    }
    if h.invocations.windows(2).any(|w| w[1].start < w[0].end) {
        edges.push("concurrent instances".to_owned());
    }
    // Approvals.
    for a in &h.attempts {
        let code = a.answer.code.as_deref();
        match &a.decision {
            None if a.answer.outcome == "PENDING" => edges.push(format!(
                "PENDING{} over {}",
                if a.answer.replayed { " replayed" } else { "" },
                if a.source.is_http() { "HTTP" } else { "SQS" }
            )),
            None => {}
            Some(_) => {
                let what = match (a.answer.outcome.as_str(), code) {
                    ("RESET", None) => "approved: RESET".to_owned(),
                    (_, Some(c)) if APPROVAL_CODES.contains(&c) => format!("decision: {c}"),
                    (outcome, Some(c)) => format!("approved: {outcome} {c}"),
                    (outcome, None) => format!("decision: {outcome}"),
                };
                edges.push(format!(
                    "{what}{}",
                    if a.answer.replayed { " (replayed)" } else { "" }
                ));
            }
        }
    }
    for call in &h.journal.guard {
        let approval_op = matches!(
            call.op,
            Op::Request | Op::Decide | Op::Approval | Op::PeekUser | Op::PeekBudget | Op::Keep
        );
        if approval_op && call.fault.is_some() {
            edges.push(format!("a fault at {}", call.op.name()));
        }
        if matches!(call.op, Op::Request | Op::Decide) && call.injected() && call.wrote {
            edges.push("an approval write landed under a fault".to_owned());
        }
    }
    if h.journal.cognito.iter().any(|c| {
        c.fault.is_some()
            && h.attempts
                .iter()
                .any(|a| a.inv == c.inv && a.decision.is_some())
    }) {
        edges.push("a fault at Cognito in an approved reset".to_owned());
    }
    if h.attempts.iter().enumerate().any(|(i, a)| {
        a.decision.as_ref().is_some_and(|d| {
            h.attempts[i + 1..].iter().any(|b| {
                b.decision
                    .as_ref()
                    .is_some_and(|e| e.approval_id == d.approval_id && d.pending.is_some())
                    && h.inv(b).start < h.inv(a).end
            })
        })
    }) {
        edges.push("two decisions on one approval at once".to_owned());
    }
    edges.sort();
    edges.dedup();
    seen.extend(edges);
    seen
}

/// The edge classes a test must meet, each in at least this share of its schedules (so that
/// the thresholds scale with `FAULTS_CASES`): every fault kind its strategy injects at every
/// port call it injects at, every deadline stage at Cognito and at the guard, and the
/// mix's own edges.
pub fn required(mix: Mix) -> Vec<(String, f64)> {
    use crate::faults::When;
    let mut required = Vec::new();
    if matches!(mix, Mix::Faults) {
        // About 1/109 of the schedules aim at each pair (about 14 at the default scale): each
        // at least once.
        for (op, fault) in crate::schedule::matrix() {
            required.push((format!("fault: {} at {}", fault.kind(), op.name()), 0.0007));
        }
        required.push(("SQS record handed back for its sign-out".to_owned(), 0.005));
        required.push(("sign-out retried alone on redelivery".to_owned(), 0.003));
        return required;
    }
    for at in [
        When::BeforeMargin,
        When::InMargin,
        When::LastQuarter,
        When::AfterDeadline,
    ] {
        required.push((format!("answer {at} at Cognito"), 0.005));
        if !matches!(mix, Mix::Paced) {
            required.push((format!("answer {at} at the guard"), 0.005));
        }
    }
    let mut edge = |what: &str, share: f64| required.push((what.to_owned(), share));
    match mix {
        Mix::All | Mix::Windows => {
            edge("SQS redelivery", 0.05);
            edge("HTTP key repeated", 0.05);
            edge("key replay", 0.02);
        }
        Mix::Sqs => {
            edge("SQS redelivery", 0.05);
            edge("key replay", 0.02);
        }
        Mix::Http => {
            edge("HTTP key repeated", 0.05);
            edge("key replay", 0.02);
        }
        Mix::Helpdesk => {
            edge("concurrent instances", 0.02);
            edge("SQS redelivery", 0.05);
            edge("key replay", 0.02);
            edge("budget exhausted", 0.005);
            edge("sign-out failed", 0.01);
            edge("SQS record handed back for its sign-out", 0.004);
            edge("invitation resent", 0.02);
            edge("reset in another account", 0.02);
        }
        Mix::Paced => {
            edge("concurrent instances", 0.02);
            edge("throttle cut the rate (AIMD)", 0.02);
            edge("rate cut written to the shared bucket", 0.01);
            edge("lease from the shared bucket", 0.05);
            edge("pacing bucket write failed (static share)", 0.005);
            edge("RETRY deadline under pacing", 0.005);
            edge("budget exhausted", 0.005);
            edge("reset in another account", 0.01);
        }
        Mix::DryRun => {
            edge("concurrent instances", 0.02);
            edge("DRY_RUN WOULD_RESET", 0.1);
        }
        Mix::Faults => {}
        Mix::Approvals => {
            edge("PENDING over HTTP", 0.2);
            edge("PENDING over SQS", 0.02);
            edge("PENDING replayed over HTTP", 0.01);
            edge("PENDING replayed over SQS", 0.01);
            edge("approved: RESET", 0.1);
            edge("approved: RESET (replayed)", 0.05);
            edge("decision: approval-denied", 0.01);
            edge("decision: approval-denied (replayed)", 0.005);
            edge("decision: approval-expired", 0.005);
            edge("decision: self-approval", 0.01);
            edge("decision: not-an-approver", 0.01);
            edge("decision: approval-not-found", 0.01);
            edge("two decisions on one approval at once", 0.01);
            for op in [Op::Request, Op::Decide, Op::Approval, Op::PeekUser] {
                edge(&format!("a fault at {}", op.name()), 0.01);
            }
            edge("an approval write landed under a fault", 0.01);
            edge("a fault at Cognito in an approved reset", 0.02);
        }
    }
    required.retain(|(_, share)| *share > 0.0);
    required
}

/// Fails the test when an edge class of `required(mix)` was met in fewer schedules than its
/// share of `cases` (at least once), printing the whole table.
pub fn assert_coverage(test: &str, mix: Mix, seen: &BTreeMap<String, u32>, cases: u32) {
    let required = required(mix);
    let mut short = Vec::new();
    let mut lines = Vec::new();
    for (what, share) in &required {
        let need = ((f64::from(cases) * share) as u32).max(1);
        let got = seen.get(what).copied().unwrap_or(0);
        let mark = if got < need {
            short.push(what.clone());
            "  <-- too few"
        } else {
            ""
        };
        lines.push(format!("  {got:>5} / {need:>4}  {what}{mark}"));
    }
    for (what, got) in seen {
        if !required.iter().any(|(w, _)| w == what) {
            lines.push(format!("  {got:>5}         {what}"));
        }
    }
    assert!(
        short.is_empty(),
        "{test}: {} edge class(es) met too rarely over {cases} schedules (met / needed):\n{}",
        short.len(),
        lines.join("\n")
    );
}

fn abandoned_claims_any(h: &History) -> Vec<&GuardCall> {
    [POOL, FOREIGN_POOL]
        .into_iter()
        .flat_map(|pool| {
            User::EXISTING
                .iter()
                .filter_map(|u| u.canonical())
                .flat_map(move |u| abandoned_claims(h, pool, &u))
        })
        .collect()
}

// ---- one record's run, as the fakes saw it -----------------------------------------------------

/// Whether an attempt's answer reports only the sign-out of its earlier delivery's reset.
fn sign_out_only(a: &Attempt) -> bool {
    a.answer.event.as_ref().is_some_and(|e| e.sign_out_only)
}

/// One record's run from its user claim on: the claim, the budget spend and refund, the calls
/// that may send a code, the sign-outs. A record runs in one task (a FIFO group's records one
/// after the other in the same task), so the calls of a task after a claim, up to the next
/// claim, are that claim's record's.
#[derive(Debug)]
pub struct Segment<'h> {
    pub inv: usize,
    /// The record's audit id (the claim id's first part).
    pub record: String,
    pub claim: &'h GuardCall,
    pub spend: Option<&'h GuardCall>,
    /// Refunds (the spend given back because nothing was sent).
    pub refunds: Vec<&'h GuardCall>,
    /// Resets and resent invitations, every attempt.
    pub sends: Vec<&'h CognitoCall>,
    pub sign_outs: Vec<&'h CognitoCall>,
}

impl Segment<'_> {
    /// A code may have reached the user (performed, or answered ambiguously).
    pub fn may_have_sent(&self) -> bool {
        self.sends.iter().any(|c| c.may_have_sent())
    }
}

/// Every record run of a history, in the order of its claims.
pub fn segments(h: &History) -> Vec<Segment<'_>> {
    let meta = &h.journal.guard_meta;
    let mut claims: Vec<(usize, Option<tokio::task::Id>, u64, &GuardCall)> = h
        .journal
        .guard
        .iter()
        .zip(meta)
        .filter(|(c, _)| c.op == Op::Claim)
        .map(|(c, (task, seq))| (c.inv, *task, *seq, c))
        .collect();
    claims.sort_by_key(|(_, _, seq, _)| *seq);
    // A record run outside any task (a single HTTP request, on the invocation's own future)
    // has no task id: it is alone in its invocation.
    let owner = |inv: usize, task: Option<tokio::task::Id>, seq: u64| {
        claims
            .iter()
            .enumerate()
            .filter(|(_, (i, t, s, _))| *i == inv && *t == task && *s < seq)
            .map(|(n, _)| n)
            .next_back()
    };
    let mut segments: Vec<Segment<'_>> = claims
        .iter()
        .map(|(inv, _, _, claim)| Segment {
            inv: *inv,
            record: claim
                .claim_id
                .as_deref()
                .and_then(|c| c.split('/').next())
                .unwrap_or_default()
                .to_owned(),
            claim,
            spend: None,
            refunds: Vec::new(),
            sends: Vec::new(),
            sign_outs: Vec::new(),
        })
        .collect();
    for (call, (task, seq)) in h.journal.guard.iter().zip(meta) {
        if !matches!(call.op, Op::Spend | Op::Refund) {
            continue;
        }
        if let Some(n) = owner(call.inv, *task, *seq) {
            match call.op {
                Op::Spend => segments[n].spend = segments[n].spend.or(Some(call)),
                _ => segments[n].refunds.push(call),
            }
        }
    }
    for call in &h.journal.cognito {
        if !(call.op.sends_code() || call.op == Op::SignOut) {
            continue;
        }
        if let Some(n) = owner(call.inv, call.task, call.seq) {
            if call.op == Op::SignOut {
                segments[n].sign_outs.push(call);
            } else {
                segments[n].sends.push(call);
            }
        }
    }
    segments
}

/// The sign-out follows its own reset: `AdminUserGlobalSignOut` only under a rule that signs
/// out, only after a reset performed in the same record run, or in an SQS redelivery whose claim
/// found its own pending sign-out (and then nothing sends a code); only an SQS record is handed
/// back for its sign-out, and only after a sign-out failed.
pub fn sign_out_follows_its_reset(h: &History) -> Checked {
    const NAME: &str = "a sign-out follows its own reset";
    let all = segments(h);
    let signed_out: usize = all.iter().map(|s| s.sign_outs.len()).sum();
    let total = h
        .journal
        .cognito
        .iter()
        .filter(|c| c.op == Op::SignOut)
        .count();
    if total != signed_out {
        return violation(
            NAME,
            format!(
                "{} sign-out(s) were sent outside any record's run",
                total - signed_out
            ),
        );
    }
    if total > 0 && (h.options.sign_out == SignOut::Never || h.options.dry_run) {
        return violation(
            NAME,
            format!("{total} sign-out(s) were sent, but the rules never sign out or DRY_RUN is on"),
        );
    }
    for seg in &all {
        let Some(first) = seg.sign_outs.first() else {
            continue;
        };
        let pending = seg.claim.result == "sign-out pending";
        let reset_before = seg
            .sends
            .iter()
            .any(|c| c.op == Op::Reset && c.performed && c.seq < first.seq);
        if pending {
            if let Some(send) = seg.sends.first() {
                return violation(
                    NAME,
                    format!(
                        "record {} of invocation {} found its own pending sign-out, and sent {} again at t={} ms",
                        seg.record,
                        seg.inv,
                        send.op.name(),
                        h.at(send.start)
                    ),
                );
            }
            let sqs = h
                .attempts
                .iter()
                .any(|a| a.inv == seg.inv && a.audit_id == seg.record && !a.source.is_http());
            if !sqs {
                return violation(
                    NAME,
                    format!(
                        "record {} of invocation {} retried a pending sign-out, but it is no SQS record",
                        seg.record, seg.inv
                    ),
                );
            }
        } else if !reset_before {
            return violation(
                NAME,
                format!(
                    "record {} of invocation {} signed the user out at t={} ms without a reset performed before it",
                    seg.record,
                    seg.inv,
                    h.at(first.start)
                ),
            );
        }
    }
    // Handed back with a RESET: only over SQS, only after a sign-out failed that may pass.
    for a in &h.attempts {
        if a.source.is_http() || a.answer.acked || a.answer.outcome != "RESET" {
            continue;
        }
        let failed = a
            .answer
            .event
            .as_ref()
            .is_some_and(|e| e.signed_out == Some(false));
        // A copy of the same message in the batch that was not final, or whose sign-out failed,
        // hands it back too (the batch response names the message, not the copy).
        let copy_retried = h.attempts.iter().any(|b| {
            b.inv == a.inv
                && b.message_id == a.message_id
                && !std::ptr::eq(a, b)
                && (!b.answer.is_final
                    || b.answer
                        .event
                        .as_ref()
                        .is_some_and(|e| e.signed_out == Some(false)))
        });
        if copy_retried {
            continue;
        }
        if !failed || last_receive(a) {
            return violation(
                NAME,
                format!(
                    "{} was told RESET and handed back, but its sign-out did not fail or this was its last receive",
                    describe(h, a)
                ),
            );
        }
    }
    Ok(())
}

/// The budget's window of a moment.
fn budget_window(h: &History, at: Instant, per_seconds: u32) -> u64 {
    let secs = h
        .wall(at)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs / u64::from(per_seconds.max(1))
}

/// A caller's budget holds: every record that sent a reset under a budgeted rule spent one of
/// its budget first; no S seconds hold more than N spends of records that may have sent a code
/// (counted at the moment of the spend, which is when the budget counts them); and
/// `caller-budget-exhausted` is answered only when N spends of that caller lay in the two
/// windows the budget counts (the current one and the one before it).
pub fn budgets_hold(h: &History) -> Checked {
    const NAME: &str = "a caller's budget holds";
    let Some((resets, per_seconds)) = h.options.budget else {
        return Ok(());
    };
    let all = segments(h);
    for seg in &all {
        let Some(send) = seg.sends.first() else {
            continue;
        };
        let spent = seg
            .spend
            .is_some_and(|s| s.result == "spent" && s.start <= send.start);
        if !spent {
            return violation(
                NAME,
                format!(
                    "record {} of invocation {} sent {} at t={} ms without spending its caller's budget",
                    seg.record,
                    seg.inv,
                    send.op.name(),
                    h.at(send.start)
                ),
            );
        }
    }
    let mut by_caller: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for seg in all.iter().filter(|s| s.may_have_sent()) {
        if let Some(spend) = seg.spend {
            by_caller.entry(&spend.pk).or_default().push(spend.start);
        }
    }
    let span = Duration::from_secs(u64::from(per_seconds));
    for (pk, mut moments) in by_caller {
        moments.sort();
        for pair in moments.windows(resets as usize + 1) {
            let (first, last) = (pair[0], pair[resets as usize]);
            if last < first + span {
                return violation(
                    NAME,
                    format!(
                        "{} resets of one caller ({}) were spent between t={} ms and t={} ms, less than {per_seconds} s apart, with a budget of {resets}",
                        resets + 1,
                        pk.get(..16).unwrap_or(pk),
                        h.at(first),
                        h.at(last)
                    ),
                );
            }
        }
    }
    // Exhausted only when full: N spends (given back or not after it) in windows w-1 and w.
    for seg in &all {
        let Some(spend) = seg.spend.filter(|s| s.result == "exhausted") else {
            continue;
        };
        let window = budget_window(h, spend.start, per_seconds);
        // The spends the budget may have counted when it read the item (by the end of this
        // spend), in this window and the one before.
        let before: Vec<&Segment<'_>> = all
            .iter()
            .filter(|other| {
                other.spend.is_some_and(|s| {
                    s.pk == spend.pk
                        && s.start <= spend.end
                        && window.saturating_sub(budget_window(h, s.start, per_seconds)) <= 1
                })
            })
            .collect();
        // A spend whose call was disturbed (a fault, a late answer: the SDK sends it again) may
        // count twice when another spend of the budget landed between its attempts: only the
        // last spend's token is remembered (`docs/guarantees.md`, which errs towards refusing).
        let overlapped = |s: &GuardCall| {
            (s.fault.is_some() || s.at.is_some())
                && before.iter().any(|o| {
                    o.spend
                        .is_some_and(|x| !std::ptr::eq(x, s) && x.start < s.end && s.start < x.end)
                })
        };
        let counted: usize = before
            .iter()
            .filter_map(|other| other.spend.map(|s| (other, s)))
            .filter(|(other, s)| {
                (s.result == "spent" || s.wrote)
                    // Given back before this spend was read: no longer counted.
                    && !other.refunds.iter().any(|r| r.wrote && r.end < spend.start)
            })
            .map(|(_, s)| if overlapped(s) { 2 } else { 1 })
            .sum();
        if counted < resets as usize {
            return violation(
                NAME,
                format!(
                    "record {} of invocation {} was refused caller-budget-exhausted at t={} ms, but only {counted} spend(s) of its caller lay in that window and the one before (budget {resets} per {per_seconds} s)",
                    seg.record,
                    seg.inv,
                    h.at(spend.start)
                ),
            );
        }
    }
    Ok(())
}

/// `DRY_RUN` changes nothing: no guard write, no reset, resent invitation or sign-out, no
/// pacing bucket written, and nobody is told RESET.
pub fn dry_run_changes_nothing(h: &History) -> Checked {
    const NAME: &str = "DRY_RUN changes nothing";
    if !h.options.dry_run {
        return Ok(());
    }
    if let Some(call) = h.journal.guard.iter().find(|c| c.wrote) {
        return violation(
            NAME,
            format!(
                "the guard's table was written in invocation {} ({} at t={} ms)",
                call.inv,
                call.op.name(),
                h.at(call.start)
            ),
        );
    }
    if let Some(call) = h
        .journal
        .cognito
        .iter()
        .find(|c| c.op.sends_code() || c.op == Op::SignOut)
    {
        return violation(
            NAME,
            format!(
                "{} was sent for {} in invocation {}",
                call.op.name(),
                call.name,
                call.inv
            ),
        );
    }
    if let Some(call) = h.journal.buckets.iter().find(|c| c.applied) {
        return violation(
            NAME,
            format!("a pacing bucket was written in invocation {}", call.inv),
        );
    }
    if let Some(a) = h.attempts.iter().find(|a| a.answer.outcome == "RESET") {
        return violation(NAME, format!("{} was told {}", describe(h, a), told(a)));
    }
    Ok(())
}

/// A record for a pool names that pool's account in its outcome event: the other account for
/// its pool, the function's own for the listed pool (with `FUNCTION_ACCOUNT_ID` set).
pub fn other_account_is_named(h: &History) -> Checked {
    const NAME: &str = "the pool's account is named";
    if !h.options.other_account {
        return Ok(());
    }
    for a in &h.attempts {
        let Some(event) = &a.answer.event else {
            continue;
        };
        if a.req.invalid {
            continue;
        }
        let expected = match a.req.pool {
            Pool::Foreign => Some(FOREIGN_ACCOUNT),
            Pool::Listed | Pool::Unlisted => Some(FUNCTION_ACCOUNT),
        };
        if event.pool_account.as_deref() != expected {
            return violation(
                NAME,
                format!(
                    "{}'s event names account {:?}, not {expected:?}",
                    describe(h, a),
                    event.pool_account
                ),
            );
        }
    }
    Ok(())
}

// ---- approvals -------------------------------------------------------------------------------

/// The answers a decision itself gives (not the approved reset's own).
const APPROVAL_CODES: &[&str] = &[
    "approval-denied",
    "approval-expired",
    "self-approval",
    "not-an-approver",
    "approval-not-found",
];

/// An event's outcome as the HTTP answer names it (`PENDING_APPROVAL` is answered `PENDING`).
fn event_outcome(e: &cognito_reset::aws::events::OutcomeEvent) -> &str {
    match e.outcome.as_str() {
        "PENDING_APPROVAL" => "PENDING",
        other => other,
    }
}

/// The approval id a PENDING answer gave (HTTP body, or the SQS message's event).
fn pending_id(a: &Attempt) -> Option<String> {
    a.answer
        .body
        .as_ref()
        .and_then(|b| b.get("approvalId"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .or_else(|| a.answer.event.as_ref()?.approval_id.clone())
}

/// An approval the table holds: what its creation was asked (the journal's, not the code's
/// answer), for a creation that landed.
struct Asked<'h> {
    id: String,
    requester: String,
    pool: String,
    user: String,
    ticket: String,
    sign_out: bool,
    /// Epoch seconds.
    decide_by: u64,
    call: &'h GuardCall,
}

/// A decision that landed: what it was asked.
struct Landed<'h> {
    id: String,
    verdict: String,
    approver: String,
    call: &'h GuardCall,
}

fn text(detail: &serde_json::Value, field: &str) -> String {
    detail[field].as_str().unwrap_or_default().to_owned()
}

fn asked(h: &History) -> Vec<Asked<'_>> {
    h.journal
        .guard
        .iter()
        .filter(|c| c.op == Op::Request && c.wrote)
        .filter_map(|call| {
            let d = call.detail.as_ref()?;
            Some(Asked {
                id: text(d, "approvalId"),
                requester: text(d, "requester"),
                pool: text(d, "pool"),
                user: text(d, "user"),
                ticket: text(d, "ticket"),
                sign_out: d["signOut"].as_bool().unwrap_or(false),
                decide_by: d["decideBy"].as_u64().unwrap_or(0),
                call,
            })
        })
        .collect()
}

fn landed(h: &History) -> Vec<Landed<'_>> {
    h.journal
        .guard
        .iter()
        .filter(|c| c.op == Op::Decide && c.wrote)
        .filter_map(|call| {
            let d = call.detail.as_ref()?;
            Some(Landed {
                id: text(d, "approvalId"),
                verdict: text(d, "verdict"),
                approver: text(d, "approver"),
                call,
            })
        })
        .collect()
}

/// The wall clock's whole seconds at `t` (what an approval's time is counted in).
fn wall_secs(h: &History, t: Instant) -> u64 {
    h.wall(t)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An identity without an assumed role's session name: sessions of one role are one requester.
fn role(identity: &str) -> &str {
    match identity.rsplit_once('/') {
        Some((role, _)) if identity.contains(":assumed-role/") => role,
        _ => identity,
    }
}

/// Whether `approver` may decide a request of `requester`: it matches the privileged rule's
/// approvers (the world's `APPROVERS`: the leads' and the portal's roles) and is not the
/// requester (nor another session of its role).
fn valid_approver(approver: &str, requester: &str) -> bool {
    let approves = approver.contains(":assumed-role/helpdesk-lead/")
        || approver.contains(":assumed-role/helpdesk-portal/");
    approves && role(approver) != role(requester)
}

/// No reset of a user whose rule requires approval (Pam) without an approve decision that
/// landed, by a valid approver, before the approval's time was over, for that very request
/// (pool, user, ticket; sign-out only if the request or the rule asked it), and sent in a
/// decision on that approval; every landed decision in time and by a valid approver, one per
/// approval; at most one reset performed per approval.
pub fn approvals_hold(h: &History) -> Checked {
    const NAME: &str = "no reset without its approval";
    let canonical = User::Pam.canonical().unwrap_or_default();
    let asked = asked(h);
    let landed = landed(h);
    let decided_in = |inv: usize, id: &str| {
        h.attempts
            .iter()
            .any(|a| a.inv == inv && a.decision.as_ref().is_some_and(|d| d.approval_id == id))
    };
    // Approved in time, by a valid approver, before `at`.
    let approved = |r: &Asked<'_>, at: Instant| {
        landed.iter().any(|d| {
            d.id == r.id
                && d.verdict == "approve"
                && valid_approver(&d.approver, &r.requester)
                && d.call.start <= at
                && wall_secs(h, d.call.start) < r.decide_by
        })
    };
    for call in h.journal.cognito.iter().filter(|c| c.name == canonical) {
        if !(call.op.sends_code() || call.op == Op::SignOut) {
            continue;
        }
        let ok = asked.iter().any(|r| {
            r.pool == call.pool
                && r.user == call.name
                && decided_in(call.inv, &r.id)
                && approved(r, call.start)
                && match call.op {
                    Op::SignOut => {
                        h.options.sign_out == SignOut::Always
                            || (h.options.sign_out == SignOut::Allowed && r.sign_out)
                    }
                    _ => call.ticket.as_deref() == Some(r.ticket.as_str()),
                }
        });
        if !ok {
            return violation(
                NAME,
                format!(
                    "{} was sent for {} ({}) at t={} ms in invocation {}, without an approval of that request decided in time by a valid approver in a decision on it",
                    call.op.name(),
                    call.name,
                    call.ticket.as_deref().unwrap_or("no ticket"),
                    h.at(call.start),
                    call.inv
                ),
            );
        }
    }
    for d in &landed {
        let Some(r) = asked.iter().find(|r| r.id == d.id) else {
            return violation(
                NAME,
                format!(
                    "a decision on {} landed, but no such approval was created",
                    d.id
                ),
            );
        };
        if wall_secs(h, d.call.start) >= r.decide_by {
            return violation(
                NAME,
                format!(
                    "a decision ({} by {}) on {} landed at t={} ms, after its time (epoch {} s)",
                    d.verdict,
                    d.approver,
                    d.id,
                    h.at(d.call.start),
                    r.decide_by
                ),
            );
        }
        if !valid_approver(&d.approver, &r.requester) {
            return violation(
                NAME,
                format!(
                    "{} decided {} ({}), a request of {}: not a valid approver",
                    d.approver, d.id, d.verdict, r.requester
                ),
            );
        }
        if landed.iter().filter(|e| e.id == d.id).count() > 1 {
            return violation(NAME, format!("two decisions on {} landed", d.id));
        }
    }
    // One code per approval, whoever decides, however often, at once or with retries (an
    // ambiguous reset's `reset-unconfirmed` is kept under the approval's key, undecided while
    // the user item holds it; a decision whose key's end could not be recorded leaves the key a
    // dead holder's, and a later decision after the window is refused, not sent). No exception.
    for r in &asked {
        let performed: Vec<&CognitoCall> = h
            .journal
            .cognito
            .iter()
            .filter(|c| {
                c.op.sends_code()
                    && (c.performed || c.ambiguous())
                    && c.name == r.user
                    && c.ticket.as_deref() == Some(r.ticket.as_str())
                    && decided_in(c.inv, &r.id)
            })
            .collect();
        let counted = performed.len();
        if performed.iter().filter(|c| c.performed).count() > 1 && counted > 1 {
            return violation(
                NAME,
                format!(
                    "approval {} ({}) reset the user {} times (invocations {:?})",
                    r.id,
                    r.ticket,
                    performed.len(),
                    performed.iter().map(|c| c.inv).collect::<Vec<_>>()
                ),
            );
        }
    }
    Ok(())
}

/// A decision's answer is true and faithful: RESET only for a valid approver's landed approval
/// (the reset itself is `nothing_lost`'s), `approval-denied` only for a landed denial,
/// `approval-expired` only once the time is over and nothing decided, `self-approval` only for
/// the requester's role, `not-an-approver` only for a caller who approves nothing,
/// `approval-not-found` only for an id never created; none of these refusals sends anything;
/// a replayed decision repeats the first decision's answer, and once a decision was answered
/// RESET or `approval-denied`, a later valid decision is given that answer again.
pub fn decisions_are_true(h: &History) -> Checked {
    const NAME: &str = "decisions are true and replayed faithfully";
    let asked = asked(h);
    let landed = landed(h);
    let decisions: Vec<(&Attempt, &crate::harness::DecisionOf)> = h
        .attempts
        .iter()
        .filter_map(|a| a.decision.as_ref().map(|d| (a, d)))
        .collect();
    for &(a, d) in &decisions {
        let inv = h.inv(a);
        let r = asked.iter().find(|r| r.id == d.approval_id);
        let landed_by = |verdict: &str, until: Instant| {
            landed
                .iter()
                .any(|l| l.id == d.approval_id && l.verdict == verdict && l.call.start <= until)
        };
        let sent = h.journal.cognito.iter().any(|c| {
            c.inv == a.inv && (c.op.sends_code() || c.op == Op::SignOut) && c.may_have_sent()
        });
        let code = a.answer.code.as_deref();
        let (fine, because) = match (a.answer.outcome.as_str(), code) {
            ("RESET", None) => (
                r.is_some_and(|r| valid_approver(a.sender.arn(), &r.requester))
                    && landed_by("approve", inv.end),
                "no approve decision landed, or its decider is no valid approver",
            ),
            (_, Some("approval-denied")) => (
                !sent
                    && landed.iter().any(|l| {
                        l.id == d.approval_id
                            && l.verdict == "deny"
                            && l.call.start <= inv.end
                            // Fresh: its own denial. The same approver's same denial at the
                            // same moment (another instance) counts as its own: the guard
                            // cannot tell it from the SDK's retry of its own landed write
                            // (`decide` compares verdict and approver), so both are told the
                            // fresh answer; any other decider's is `Lost` and replayed.
                            && (a.answer.replayed || l.approver == a.sender.arn())
                    }),
                "no deny decision (its own, unless replayed) landed, or something was sent",
            ),
            (_, Some("approval-expired")) => (
                !sent
                    && !landed.iter().any(|l| l.id == d.approval_id)
                    && r.is_some_and(|r| wall_secs(h, inv.end) >= r.decide_by),
                "the approval was decided, or its time was not over, or something was sent",
            ),
            (_, Some("self-approval")) => (
                !sent && r.is_some_and(|r| role(a.sender.arn()) == role(&r.requester)),
                "the decider is not the requester, or something was sent",
            ),
            (_, Some("not-an-approver")) => (
                !sent && a.sender == crate::world::Sender::Intruder,
                "the decider approves this rule's requests, or something was sent",
            ),
            (_, Some("approval-not-found")) => (
                !sent && (d.approval_id == UNKNOWN_APPROVAL || r.is_none()),
                "the approval was created, or something was sent",
            ),
            _ => (true, ""),
        };
        if !fine {
            return violation(
                NAME,
                format!(
                    "the decision {} by {} on {} (invocation {}) was told {}, but {because}",
                    d.verdict.as_str(),
                    a.sender.name(),
                    d.approval_id,
                    a.inv,
                    told(a)
                ),
            );
        }
        // A replayed decision: the first decision's answer; or, when that decision's decider
        // was never told (its landed write's answer was lost, a RETRY), the landed verdict.
        if a.answer.replayed {
            let fresh: Vec<&Attempt> = decisions
                .iter()
                .filter(|&&(b, e)| {
                    e.approval_id == d.approval_id
                        && !b.answer.replayed
                        && b.answer.is_final
                        // A refused decision (self-approval, ...) decided nothing.
                        && (b.answer.code.as_deref() == Some("approval-denied")
                            || !APPROVAL_CODES.contains(&b.answer.code.as_deref().unwrap_or("")))
                        && h.inv(b).start <= inv.start
                })
                .map(|&(b, _)| b)
                .collect();
            let first = if fresh.is_empty() {
                match (a.answer.outcome.as_str(), code) {
                    ("RESET", None) => landed_by("approve", inv.end),
                    (_, Some("approval-denied")) => landed_by("deny", inv.end),
                    _ => false,
                }
            } else {
                fresh.iter().any(|b| same_answer(a, b))
            };
            if !first {
                return violation(
                    NAME,
                    format!(
                        "the decision {} by {} on {} (invocation {}) was replayed {}, an answer no decision on it was given",
                        d.verdict.as_str(),
                        a.sender.name(),
                        d.approval_id,
                        a.inv,
                        told(a)
                    ),
                );
            }
        }
    }
    // Once answered RESET or approval-denied, a later valid decision gets that answer again
    // (or a RETRY: it could not read the approval or the approved reset's key).
    for &(a, d) in &decisions {
        let final_ = !a.answer.replayed
            && (a.answer.outcome == "RESET" && a.answer.code.is_none()
                || a.answer.code.as_deref() == Some("approval-denied"));
        let Some(r) = asked.iter().find(|r| r.id == d.approval_id) else {
            continue;
        };
        // The store failed under the approved reset (its key's answer may be unwritten).
        if !final_ || h.journal.guard.iter().any(|c| c.inv == a.inv && c.failed()) {
            continue;
        }
        for &(b, e) in &decisions {
            // The same approver's same decision at the same moment is told the fresh answer
            // too (see the denial above: the guard takes it for its own retry).
            let twin =
                b.sender == a.sender && e.verdict == d.verdict && h.inv(b).start <= h.inv(a).end;
            if e.approval_id != d.approval_id
                || b.inv == a.inv
                || twin
                || h.inv(b).start < h.inv(a).end
                || !valid_approver(b.sender.arn(), &r.requester)
                || !b.answer.is_final
            {
                continue;
            }
            if !(b.answer.replayed && same_answer(a, b)) {
                return violation(
                    NAME,
                    format!(
                        "the decision {} by {} on {} (invocation {}) was told {}; the later decision {} by {} (invocation {}) was told {}",
                        d.verdict.as_str(),
                        a.sender.name(),
                        d.approval_id,
                        a.inv,
                        told(a),
                        e.verdict.as_str(),
                        b.sender.name(),
                        b.inv,
                        told(b)
                    ),
                );
            }
        }
    }
    Ok(())
}
