//! The fake guard table: [`GuardStore`] over an in-memory table with exactly the semantics of
//! `DynamoGuard` (src/aws/guard.rs): the same conditional writes, `expiresAt` in whole seconds
//! (a live item is one with `expiresAt > floor(now)`), leases in milliseconds, key states
//! `pending`/`done`, user states `claimed`/`reset`/`unconfirmed`, and the same reading of the item
//! that made a write fail. The clock is [`wall_now`], which follows tokio's paused clock.
//!
//! Faults: a write may land or not before its failure; a late or hung call is cut at its budget
//! (the SDK's operation timeout) with the write landed; `Echo` is a write whose answer was lost
//! and that the SDK's retry then met (the second evaluation is what the caller is told).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::guard::{Claim, Completion, GuardStore, KeyRef, KeyState, UserState};
use cognito_reset::deadline::{
    epoch_ms as ms, epoch_secs_ceil as secs_ceil, epoch_secs_floor as secs_floor, wall_now,
};
use cognito_reset::failure::{GuardError, GuardErrorKind};
use tokio::time::Instant;

use crate::faults::{Fault, GuardCall, Injector, Op, arrive};
use crate::world::{COOLDOWN, IDEMPOTENCY_TTL};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyPhase {
    Pending,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UserPhase {
    Claimed,
    Reset,
    Unconfirmed,
}

#[derive(Clone, Debug)]
enum Item {
    Key {
        state: KeyPhase,
        request_hash: String,
        lease_until: u64,
        answer: Option<String>,
        expires_at: u64,
    },
    User {
        state: UserPhase,
        claim_id: String,
        claimed_at: u64,
        lease_until: u64,
        reset_at: Option<u64>,
        expires_at: u64,
    },
}

impl Item {
    fn expires_at(&self) -> u64 {
        match self {
            Item::Key { expires_at, .. } | Item::User { expires_at, .. } => *expires_at,
        }
    }
}

type Table = BTreeMap<String, Item>;

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A conditional write whose condition failed, as `DynamoGuard` classifies it.
fn condition_failed(operation: &'static str) -> GuardError {
    GuardError::new(
        GuardErrorKind::Upstream,
        operation,
        "ConditionalCheckFailedException",
    )
}

/// The result of applying one operation to the table: what the caller is told, and whether the
/// table changed.
struct Applied<T> {
    result: Result<T, GuardError>,
    wrote: bool,
}

fn begin(
    table: &mut Table,
    key: &KeyRef,
    lease_until: SystemTime,
    now: SystemTime,
) -> Applied<KeyState<String>> {
    // KEY_CLAIM_CONDITION: absent, expired, or pending with its lease over.
    let takes = match table.get(&key.pk) {
        None => true,
        Some(item) => {
            item.expires_at() <= secs_floor(now)
                || matches!(item, Item::Key { state: KeyPhase::Pending, lease_until, .. } if *lease_until <= ms(now))
        }
    };
    if takes {
        table.insert(
            key.pk.clone(),
            Item::Key {
                state: KeyPhase::Pending,
                request_hash: key.request_hash.clone(),
                lease_until: ms(lease_until),
                answer: None,
                expires_at: secs_ceil(now + IDEMPOTENCY_TTL),
            },
        );
        return Applied {
            result: Ok(KeyState::Fresh),
            wrote: true,
        };
    }
    // key_state(): the item that stands in the way.
    let result = match table.get(&key.pk) {
        Some(Item::Key {
            request_hash,
            state,
            lease_until,
            answer,
            ..
        }) => {
            if *request_hash != key.request_hash {
                Ok(KeyState::Reused)
            } else {
                match state {
                    KeyPhase::Done => answer.clone().map(KeyState::Replay).ok_or_else(|| {
                        GuardError::new(
                            GuardErrorKind::Misconfigured,
                            "GetItem",
                            "a done key item has no answer",
                        )
                    }),
                    KeyPhase::Pending if *lease_until <= ms(now) => Ok(KeyState::Fresh),
                    KeyPhase::Pending => Ok(KeyState::InProgress),
                }
            }
        }
        // A user item has no requestHash.
        _ => Ok(KeyState::Reused),
    };
    Applied {
        result,
        wrote: false,
    }
}

fn finish(table: &mut Table, key: &KeyRef, answer: Option<String>, now: SystemTime) -> Applied<()> {
    // PENDING_CONDITION.
    let pending = matches!(
        table.get(&key.pk),
        Some(Item::Key {
            state: KeyPhase::Pending,
            ..
        })
    );
    if !pending {
        let operation = if answer.is_some() {
            "UpdateItem"
        } else {
            "DeleteItem"
        };
        return Applied {
            result: Err(condition_failed(operation)),
            wrote: false,
        };
    }
    match answer {
        Some(json) => {
            if let Some(Item::Key {
                state,
                answer,
                expires_at,
                ..
            }) = table.get_mut(&key.pk)
            {
                *state = KeyPhase::Done;
                *answer = Some(json);
                *expires_at = secs_ceil(now + IDEMPOTENCY_TTL);
            }
        }
        None => {
            table.remove(&key.pk);
        }
    }
    Applied {
        result: Ok(()),
        wrote: true,
    }
}

fn claim(
    table: &mut Table,
    claim: &Claim,
    lease_until: SystemTime,
    now: SystemTime,
) -> Applied<UserState> {
    let until = now + COOLDOWN.max(lease_until.duration_since(now).unwrap_or(Duration::ZERO));
    // CLAIM_CONDITION: absent or expired.
    let takes = table
        .get(&claim.pk)
        .is_none_or(|item| item.expires_at() <= secs_floor(now));
    if takes {
        table.insert(
            claim.pk.clone(),
            Item::User {
                state: UserPhase::Claimed,
                claim_id: claim.id.clone(),
                claimed_at: ms(now),
                lease_until: ms(lease_until),
                reset_at: None,
                expires_at: secs_ceil(until),
            },
        );
        return Applied {
            result: Ok(UserState::Claimed(claim.clone())),
            wrote: true,
        };
    }
    // user_state(): the item that stands in the way.
    let result = match table.get(&claim.pk) {
        Some(Item::User {
            state,
            claimed_at,
            lease_until,
            reset_at,
            expires_at,
            ..
        }) => {
            let until = UNIX_EPOCH + Duration::from_secs(*expires_at);
            match state {
                UserPhase::Reset => Ok(UserState::RecentlyReset {
                    reset_at: reset_at.map_or(now, at_ms),
                    until,
                    confirmed: true,
                }),
                UserPhase::Unconfirmed => Ok(UserState::RecentlyReset {
                    reset_at: at_ms(*claimed_at),
                    until,
                    confirmed: false,
                }),
                UserPhase::Claimed if *lease_until <= ms(now) => Ok(UserState::RecentlyReset {
                    reset_at: at_ms(*claimed_at),
                    until,
                    confirmed: false,
                }),
                UserPhase::Claimed => Ok(UserState::InProgress),
            }
        }
        _ => Err(GuardError::new(
            GuardErrorKind::Misconfigured,
            "GetItem",
            "a user item has no expiresAt",
        )),
    };
    Applied {
        result,
        wrote: false,
    }
}

fn complete(
    table: &mut Table,
    claim: &Claim,
    completion: Completion,
    now: SystemTime,
) -> Applied<()> {
    // HOLDER_CONDITION.
    let holds =
        matches!(table.get(&claim.pk), Some(Item::User { claim_id, .. }) if *claim_id == claim.id);
    let remember = !COOLDOWN.is_zero();
    if !holds {
        let operation = match completion {
            Completion::Reset | Completion::Unconfirmed if remember => "UpdateItem",
            _ => "DeleteItem",
        };
        return Applied {
            result: Err(condition_failed(operation)),
            wrote: false,
        };
    }
    match completion {
        Completion::Reset | Completion::Unconfirmed if remember => {
            if let Some(Item::User {
                state,
                reset_at,
                lease_until,
                expires_at,
                ..
            }) = table.get_mut(&claim.pk)
            {
                if completion == Completion::Reset {
                    *state = UserPhase::Reset;
                    *reset_at = Some(ms(now));
                } else {
                    *state = UserPhase::Unconfirmed;
                }
                *lease_until = ms(now);
                *expires_at = secs_ceil(now + COOLDOWN);
            }
        }
        _ => {
            table.remove(&claim.pk);
        }
    }
    Applied {
        result: Ok(()),
        wrote: true,
    }
}

/// The table behind [`GuardStore`], with the schedule's faults.
#[derive(Debug)]
pub struct FakeGuard {
    injector: Arc<Injector>,
    table: Mutex<Table>,
}

/// What a guard call is about, for the journal.
struct Subject<'a> {
    op: Op,
    label: &'a str,
    pk: &'a str,
    claim_id: Option<&'a str>,
    completion: Option<Completion>,
}

impl FakeGuard {
    pub fn new(injector: Arc<Injector>) -> FakeGuard {
        FakeGuard {
            injector,
            table: Mutex::default(),
        }
    }

    async fn call<T: Clone>(
        &self,
        subject: Subject<'_>,
        budget: Duration,
        describe: impl Fn(&T) -> (String, bool),
        apply: impl Fn(&mut Table, SystemTime) -> Applied<T>,
    ) -> Result<T, GuardError> {
        let op = subject.op;
        let ctx = self.injector.next(op);
        let start = Instant::now();
        let now = wall_now();
        let arrives = Some(ctx.arrival(start));
        let failure = |kind, what: &'static str| Some(GuardError::new(kind, op.name(), what));
        // Whether the write lands, and the failure answered instead (a timeout never answers).
        let (arrives, lands, failure) = match ctx.fault {
            None | Some(Fault::Echo) => (arrives, true, None),
            Some(Fault::Throttle | Fault::LimitExceeded) => (
                arrives,
                false,
                failure(
                    GuardErrorKind::Throttled,
                    "ProvisionedThroughputExceededException",
                ),
            ),
            Some(Fault::Refuse) => (
                arrives,
                false,
                failure(GuardErrorKind::Misconfigured, "AccessDeniedException"),
            ),
            Some(Fault::ServerError { landed }) => (
                arrives,
                landed,
                failure(GuardErrorKind::Upstream, "InternalServerError"),
            ),
            Some(Fault::Timeout { landed }) => (None, landed, None),
            Some(Fault::ConnectionReset | Fault::ConnectionRefused) => (
                arrives,
                false,
                failure(GuardErrorKind::Unavailable, "connection failed"),
            ),
            Some(Fault::Lost) => (
                arrives,
                true,
                failure(
                    GuardErrorKind::Unavailable,
                    "connection reset after sending",
                ),
            ),
        };
        let mut wrote = false;
        let mut applied = None;
        if lands {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let first = apply(&mut table, now);
            wrote = first.wrote;
            applied = Some(first.result);
            if ctx.fault == Some(Fault::Echo) {
                let again = apply(&mut table, now);
                wrote |= again.wrote;
                applied = Some(again.result);
            }
        }
        let cut = arrive(arrives, start + budget).await;
        let result = if cut {
            Err(GuardError::new(
                GuardErrorKind::Unavailable,
                op.name(),
                "timed out",
            ))
        } else {
            match (failure, applied) {
                (Some(failure), _) => Err(failure),
                (None, Some(result)) => result,
                (None, None) => unreachable!("every fault without a failure lands"),
            }
        };
        let (text, flag) = match &result {
            Ok(value) => describe(value),
            Err(e) => (format!("error {:?}", e.kind), false),
        };
        self.injector.guard(GuardCall {
            inv: ctx.inv,
            op,
            label: subject.label.to_owned(),
            pk: subject.pk.to_owned(),
            claim_id: subject.claim_id.map(str::to_owned),
            completion: subject.completion,
            start,
            end: Instant::now(),
            fault: ctx.fault,
            at: ctx.at,
            wrote,
            result: text,
            replay: op == Op::Begin && flag,
            claimed: op == Op::Claim && flag,
        });
        result
    }
}

impl GuardStore for FakeGuard {
    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>> {
        let subject = Subject {
            op: Op::Begin,
            label: &key.key,
            pk: &key.pk,
            claim_id: None,
            completion: None,
        };
        Box::pin(self.call(
            subject,
            budget,
            |state: &KeyState<String>| match state {
                KeyState::Fresh => ("fresh".to_owned(), false),
                KeyState::Replay(_) => ("replay".to_owned(), true),
                KeyState::InProgress => ("in progress".to_owned(), false),
                KeyState::Reused => ("reused".to_owned(), false),
            },
            move |table, now| begin(table, key, lease_until, now),
        ))
    }

    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Finish,
            label: &key.key,
            pk: &key.pk,
            claim_id: None,
            completion: None,
        };
        let kept = answer.is_some();
        Box::pin(self.call(
            subject,
            budget,
            move |_: &()| (if kept { "kept" } else { "released" }.to_owned(), false),
            move |table, now| finish(table, key, answer.clone(), now),
        ))
    }

    fn claim<'a>(
        &'a self,
        claim_ref: &'a Claim,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        let subject = Subject {
            op: Op::Claim,
            label: &claim_ref.pk,
            pk: &claim_ref.pk,
            claim_id: Some(&claim_ref.id),
            completion: None,
        };
        Box::pin(self.call(
            subject,
            budget,
            |state: &UserState| {
                match state {
                    UserState::Claimed(_) => ("claimed".to_owned(), true),
                    UserState::Free => ("free".to_owned(), false),
                    UserState::InProgress => ("in progress".to_owned(), false),
                    UserState::RecentlyReset { confirmed, .. } => (
                        if *confirmed {
                            "recently reset"
                        } else {
                            "reset unconfirmed"
                        }
                        .to_owned(),
                        false,
                    ),
                    // The harness never signs out, so never remembers a pending sign-out.
                    UserState::SignOutPending { .. } => ("sign-out pending".to_owned(), false),
                }
            },
            move |table, now| claim(table, claim_ref, lease_until, now),
        ))
    }

    fn complete<'a>(
        &'a self,
        claim_ref: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Complete,
            label: &claim_ref.pk,
            pk: &claim_ref.pk,
            claim_id: Some(&claim_ref.id),
            completion: Some(completion),
        };
        Box::pin(self.call(
            subject,
            budget,
            move |_: &()| (format!("{completion:?}").to_lowercase(), false),
            move |table, now| complete(table, claim_ref, completion, now),
        ))
    }
}
