//! The fake table held to DynamoDB (issue 24, part B): the same generated sequences of guard
//! operations run through the production guard ([`TableGuard`]) over the suite's in-memory
//! [`FakeTable`] (no faults) and over [`DynamoTable`] on a real moto server, and every answer
//! and every item must agree. That is what lets the fault suite's verdicts count for production:
//! the fake differs from DynamoDB only in storage, and here the storage is compared.
//!
//! The operations: keys begun and finished (the same key with another request too), users
//! claimed, completed and settled with every [`Completion`] (by their own claim, another
//! record's, or a claim that never held), unresolved resets settled as the user's status says
//! (happened, never happened; by their holder or not), requests as the pipeline makes them (key,
//! claim, an unresolved reset settled, then settle or complete, or the end of the record's own
//! pending sign-out), budgets spent and
//! refunded (in the spend's window, the one before or after), `DRY_RUN` reads of all three;
//! between them the clock advances across leases, cooldowns, budget windows and TTL expiries
//! (`expiresAt` is in seconds, so each sequence starts at a random millisecond). Both guards read
//! one virtual clock ([`TableGuard::with_clock`]): moto evaluates the conditions against the
//! `now` the guard puts in them, and deletes nothing by TTL, so both sides see the same time.
//! After every operation the items it may have written are read back (a consistent `GetItem`,
//! converted here strictly: an attribute of any other type than S or N is a difference) and
//! compared with the fake's; after each sequence, every item it could have touched. The run must
//! meet every kind of answer ([`MUST_MEET`]): it extends past its sequences, up to twice as
//! many, only while one has not been met.
//!
//! Not compared: retries (no fault is injected here) and concurrent writers (one operation at a
//! time). Moto needed no special handling: it returns the item with
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD` on `PutItem`/`UpdateItem`/`DeleteItem`, as
//! DynamoDB does.
//!
//! `#[ignore]`d: it needs moto, which `make faults-differential` installs and this test starts
//! itself (`MOTO_SERVER`, or `.tools/stack/bin/moto_server`) on a free loopback port, and stops
//! on every exit path (see [`Moto`]). A failure prints the shrunk sequence with both sides'
//! answers and `FAULTS_SEED` to replay it; `FAULTS_CASES` scales the number of sequences.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::guard::{
    BudgetScope, BudgetTurn, Claim, Completion, DynamoTable, GuardSettings, GuardStore, KeyAnswer,
    KeyRef, KeyState, Resolution, TableGuard, Undecided, UserState, configure,
};
use cognito_reset::deadline::epoch_ms;
use cognito_reset::failure::{GuardError, GuardErrorKind};
use cognito_reset::guard_logic::{CONFIRMED, Item, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::guard::FakeTable;

const TABLE: &str = "cognito-reset-guard";
const COOLDOWN: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(120);
/// Two resets per caller in any 20 seconds.
const BUDGET_RESETS: u32 = 2;
const BUDGET_SECONDS: u32 = 20;
const KEYS: usize = 2;
/// Two requests per key: the second one is the key reused.
const REQUESTS: usize = 2;
const USERS: usize = 2;
const RECORDS: usize = 2;
const BUDGETS: usize = 2;
/// The time each guard operation may take (moto on a busy machine: generous, and the client
/// does not retry, so a slow answer is never a landed write met again by its own retry).
const OPERATION: Duration = Duration::from_secs(30);
/// Sequences in a default run.
const DEFAULT_CASES: u32 = 32;
const MOTO_READY: Duration = Duration::from_secs(30);
const MOTO_STOP: Duration = Duration::from_secs(10);

// ---- the virtual clock -------------------------------------------------------------------------

/// The virtual time, in ms since the epoch (one sequence runs at a time).
static NOW_MS: AtomicU64 = AtomicU64::new(0);

fn virtual_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS.load(Ordering::SeqCst))
}

/// The operation being run, numbered across the run: both tables' guards take their budget
/// spends' and refunds' tokens from it, so that their items can be equal.
static OP_NUMBER: AtomicU64 = AtomicU64::new(0);

fn op_token() -> String {
    format!("op{:016x}", OP_NUMBER.load(Ordering::SeqCst))
}

// ---- the operations ----------------------------------------------------------------------------

/// How a claim is ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Reset,
    Release,
    Unconfirmed,
    ResetSignOutPending,
    /// `SignedOut`, for a reset this long ago.
    SignedOut {
        ago_ms: u64,
    },
}

/// What the user's status said of an unresolved reset: it happened (`RESET_REQUIRED`, this
/// long ago), or it never did (`CONFIRMED`).
#[derive(Debug, Clone, Copy)]
enum Said {
    Happened { ago_ms: u64 },
    NeverHappened,
}

fn said() -> impl Strategy<Value = Said> {
    prop_oneof![
        edge_ms().prop_map(|ago_ms| Said::Happened { ago_ms }),
        Just(Said::NeverHappened),
    ]
}

/// The resolution `said` stands for, now; a claim resolved as never happened holds until
/// `lease_until`.
fn resolution(said: Said, lease_until: SystemTime) -> Resolution {
    match said {
        Said::Happened { ago_ms } => Resolution::Happened {
            reset_at: virtual_now()
                .checked_sub(Duration::from_millis(ago_ms))
                .unwrap_or(UNIX_EPOCH),
        },
        Said::NeverHappened => Resolution::NeverHappened {
            lease_until,
            status_before: Some(CONFIRMED.to_owned()),
            own: false,
        },
    }
}

/// Which window a refund is for.
#[derive(Debug, Clone, Copy)]
enum RefundOf {
    /// The window of this budget's last spend (the current one if none).
    LastSpend,
    Current,
    Previous,
    Next,
}

/// Which of the claims made so far an operation ends (with none yet, a claim that never held).
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The last one made.
    Latest,
    /// One of them (modulo their number): often one that no longer holds.
    Any(usize),
}

/// One guard operation, or the clock moving on.
#[derive(Debug, Clone)]
enum Op {
    Begin {
        key: usize,
        request: usize,
        lease_ms: u64,
    },
    Finish {
        key: usize,
        request: usize,
        answer: bool,
    },
    Claim {
        user: usize,
        record: usize,
        lease_ms: u64,
    },
    Complete {
        claim: Which,
        end: End,
    },
    Settle {
        claim: Which,
        end: End,
        key: usize,
        request: usize,
        answer: Keep,
    },
    Spend {
        budget: usize,
    },
    Refund {
        budget: usize,
        of: RefundOf,
    },
    /// `DRY_RUN`'s reads.
    DryBegin {
        key: usize,
        request: usize,
    },
    DryClaim {
        user: usize,
        record: usize,
    },
    DrySpend {
        budget: usize,
    },
    /// Settles an unresolved reset held by `holder` (one of the claims made so far, often not
    /// the item's) for a new claim of `user` by `record`, as the user's status says.
    Resolve {
        user: usize,
        record: usize,
        holder: Which,
        status: Said,
        lease_ms: u64,
    },
    /// What the pipeline does with one record: take the key (when given; on anything but
    /// `Fresh`, stop), claim the user (met by an unresolved reset, settle it as `status`
    /// says), then end the claim with `end` (with the key's answer in one settle, when a key
    /// was taken), or, met by its own pending sign-out, end that; a claim refused releases the
    /// key.
    Request {
        key: Option<(usize, usize)>,
        user: usize,
        record: usize,
        lease_ms: u64,
        end: End,
        answer: Keep,
        status: Said,
    },
    Advance {
        ms: u64,
    },
}

/// Durations around the edges: leases, the cooldown, budget windows, the TTL, a second.
fn edge_ms() -> impl Strategy<Value = u64> {
    let s = |secs: u64| secs * 1000;
    prop_oneof![
        4 => 0u64..2_000,
        1 => prop::sample::select(vec![
            1,
            999,
            1_000,
            1_001,
            s(5) - 1,
            s(5),
            s(5) + 1,
            s(u64::from(BUDGET_SECONDS)) - 1,
            s(u64::from(BUDGET_SECONDS)),
            s(u64::from(BUDGET_SECONDS)) + 1,
            s(COOLDOWN.as_secs()) - 1,
            s(COOLDOWN.as_secs()),
            s(COOLDOWN.as_secs()) + 1,
            s(40),
            s(TTL.as_secs()) - 1,
            s(TTL.as_secs()),
            s(TTL.as_secs()) + 1,
        ]),
    ]
}

fn lease_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        1u64..3_000,
        Just(5_000),
        Just(COOLDOWN.as_millis() as u64 - 1),
        Just(45_000),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        2 => Just(End::Reset),
        2 => Just(End::Release),
        2 => Just(End::Unconfirmed),
        4 => Just(End::ResetSignOutPending),
        2 => edge_ms().prop_map(|ago_ms| End::SignedOut { ago_ms }),
    ]
}

fn which() -> impl Strategy<Value = Which> {
    prop_oneof![2 => Just(Which::Latest), 1 => any::<usize>().prop_map(Which::Any)]
}

/// One of `n` (the first three times as often as each other, so that sequences come back to
/// the same key, user, record and budget).
fn one_of(n: usize) -> impl Strategy<Value = usize> + Clone {
    prop_oneof![3 => Just(0usize), 1 => 1..n.max(2)].prop_map(move |i| i.min(n - 1))
}

/// Mostly true: an answer kept (a replay to meet), not a release.
fn mostly() -> impl Strategy<Value = bool> + Clone {
    prop_oneof![3 => Just(true), 1 => Just(false)]
}

/// How a settle ends the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Final,
    /// An ambiguous reset's answer, undecided for the user item's window.
    Undecided,
    Release,
}

fn keep() -> impl Strategy<Value = Keep> + Clone {
    prop_oneof![3 => Just(Keep::Final), 2 => Just(Keep::Undecided), 1 => Just(Keep::Release)]
}

fn op() -> impl Strategy<Value = Op> {
    let (key, request, user, record, budget) = (
        one_of(KEYS),
        one_of(REQUESTS),
        one_of(USERS),
        one_of(RECORDS),
        one_of(BUDGETS),
    );
    let request_key = prop::option::weighted(0.5, (key.clone(), request.clone()));
    prop_oneof![
        5 => edge_ms().prop_map(|ms| Op::Advance { ms }),
        5 => (request_key, user.clone(), record.clone(), lease_ms(), end(), keep(), said())
            .prop_map(|(key, user, record, lease_ms, end, answer, status)| Op::Request {
                key,
                user,
                record,
                lease_ms,
                // As the pipeline does: an undecided answer is an ambiguous reset's.
                end: if answer == Keep::Undecided { End::Unconfirmed } else { end },
                answer,
                status,
            }),
        3 => (user.clone(), record.clone(), which(), said(), lease_ms()).prop_map(
            |(user, record, holder, status, lease_ms)| Op::Resolve {
                user,
                record,
                holder,
                status,
                lease_ms,
            }
        ),
        3 => (user.clone(), record.clone(), lease_ms())
            .prop_map(|(user, record, lease_ms)| Op::Claim { user, record, lease_ms }),
        3 => (which(), end()).prop_map(|(claim, end)| Op::Complete { claim, end }),
        2 => (which(), end(), key.clone(), request.clone(), keep()).prop_map(
            |(claim, end, key, request, answer)| Op::Settle { claim, end, key, request, answer }
        ),
        3 => (key.clone(), request.clone(), lease_ms())
            .prop_map(|(key, request, lease_ms)| Op::Begin { key, request, lease_ms }),
        2 => (key.clone(), request.clone(), mostly())
            .prop_map(|(key, request, answer)| Op::Finish { key, request, answer }),
        4 => budget.clone().prop_map(|budget| Op::Spend { budget }),
        1 => (
            budget.clone(),
            prop_oneof![
                Just(RefundOf::LastSpend),
                Just(RefundOf::Current),
                Just(RefundOf::Previous),
                Just(RefundOf::Next),
            ]
        )
            .prop_map(|(budget, of)| Op::Refund { budget, of }),
        1 => (key, request).prop_map(|(key, request)| Op::DryBegin { key, request }),
        2 => (user, record).prop_map(|(user, record)| Op::DryClaim { user, record }),
        1 => budget.prop_map(|budget| Op::DrySpend { budget }),
    ]
}

/// Sequences every run starts with, for answers the generated ones reach too rarely: a key whose
/// holder died, taken over by its request's retry after the cooldown from its first take (the
/// user free: refused) and inside it (the user free: claimed), each released after.
fn scripted() -> Vec<(u64, Vec<Op>)> {
    let retry = |key: usize, user: usize| Op::Request {
        key: Some((key, 0)),
        user,
        record: 0,
        lease_ms: 5_000,
        end: End::Release,
        answer: Keep::Release,
        status: Said::NeverHappened,
    };
    let dies = |key: usize| Op::Begin {
        key,
        request: 0,
        lease_ms: 1,
    };
    let advance = |ms: u64| Op::Advance { ms };
    vec![(
        500,
        vec![
            dies(0),
            advance(COOLDOWN.as_millis() as u64 + 1_000),
            retry(0, 0),
            retry(0, 0),
            dies(1),
            advance(2_000),
            retry(1, 1),
            advance(COOLDOWN.as_millis() as u64),
            retry(1, 1),
        ],
    )]
}

/// A sequence: the millisecond it starts at (within a second) and its operations.
fn sequence() -> impl Strategy<Value = (u64, Vec<Op>)> {
    (0u64..1_000, prop::collection::vec(op(), 12..=24))
}

// ---- one sequence against both tables ----------------------------------------------------------

/// What an operation answered (errors by kind and operation: their text is the store's own).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Key(Result<KeyState<String>, (GuardErrorKind, &'static str)>),
    User(Result<UserState, (GuardErrorKind, &'static str)>),
    /// What settling an unresolved reset answered.
    Resolved(Result<UserState, (GuardErrorKind, &'static str)>),
    Budget(Result<BudgetTurn, (GuardErrorKind, &'static str)>),
    Done(Result<(), (GuardErrorKind, &'static str)>),
    /// A request's steps, in order.
    Steps(Vec<Answer>),
    Advanced,
}

fn error(e: GuardError) -> (GuardErrorKind, &'static str) {
    (e.kind, e.operation)
}

/// The names of one sequence's items: a fresh namespace per run, so that moto's table needs no
/// clearing between sequences (or shrinking runs).
struct Names {
    space: String,
    /// Every claim made so far, in order.
    claims: Vec<Claim>,
    /// Each budget's last spent window.
    spent: [Option<u64>; BUDGETS],
    counter: u64,
    /// How many runs have begun each key with each request: every begin is a new record run
    /// (a retry, a redelivery), with a holder of its own.
    runs: BTreeMap<(usize, usize), u64>,
    /// The undecided answer the latest run of each key and request took the key over from.
    undecided: BTreeMap<(usize, usize), Undecided>,
    /// The `since` of the dead holder's key the latest run of each key and request took over.
    abandoned: BTreeMap<(usize, usize), u64>,
}

impl Names {
    /// The key as the latest run of `request` holds it: its begin, then its finish or settle.
    fn key(&self, key: usize, request: usize) -> KeyRef {
        let run = self.runs.get(&(key, request)).copied().unwrap_or(0);
        KeyRef {
            abandoned: self.abandoned.get(&(key, request)).copied(),
            key: format!("k{key}"),
            pk: format!("key#{}-k{key}", self.space),
            request_hash: format!("request {request}"),
            holder: format!("run {request}.{run}"),
            undecided: self.undecided.get(&(key, request)).cloned(),
        }
    }

    /// A new run of `request` begins `key`.
    fn begin_run(&mut self, key: usize, request: usize) {
        *self.runs.entry((key, request)).or_default() += 1;
        self.undecided.remove(&(key, request));
        self.abandoned.remove(&(key, request));
    }

    fn user(&self, user: usize) -> String {
        format!("user#{}#u{user}", self.space)
    }

    fn budget(&self, budget: usize) -> BudgetScope {
        BudgetScope::new(
            "rule",
            &format!("{} caller {budget}", self.space),
            BUDGET_RESETS,
            BUDGET_SECONDS,
        )
    }

    /// A new claim of `user` by `record` (its id as the pipeline makes it:
    /// `<record>/<ms>/<counter>`).
    fn new_claim(&mut self, user: usize, record: usize) -> Claim {
        self.counter += 1;
        Claim {
            pk: self.user(user),
            abandoned: None,
            id: format!(
                "{}-r{record}/{}/{}",
                self.space,
                epoch_ms(virtual_now()),
                self.counter
            ),
            key: None,
        }
    }

    /// The claim `which` picks among those made (one that never held, before any was made).
    fn claim(&self, which: Which) -> Claim {
        let picked = match which {
            Which::Latest => self.claims.last(),
            Which::Any(index) => self.claims.get(index % self.claims.len().max(1)),
        };
        picked.cloned().unwrap_or_else(|| Claim {
            pk: self.user(0),
            abandoned: None,
            id: format!("{}-never/0/0", self.space),
            key: None,
        })
    }

    /// Every item a sequence can touch.
    fn universe(&self) -> Vec<String> {
        let keys = (0..KEYS).map(|k| self.key(k, 0).pk);
        let users = (0..USERS).map(|u| self.user(u));
        let budgets = (0..BUDGETS).map(|b| self.budget(b).pk);
        keys.chain(users).chain(budgets).collect()
    }
}

fn completion(end: End) -> Completion {
    match end {
        End::Reset => Completion::Reset,
        End::Release => Completion::Release,
        End::Unconfirmed => Completion::Unconfirmed,
        End::ResetSignOutPending => Completion::ResetSignOutPending,
        End::SignedOut { ago_ms } => Completion::SignedOut {
            reset_at: virtual_now()
                .checked_sub(Duration::from_millis(ago_ms))
                .unwrap_or(UNIX_EPOCH),
        },
    }
}

fn answer_json(answer: bool) -> Option<String> {
    answer.then(|| r#"{"outcome":"RESET"}"#.to_owned())
}

fn key_answer(keep: Keep) -> KeyAnswer<String> {
    match keep {
        Keep::Final => KeyAnswer::Final(r#"{"outcome":"RESET"}"#.to_owned()),
        Keep::Undecided => KeyAnswer::Undecided(r#"{"code":"reset-unconfirmed"}"#.to_owned()),
        Keep::Release => KeyAnswer::Release,
    }
}

/// The production guard over one table: read-write and `DRY_RUN`.
struct Side<T> {
    guard: TableGuard<T>,
    dry: TableGuard<T>,
}

impl<T: cognito_reset::aws::guard::Table + Clone> Side<T> {
    fn new(table: T, settings: &GuardSettings) -> Side<T> {
        Side {
            guard: TableGuard::new(table.clone(), settings, false)
                .with_clock(virtual_now)
                .with_tokens(op_token),
            dry: TableGuard::new(table, settings, true)
                .with_clock(virtual_now)
                .with_tokens(op_token),
        }
    }

    /// Runs `op` (`claim` and `completion` are the same values on both sides).
    async fn run(&self, op: &Op, names: &Names, claim: Option<&Claim>) -> Answer {
        let now = virtual_now();
        let lease = |ms: u64| now + Duration::from_millis(ms);
        match *op {
            Op::Begin {
                key,
                request,
                lease_ms,
            } => Answer::Key(
                self.guard
                    .begin(&names.key(key, request), lease(lease_ms), OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::Finish {
                key,
                request,
                answer,
            } => Answer::Done(
                self.guard
                    .finish(&names.key(key, request), answer_json(answer), OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::Claim { lease_ms, .. } => Answer::User(
                self.guard
                    .claim(
                        claim.expect("a new claim"),
                        lease(lease_ms),
                        status_of(claim),
                        OPERATION,
                    )
                    .await
                    .map_err(error),
            ),
            Op::Complete { end, .. } => Answer::Done(
                self.guard
                    .complete(claim.expect("a claim"), completion(end), OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::Settle {
                end,
                key,
                request,
                answer,
                ..
            } => Answer::Done(
                self.guard
                    .settle(
                        claim.expect("a claim"),
                        completion(end),
                        &names.key(key, request),
                        key_answer(answer),
                        OPERATION,
                    )
                    .await
                    .map_err(error),
            ),
            Op::Spend { budget } => Answer::Budget(
                self.guard
                    .spend(&names.budget(budget), OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::Refund { budget, of } => {
                let scope = names.budget(budget);
                let current = scope.window_of(now);
                let window = match of {
                    RefundOf::LastSpend => names.spent[budget].unwrap_or(current),
                    RefundOf::Current => current,
                    RefundOf::Previous => current.saturating_sub(1),
                    RefundOf::Next => current + 1,
                };
                Answer::Done(
                    self.guard
                        .refund(&scope, window, OPERATION)
                        .await
                        .map_err(error),
                )
            }
            Op::DryBegin { key, request } => Answer::Key(
                self.dry
                    .begin(&names.key(key, request), now, OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::DryClaim { .. } => Answer::User(
                self.dry
                    .claim(
                        claim.expect("a new claim"),
                        now,
                        status_of(claim),
                        OPERATION,
                    )
                    .await
                    .map_err(error),
            ),
            Op::DrySpend { budget } => Answer::Budget(
                self.dry
                    .spend(&names.budget(budget), OPERATION)
                    .await
                    .map_err(error),
            ),
            Op::Resolve {
                holder,
                status,
                lease_ms,
                ..
            } => Answer::Resolved(
                self.guard
                    .resolve(
                        claim.expect("a new claim"),
                        &names.claim(holder).id,
                        &resolution(status, lease(lease_ms)),
                        OPERATION,
                    )
                    .await
                    .map_err(error),
            ),
            Op::Request {
                key,
                lease_ms,
                end,
                answer,
                status,
                ..
            } => {
                let claim = claim.expect("a new claim");
                let mut key = key.map(|(key, request)| names.key(key, request));
                let mut steps = Vec::new();
                if let Some(key) = &mut key {
                    let begun = self.guard.begin(key, lease(lease_ms), OPERATION).await;
                    let held = match &begun {
                        Ok(KeyState::Fresh) => true,
                        Ok(KeyState::Resume(open)) => {
                            key.undecided = Some(open.clone());
                            true
                        }
                        Ok(KeyState::Abandoned { since }) => {
                            key.abandoned = Some(*since);
                            true
                        }
                        _ => false,
                    };
                    steps.push(Answer::Key(begun.map_err(error)));
                    if !held {
                        return Answer::Steps(steps);
                    }
                }
                // The claim carries what the key's begin found, as the guard's `claim` does.
                let claim = &Claim {
                    abandoned: key.as_ref().and_then(|k| k.abandoned),
                    ..claim.clone()
                };
                let state = self
                    .guard
                    .claim(claim, lease(lease_ms), status_of(Some(claim)), OPERATION)
                    .await
                    .map_err(error);
                steps.push(Answer::User(state.clone()));
                let state = match state {
                    Ok(UserState::Unresolved { holder, claim, .. }) => {
                        let settled = self
                            .guard
                            .resolve(
                                &claim,
                                &holder,
                                &resolution(status, lease(lease_ms)),
                                OPERATION,
                            )
                            .await
                            .map_err(error);
                        steps.push(Answer::Resolved(settled.clone()));
                        settled
                    }
                    other => other,
                };
                let ended = match (state, &key) {
                    (Ok(UserState::Claimed(held)), Some(key)) => {
                        self.guard
                            .settle(&held, completion(end), key, key_answer(answer), OPERATION)
                            .await
                    }
                    (Ok(UserState::Claimed(held)), None) => {
                        self.guard.complete(&held, completion(end), OPERATION).await
                    }
                    (Ok(UserState::SignOutPending { reset_at, claim }), _) => {
                        let signed_out = Completion::SignedOut { reset_at };
                        self.guard.complete(&claim, signed_out, OPERATION).await
                    }
                    (_, Some(key)) => self.guard.finish(key, None, OPERATION).await,
                    (_, None) => return Answer::Steps(steps),
                };
                steps.push(Answer::Done(ended.map_err(error)));
                Answer::Steps(steps)
            }
            Op::Advance { .. } => Answer::Advanced,
        }
    }
}

/// The items an operation may have written.
fn touched(op: &Op, names: &Names, claim: Option<&Claim>) -> Vec<String> {
    let mut pks: Vec<String> = claim.map(|c| c.pk.clone()).into_iter().collect();
    match *op {
        Op::Begin { key, .. } | Op::Finish { key, .. } | Op::Settle { key, .. } => {
            pks.push(names.key(key, 0).pk)
        }
        Op::Spend { budget } | Op::Refund { budget, .. } => pks.push(names.budget(budget).pk),
        Op::Request {
            key: Some((key, _)),
            ..
        } => pks.push(names.key(key, 0).pk),
        _ => {}
    }
    pks
}

/// DynamoDB's item `pk` on moto, read with a consistent `GetItem` and converted strictly.
async fn moto_item(client: &Client, pk: &str) -> Result<Option<Item>, String> {
    let output = client
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("GetItem {pk} on moto: {e:?}"))?;
    let Some(attributes) = output.item else {
        return Ok(None);
    };
    let mut item = Item::new();
    for (name, value) in attributes {
        let value = match &value {
            AttributeValue::S(text) => Value::S(text.clone()),
            AttributeValue::N(number) => Value::N(
                number
                    .parse()
                    .map_err(|_| format!("{pk}: {name} = {number}: not a u64"))?,
            ),
            other => return Err(format!("{pk}: {name} is stored as {other:?}, not S or N")),
        };
        item.insert(name, value);
    }
    Ok(Some(item))
}

/// One line of the transcript printed on a failure.
struct Line {
    index: usize,
    at_ms: u64,
    op: Op,
    claim: Option<Claim>,
    fake: Answer,
    moto: Answer,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>3}. t+{:>7} ms  {:?}",
            self.index, self.at_ms, self.op
        )?;
        if let Some(claim) = &self.claim {
            write!(f, " [claim {} of {}]", claim.id, claim.pk)?;
        }
        if self.fake == self.moto {
            write!(f, "\n       both: {:?}", self.fake)
        } else {
            write!(
                f,
                "\n       fake: {:?}\n       moto: {:?}",
                self.fake, self.moto
            )
        }
    }
}

/// What one sequence runs against.
struct Stack {
    client: Client,
    settings: GuardSettings,
    /// Each run's namespace.
    runs: AtomicU64,
    /// Where the virtual clock starts (a whole second).
    epoch_ms: u64,
}

/// Runs one sequence against a fresh fake table and moto's table: the answers met (see
/// [`class`]), or the first difference with the transcript up to it.
async fn run_sequence(
    stack: &Stack,
    start_ms: u64,
    ops: &[Op],
) -> Result<BTreeSet<&'static str>, String> {
    let run = stack.runs.fetch_add(1, Ordering::SeqCst);
    NOW_MS.store(stack.epoch_ms + start_ms, Ordering::SeqCst);
    let fake_table = Arc::new(FakeTable::new(stack.settings.client.timeout));
    let fake = Side::new(Arc::clone(&fake_table), &stack.settings);
    let moto = Side::new(
        DynamoTable::new(stack.client.clone(), &stack.settings),
        &stack.settings,
    );
    let mut names = Names {
        space: format!("run{run}"),
        claims: Vec::new(),
        spent: [None; BUDGETS],
        counter: 0,
        runs: BTreeMap::new(),
        undecided: BTreeMap::new(),
        abandoned: BTreeMap::new(),
    };
    let mut transcript: Vec<Line> = Vec::new();
    let mut met = BTreeSet::new();
    let report = |transcript: &[Line], what: String| {
        let lines: Vec<String> = transcript.iter().map(ToString::to_string).collect();
        format!("{what}\n\nthe sequence so far:\n{}", lines.join("\n"))
    };
    for (index, op) in ops.iter().enumerate() {
        match *op {
            Op::Begin { key, request, .. }
            | Op::DryBegin { key, request }
            | Op::Request {
                key: Some((key, request)),
                ..
            } => names.begin_run(key, request),
            _ => {}
        }
        let claim = match *op {
            Op::Claim { user, record, .. }
            | Op::DryClaim { user, record }
            | Op::Resolve { user, record, .. }
            | Op::Request { user, record, .. } => Some(names.new_claim(user, record)),
            Op::Complete { claim, .. } | Op::Settle { claim, .. } => Some(names.claim(claim)),
            _ => None,
        };
        let at_ms = NOW_MS.load(Ordering::SeqCst) - stack.epoch_ms;
        OP_NUMBER.fetch_add(1, Ordering::SeqCst);
        let fake_answer = fake.run(op, &names, claim.as_ref()).await;
        let moto_answer = moto.run(op, &names, claim.as_ref()).await;
        let agree = fake_answer == moto_answer;
        transcript.push(Line {
            index,
            at_ms,
            op: op.clone(),
            claim: claim.clone(),
            fake: fake_answer.clone(),
            moto: moto_answer,
        });
        if !agree {
            return Err(report(&transcript, "the answers differ".to_owned()));
        }
        met.extend(classes(&fake_answer));
        let items = fake_table.items();
        for pk in touched(op, &names, claim.as_ref()) {
            let on_moto = moto_item(&stack.client, &pk).await?;
            if items.get(&pk) != on_moto.as_ref() {
                return Err(report(
                    &transcript,
                    format!(
                        "the item {pk} differs\n  fake: {:?}\n  moto: {on_moto:?}",
                        items.get(&pk)
                    ),
                ));
            }
        }
        match (op, &fake_answer) {
            (Op::Claim { .. } | Op::Request { .. }, _) => names.claims.extend(claim),
            (Op::Begin { key, request, .. }, Answer::Key(Ok(KeyState::Resume(open)))) => {
                names.undecided.insert((*key, *request), open.clone());
            }
            (Op::Begin { key, request, .. }, Answer::Key(Ok(KeyState::Abandoned { since }))) => {
                names.abandoned.insert((*key, *request), *since);
            }
            (Op::Spend { budget }, Answer::Budget(Ok(BudgetTurn::Spent { window }))) => {
                names.spent[*budget] = Some(*window);
            }
            (Op::Advance { ms }, _) => {
                NOW_MS.fetch_add(*ms, Ordering::SeqCst);
            }
            _ => {}
        }
    }
    let items = fake_table.items();
    for pk in names.universe() {
        let on_moto = moto_item(&stack.client, &pk).await?;
        if items.get(&pk) != on_moto.as_ref() {
            return Err(report(
                &transcript,
                format!(
                    "at the end, the item {pk} differs\n  fake: {:?}\n  moto: {on_moto:?}",
                    items.get(&pk)
                ),
            ));
        }
    }
    Ok(met)
}

/// The user's status a claim records: `CONFIRMED` for half the claims (by their counter), none
/// for the rest, so both the unresolved and the plain unconfirmed readings are met.
fn status_of(claim: Option<&Claim>) -> Option<&'static str> {
    claim
        .filter(|c| c.id.ends_with(['0', '2', '4', '6', '8']))
        .map(|_| CONFIRMED)
}

/// The kinds of an answer (a request's, each step's), for the coverage the run asserts.
fn classes(answer: &Answer) -> Vec<&'static str> {
    let one = match answer {
        Answer::Steps(steps) => return steps.iter().flat_map(classes).collect(),
        Answer::Key(Ok(KeyState::Fresh)) => "key fresh",
        Answer::Key(Ok(KeyState::Resume(_))) => "key resumed undecided",
        Answer::Key(Ok(KeyState::Abandoned { .. })) => "key taken over abandoned",
        Answer::Key(Ok(KeyState::Replay(_))) => "key replayed",
        Answer::Key(Ok(KeyState::InProgress)) => "key in progress",
        Answer::Key(Ok(KeyState::Reused)) => "key reused",
        Answer::User(Ok(UserState::Claimed(_))) => "user claimed",
        Answer::User(Ok(UserState::Abandoned(_))) => "user free past an abandoned key's window",
        Answer::User(Ok(UserState::Free)) => "user free (dry run)",
        Answer::User(Ok(UserState::InProgress)) => "user in progress",
        Answer::User(Ok(UserState::RecentlyReset {
            confirmed: true, ..
        })) => "user recently reset",
        Answer::User(Ok(UserState::RecentlyReset {
            confirmed: false, ..
        })) => "user reset unconfirmed",
        Answer::User(Ok(UserState::SignOutPending { .. })) => "user sign-out pending",
        Answer::User(Ok(UserState::Unresolved { .. })) => "user unresolved",
        Answer::User(Ok(UserState::AttemptLimited { .. })) => "user attempt-limited",
        Answer::Resolved(Ok(UserState::RecentlyReset { .. })) => "resolved: it happened",
        Answer::Resolved(Ok(UserState::Claimed(_))) => "resolved: it never happened",
        Answer::Resolved(Ok(UserState::InProgress)) => "resolve refused",
        Answer::Resolved(Ok(_)) => "resolved otherwise",
        Answer::Budget(Ok(BudgetTurn::Spent { .. })) => "budget spent",
        Answer::Budget(Ok(BudgetTurn::Exhausted { .. })) => "budget exhausted",
        Answer::Done(Ok(())) => "write done",
        Answer::Done(Err((GuardErrorKind::Upstream, _))) => "write refused",
        Answer::Key(Err(_))
        | Answer::User(Err(_))
        | Answer::Resolved(Err(_))
        | Answer::Budget(Err(_))
        | Answer::Done(Err(_)) => "other error",
        Answer::Advanced => "clock advanced",
    };
    vec![one]
}

/// Answers every default run must meet (a run that never met one proves nothing about it).
const MUST_MEET: &[&str] = &[
    "key fresh",
    "key resumed undecided",
    "key taken over abandoned",
    "user free past an abandoned key's window",
    "key replayed",
    "key in progress",
    "key reused",
    "user claimed",
    "user free (dry run)",
    "user in progress",
    "user recently reset",
    "user reset unconfirmed",
    "user sign-out pending",
    "user unresolved",
    "resolved: it happened",
    "resolved: it never happened",
    "resolve refused",
    "budget spent",
    "budget exhausted",
    "write done",
    "write refused",
];

// ---- moto --------------------------------------------------------------------------------------

/// moto's server, stopped when dropped (a return, a failed assertion's unwinding).
///
/// It runs under a small shell in its own process group (the terminal's Ctrl-C does not reach
/// it) that holds the read end of a pipe whose only writer is this test: when the test ends in
/// any way, a kill included, the pipe closes and the shell stops moto.
struct Moto {
    shell: Child,
    url: String,
    /// moto's output: kept after a failure, removed after a pass.
    log: PathBuf,
}

/// `$0` is moto_server, `$1` the port, `$2` the log file.
const MOTO_SHELL: &str = r#"
exec 3<&0
"$0" -H 127.0.0.1 -p "$1" </dev/null >"$2" 2>&1 3<&- &
moto=$!
{ read -r _ || true; kill -KILL "$moto" 2>/dev/null; } <&3 &
wait "$moto"
"#;

impl Moto {
    fn start() -> Result<Moto, String> {
        let server = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/stack/bin/moto_server")
            });
        if !server.exists() {
            return Err(format!(
                "{} is missing: run `make faults-differential` (it installs the stack tools), or set MOTO_SERVER",
                server.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(MOTO_SHELL)
            .arg(&server)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            // moto's output goes to its log; the shell's own ("Killed") nowhere.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Nothing of this environment may point moto (or the client) at real AWS.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("AWS_") || name.starts_with("MOTO_") {
                command.env_remove(name);
            }
        }
        let shell = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", server.display()))?;
        let mut moto = Moto {
            shell,
            url: format!("http://127.0.0.1:{port}"),
            log: log.clone(),
        };
        let until = Instant::now() + MOTO_READY;
        loop {
            if answers_http(port) {
                return Ok(moto);
            }
            let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = moto.shell.try_wait() {
                return Err(format!(
                    "moto exited ({status}) before answering; its output:\n{}",
                    log_tail()
                ));
            }
            if Instant::now() > until {
                return Err(format!(
                    "moto did not answer within {MOTO_READY:?}; its output:\n{}",
                    log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether an HTTP server answers on `port`.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe stops moto; the shell ends when moto has.
        drop(self.shell.stdin.take());
        let until = Instant::now() + MOTO_STOP;
        let mut stopped = false;
        while !stopped && Instant::now() < until {
            stopped = matches!(self.shell.try_wait(), Ok(Some(_)));
            if !stopped {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !stopped {
            // The shell's process group: the shell, its reader of the pipe and moto.
            eprintln!("moto did not stop within {MOTO_STOP:?}: killing its process group");
            let group = format!("-{}", self.shell.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.shell.wait();
        }
        if std::thread::panicking() {
            eprintln!("moto's output: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The guard table as the template (and tools/stack.py) create it: `pk` (S), on demand, TTL on
/// `expiresAt`.
async fn create_table(client: &Client) -> Result<(), String> {
    client
        .create_table()
        .table_name(TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| format!("CreateTable on moto: {e:?}"))?;
    client
        .update_time_to_live()
        .table_name(TABLE)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expiresAt")
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await
        .map_err(|e| format!("UpdateTimeToLive on moto: {e:?}"))?;
    Ok(())
}

#[test]
#[ignore = "needs moto: make faults-differential"]
fn the_fake_table_answers_and_writes_as_dynamodb_does() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The production client's settings, but one attempt with a long timeout: without faults the
    // fake answers every call once, and so must moto.
    let settings = GuardSettings {
        table: TABLE.to_owned(),
        cooldown: COOLDOWN,
        idempotency_ttl: TTL,
        client: ClientSettings {
            timeout: Duration::from_secs(20),
            max_attempts: 1,
        },
    };
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(Credentials::new("test", "test", None, None, "differential"));
    let client = Client::from_conf(configure(config, settings.client).build());
    runtime
        .block_on(create_table(&client))
        .unwrap_or_else(|e| panic!("{e}"));
    let now_ms = epoch_ms(SystemTime::now());
    let stack = Stack {
        client,
        settings,
        runs: AtomicU64::new(0),
        epoch_ms: now_ms - now_ms % 1000,
    };

    let seed = crate::seed("differential");
    let cases = crate::cases(DEFAULT_CASES);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let config = Config {
        cases: cases * 2,
        failure_persistence: None,
        // Each run is a few hundred ms of moto: shrinking is bounded in time too.
        max_shrink_iters: 256,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let started = Instant::now();
    let (operations, sequences, failed) = (Cell::new(0usize), Cell::new(0u32), Cell::new(false));
    // Each answer's kind: in how many sequences it was met.
    let met: RefCell<BTreeMap<&'static str, u32>> = RefCell::default();
    let missed = |met: &BTreeMap<&'static str, u32>| -> Vec<&'static str> {
        MUST_MEET
            .iter()
            .copied()
            .filter(|what| !met.contains_key(what))
            .collect()
    };
    for (start_ms, ops) in scripted() {
        sequences.set(sequences.get() + 1);
        operations.set(operations.get() + ops.len());
        let answers = runtime
            .block_on(run_sequence(&stack, start_ms, &ops))
            .unwrap_or_else(|e| {
                panic!("a scripted sequence: the fake table and moto disagree\n\n{e}")
            });
        let mut met = met.borrow_mut();
        for answer in answers {
            *met.entry(answer).or_default() += 1;
        }
    }
    let result = runner.run(&sequence(), |(start_ms, ops)| {
        // `cases` sequences, and more (up to twice as many) only while an answer kind has not
        // been met; never skipped once one failed (its shrinking runs).
        if !failed.get() && sequences.get() >= cases && missed(&met.borrow()).is_empty() {
            return Ok(());
        }
        sequences.set(sequences.get() + 1);
        operations.set(operations.get() + ops.len());
        let answers = runtime
            .block_on(run_sequence(&stack, start_ms, &ops))
            .map_err(|e| {
                failed.set(true);
                TestCaseError::fail(e)
            })?;
        let mut met = met.borrow_mut();
        for answer in answers {
            *met.entry(answer).or_default() += 1;
        }
        Ok(())
    });
    let (operations, met) = (operations.get(), met.into_inner());
    eprintln!(
        "differential: {} sequences ({} runs with shrinking), {operations} operations against fake and moto in {:.1?}; met in that many sequences: {met:?}",
        sequences.get(),
        stack.runs.load(Ordering::SeqCst),
        started.elapsed()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _)) => panic!(
            "the fake table and DynamoDB (moto) disagree (FAULTS_SEED={hex} replays this run)\n\n{reason}"
        ),
        Err(TestError::Abort(reason)) => panic!("aborted (FAULTS_SEED={hex}): {reason}"),
    }
    let missed = missed(&met);
    assert!(
        missed.is_empty() || cases < DEFAULT_CASES,
        "{} sequences never met: {missed:?} (FAULTS_SEED={hex}); met: {met:?}",
        sequences.get()
    );
    drop(moto);
}
