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
use crate::harness::{Attempt, History, last_receive};
use crate::world::{COOLDOWN, MARGIN, POOL, User, refusal_by_policy};
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
    replays_are_faithful(history)?;
    refused_requests_write_nothing(history)?;
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

fn resets_of<'h>(h: &'h History, canonical: &str) -> impl Iterator<Item = &'h CognitoCall> {
    h.journal
        .cognito
        .iter()
        .filter(move |c| c.op == Op::Reset && c.name == canonical)
}

fn user_pk(canonical: &str) -> String {
    format!("user#{POOL}#{canonical}")
}

/// Claims nobody finished: written, never completed, because the store failed under them after
/// every attempt the production client makes (the claim landed and its caller was told an
/// error, or every completion failed). This is the one case the promise cannot cover: no write
/// can record anything while the table answers nothing, so the user item says "claimed" until
/// its lease ends and then counts as a possible reset. A lost answer that a retry can recover
/// (a 5xx or a cut connection after the write) is not abandoned: the retry meets its own claim.
/// A claim whose completion was never even attempted is not abandoned either: that is the bug
/// the margin's stages exist to prevent.
fn abandoned_claims<'h>(h: &'h History, canonical: &str) -> Vec<&'h GuardCall> {
    let pk = user_pk(canonical);
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
            let completed = completions.iter().any(|c| c.wrote);
            let failed = completions.iter().any(|c| c.failed());
            // Never completed, and either a completion failed after its retries, or the claim
            // landed and its holder was told an error (so it could not know it held it).
            !completed && (failed || claim.failed())
        })
        .collect()
}

/// A record is answered final (acknowledged over SQS; 2xx, 4xx or 502 `reset-unconfirmed` over
/// HTTP) only if its outcome is true.
pub fn nothing_lost(h: &History) -> Checked {
    const NAME: &str = "nothing lost";
    // RESET: a reset was performed for this record (its ticket) in its invocation.
    let mut fresh_resets: BTreeMap<(usize, String), Vec<&Attempt>> = BTreeMap::new();
    for a in &h.attempts {
        if a.answer.is_final && !a.answer.replayed && a.answer.code.is_none() {
            fresh_resets.entry((a.inv, a.ticket())).or_default().push(a);
        }
    }
    for ((inv, ticket), told_reset) in &fresh_resets {
        let performed = h
            .journal
            .cognito
            .iter()
            .filter(|c| {
                c.op == Op::Reset
                    && c.inv == *inv
                    && c.ticket.as_deref() == Some(ticket.as_str())
                    && c.performed
                    && c.answered == Answered::Ok
            })
            .count();
        // Or the same request's earlier reset, whose answer was lost, was performed: the user's
        // status (RESET_REQUIRED) proved it, and the record is told RESET with no second call.
        let proved_earlier = h.journal.cognito.iter().any(|c| {
            c.op == Op::Reset
                && c.inv < *inv
                && c.ticket.as_deref() == Some(ticket.as_str())
                && c.performed
                && c.ambiguous()
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
        let code = a.answer.code.as_deref();
        if let Some(expected) = refusal_by_policy(a.sender, &a.req) {
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
            if a.answer.outcome != "RESET" {
                return violation(NAME, format!("{} was told {}", describe(h, a), told(a)));
            }
            continue;
        };
        let inside =
            |start: Instant, in_inv: usize| start <= inv.end && inv.start < window_end(h, in_inv);
        let refused_by_cognito = |kinds: &[CognitoErrorKind]| {
            h.journal.cognito.iter().any(|c| {
                c.inv == a.inv
                    && (c.name.eq_ignore_ascii_case(&a.req.name()) || c.name == canonical)
                    && matches!(c.answered, Answered::Err(kind, _) if kinds.contains(&kind))
            })
        };
        let (true_, because) = match code {
            "recently-reset" => (
                resets_of(h, &canonical).any(|r| r.performed && inside(r.start, r.inv)),
                format!("no reset of {canonical} was performed inside the window"),
            ),
            "reset-unconfirmed" => (
                resets_of(h, &canonical).any(|r| r.ambiguous() && inside(r.start, r.inv))
                    || abandoned_claims(h, &canonical)
                        .iter()
                        .any(|c| inside(c.start, c.inv)),
                format!(
                    "no reset of {canonical} got an ambiguous answer inside the window, and no claim on it was abandoned by a failure of the store"
                ),
            ),
            "idempotency-key-reused" => (
                h.attempts.iter().any(|b| {
                    b.key.is_some() && b.key == a.key && b.request != a.request && b.inv <= a.inv
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
    let users: Vec<String> = [User::Ann, User::Bob, User::Mal]
        .iter()
        .filter_map(|u| u.canonical())
        .collect();
    for user in &users {
        let sent: Vec<&CognitoCall> = resets_of(h, user).collect();
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

/// Whether a record's own reset got an ambiguous answer (HTTP 502 `reset-unconfirmed`, final
/// and kept), as opposed to meeting another reset's window (409, passes with the window). Over
/// SQS, where no status tells, a message's ticket is its own: its reset in that invocation.
fn own_reset_ambiguous(h: &History, a: &Attempt) -> bool {
    if a.source.is_http() {
        return a.answer.status == Some(502);
    }
    h.journal.cognito.iter().any(|c| {
        c.op == Op::Reset
            && c.inv == a.inv
            && c.ticket.as_deref() == Some(&a.ticket())
            && c.ambiguous()
    })
}

/// A rejection that passes when the cooldown window ends (it comes with `Retry-After`).
fn passes_with_window(h: &History, a: &Attempt) -> bool {
    match a.answer.code.as_deref() {
        Some("recently-reset") => true,
        Some("reset-unconfirmed") => !own_reset_ambiguous(h, a),
        _ => false,
    }
}

/// Answers a key keeps: RESET, and the refusals decided after the key was taken (not
/// `recently-reset` nor a `reset-unconfirmed` that came from another request's window: both pass
/// when the window ends; a reset's own ambiguous answer is kept).
fn kept(a: &Attempt) -> bool {
    match a.answer.code.as_deref() {
        None => a.answer.outcome == "RESET",
        // Kept only when the user's status cannot settle it later (the harness's users are
        // CONFIRMED before their first reset, so an own ambiguous reset is settled by a retry).
        Some("reset-unconfirmed") => false,
        Some(code) => matches!(
            code,
            "denied-group"
                | "user-not-found"
                | "user-not-allowed"
                | "not-resettable"
                | "cannot-reset"
                | "user-disabled"
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
    let pk = user_pk(&a.req.user.canonical().unwrap_or_default());
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
    let same_key =
        |a: &Attempt, b: &Attempt| a.key.is_some() && a.key == b.key && a.request == b.request;
    for (j, b) in h.attempts.iter().enumerate() {
        if !b.answer.replayed {
            continue;
        }
        let originals: Vec<&Attempt> = h
            .attempts
            .iter()
            .enumerate()
            .filter(|(i, a)| *i != j && a.inv <= b.inv && same_key(a, b))
            .filter(|(_, a)| a.answer.is_final && !a.answer.replayed && same_answer(a, b))
            .map(|(_, a)| a)
            .collect();
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
            // A reset performed since opened a new window: that one may refuse.
            let reset_since = |until: Instant| {
                resets_of(h, &canonical)
                    .any(|r| r.performed && r.start > h.inv(a).end && r.start <= until)
            };
            if let Some(b) = h.attempts.iter().find(|b| {
                b.inv > a.inv
                    && same_key(a, b)
                    && h.inv(b).start >= passes
                    && b.answer.code.as_deref() == Some("recently-reset")
                    && !reset_since(h.inv(b).end)
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
        if !kept(a) || store_failed(h, a) {
            continue;
        }
        let later = h
            .attempts
            .iter()
            .enumerate()
            .filter(|(j, b)| *j != i && b.inv > a.inv && same_key(a, b))
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
                let expected = usize::from(a.answer.is_final);
                let event_matches = events.first().is_none_or(|e| {
                    e.outcome.as_str() == a.answer.outcome
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
                                    e.outcome.as_str(),
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
                    events.len() < copies && gave_up == 0
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
            let marked = inv
                .events
                .iter()
                .filter(|e| e.replayed && e.idempotency_key.as_ref() == Some(label))
                .count();
            if replays != marked {
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
pub fn coverage(h: &History) -> Vec<&'static str> {
    let mut seen = Vec::new();
    let mut note = |cond: bool, what: &'static str| {
        if cond {
            seen.push(what);
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
    seen
}

fn abandoned_claims_any(h: &History) -> Vec<&GuardCall> {
    [User::Ann, User::Bob, User::Mal]
        .iter()
        .filter_map(|u| u.canonical())
        .flat_map(|u| abandoned_claims(h, &u))
        .collect()
}
