//! Schedules: what is sent, by whom, what is delivered again, how time passes, and which port
//! call fails how. Every step has a name and prints on one line, so that a shrunk counterexample
//! reads as a story.

use std::fmt;
use std::time::Duration;

use proptest::prelude::*;

use crate::faults::{Fault, Injected, Op, When};
use crate::world::{
    APPROVAL_TTL, COOLDOWN, Options, Pacing, Pool, Req, Sender, SignOut, Spelling, User,
};

/// How a batch arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// One request over the HTTP API.
    HttpSingle,
    /// A JSON array of requests over the HTTP API (answered 207).
    HttpBatch,
    /// A standard SQS batch.
    Sqs,
    /// A FIFO SQS batch.
    SqsFifo,
}

impl Source {
    pub fn is_http(self) -> bool {
        matches!(self, Source::HttpSingle | Source::HttpBatch)
    }
}

/// An HTTP `Idempotency-Key`; `K0` is the key a batch item 0 of `K` would show as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    K,
    K0,
    K1,
}

impl Key {
    pub fn header(self) -> &'static str {
        match self {
            Key::K => "k",
            Key::K0 => "k#0",
            Key::K1 => "k#1",
        }
    }
}

/// One record of a batch: the request it carries (index into the schedule's requests; for SQS
/// also its message id `m<index>`, so one message id always carries one body) and its FIFO group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub request: usize,
    pub group: u8,
}

/// One event's worth of records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub source: Source,
    pub sender: Sender,
    /// HTTP only.
    pub key: Option<Key>,
    pub records: Vec<Rec>,
}

/// How one invocation runs: its deadline, the fakes' normal latency, and its faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub deadline: Duration,
    pub latency: Duration,
    pub faults: Vec<Injected>,
}

/// What a redelivery sends again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// What was handed back: SQS `batchItemFailures`; over HTTP, the request if it (or any item)
    /// was answered RETRY.
    HandedBack,
    /// Everything, acknowledged or not (an SQS duplicate, a client that retries anyway).
    Everything,
    /// An HTTP client that waits the `Retry-After` it was given, then sends the same request
    /// (same key) again; without one, as `HandedBack`.
    AfterRetryAfter,
}

/// What a decision on an approval says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A first delivery.
    Send { batch: Batch, run: Run },
    /// A redelivery of an earlier send: `of` counts back from the latest (0), modulo the sends
    /// so far.
    Again { of: usize, what: Again, run: Run },
    /// Wall time passes.
    Wait(Duration),
    /// Two first deliveries at the same moment, to two instances of the function (each with
    /// its own faults), over the same Cognito, table and bus.
    Together { batches: [Batch; 2], runs: [Run; 2] },
    /// `POST /approvals/{id}` by `by`: `of` counts back from the latest approval id a PENDING
    /// answer gave (modulo their number); with none yet, an id nobody was given.
    Decide {
        of: usize,
        by: Sender,
        verdict: Verdict,
        run: Run,
    },
    /// Two decisions on the same approval at the same moment, on two instances.
    DecideTogether {
        of: usize,
        by: [Sender; 2],
        verdicts: [Verdict; 2],
        runs: [Run; 2],
    },
}

/// A whole schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The wall clock's millisecond within its second when the schedule starts.
    pub phase_ms: u64,
    /// `MAX_CONCURRENCY`.
    pub concurrency: usize,
    /// What the world turns on (rules' options, pacing, `DRY_RUN`, another account).
    pub options: Options,
    /// The requests records refer to; request *i* carries ticket `T<i>`.
    pub requests: Vec<Req>,
    pub steps: Vec<Step>,
}

/// The send an `Again { of, .. }` step repeats, when `sends` sends came before it.
pub fn again_of(of: usize, sends: usize) -> usize {
    let sends = sends.max(1);
    sends - 1 - of % sends
}

impl Schedule {
    pub fn request(&self, index: usize) -> (usize, &Req) {
        let index = index % self.requests.len();
        (index, &self.requests[index])
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadline {} ms, latency {} ms",
            self.deadline.as_millis(),
            self.latency.as_millis()
        )?;
        for fault in &self.faults {
            write!(f, "; {fault}")?;
        }
        Ok(())
    }
}

impl Schedule {
    fn batch_line(&self, batch: &Batch) -> String {
        let source = match batch.source {
            Source::HttpSingle => "HTTP",
            Source::HttpBatch => "HTTP batch",
            Source::Sqs => "SQS",
            Source::SqsFifo => "SQS FIFO",
        };
        let key = match batch.key {
            Some(key) => format!(" key {}", key.header()),
            None if batch.source.is_http() => " no key".to_owned(),
            None => String::new(),
        };
        let records: Vec<String> = batch
            .records
            .iter()
            .map(|rec| {
                let (index, req) = self.request(rec.request);
                match batch.source {
                    Source::Sqs if batch.sender == Sender::StrangerQueue => {
                        format!("s{index}={req} T{index}")
                    }
                    Source::Sqs => format!("m{index}={req} T{index}"),
                    Source::SqsFifo => format!("f{index}={req} T{index} g{}", rec.group),
                    _ => format!("{req} T{index}"),
                }
            })
            .collect();
        format!(
            "{source} from {}{key}: [{}]",
            batch.sender.name(),
            records.join(", ")
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule (wall clock at .{:03} s, MAX_CONCURRENCY {}; {}):",
            self.phase_ms, self.concurrency, self.options
        )?;
        let mut sends = 0;
        for (n, step) in self.steps.iter().enumerate() {
            match step {
                Step::Send { batch, run } => {
                    writeln!(
                        f,
                        "  {n:>2}. send #{sends}: {} | {run}",
                        self.batch_line(batch)
                    )?;
                    sends += 1;
                }
                Step::Again { of, what, run } => {
                    let what = match what {
                        Again::HandedBack => "what was handed back",
                        Again::Everything => "everything",
                        Again::AfterRetryAfter => "after waiting its Retry-After",
                    };
                    writeln!(
                        f,
                        "  {n:>2}. again #{}: {what} | {run}",
                        again_of(*of, sends)
                    )?;
                }
                Step::Wait(d) => writeln!(f, "  {n:>2}. wait {} ms", d.as_millis())?,
                Step::Together { batches, runs } => {
                    writeln!(
                        f,
                        "  {n:>2}. together, instance A send #{sends}: {} | {}",
                        self.batch_line(&batches[0]),
                        runs[0]
                    )?;
                    writeln!(
                        f,
                        "      and instance B send #{}: {} | {}",
                        sends + 1,
                        self.batch_line(&batches[1]),
                        runs[1]
                    )?;
                    sends += 2;
                }
                Step::Decide {
                    of,
                    by,
                    verdict,
                    run,
                } => writeln!(
                    f,
                    "  {n:>2}. decide approval -{of}: {} by {} | {run}",
                    verdict.as_str(),
                    by.name()
                )?,
                Step::DecideTogether {
                    of,
                    by,
                    verdicts,
                    runs,
                } => {
                    writeln!(
                        f,
                        "  {n:>2}. together, decide approval -{of}: instance A {} by {} | {}",
                        verdicts[0].as_str(),
                        by[0].name(),
                        runs[0]
                    )?;
                    writeln!(
                        f,
                        "      and instance B {} by {} | {}",
                        verdicts[1].as_str(),
                        by[1].name(),
                        runs[1]
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// ---- strategies ----------------------------------------------------------------------------

fn req(mix: Mix) -> BoxedStrategy<Req> {
    let plain = !mix.has_options();
    let user = if plain {
        prop_oneof![4 => Just(User::Ann), 3 => Just(User::Bob), 1 => Just(User::Mal), 1 => Just(User::Ghost)].boxed()
    } else {
        prop_oneof![4 => Just(User::Ann), 3 => Just(User::Bob), 1 => Just(User::Mal), 2 => Just(User::Ivy), 1 => Just(User::Ghost)].boxed()
    };
    let pool = if plain {
        prop_oneof![15 => Just(Pool::Listed), 1 => Just(Pool::Unlisted)].boxed()
    } else {
        // Foreign only counts in a world with another account (see `schedule`).
        prop_oneof![10 => Just(Pool::Listed), 1 => Just(Pool::Unlisted), 5 => Just(Pool::Foreign)]
            .boxed()
    };
    let sign_out = proptest::bool::weighted(if plain { 0.0 } else { 0.4 });
    (
        user,
        prop_oneof![4 => Just(Spelling::Email), 1 => Just(Spelling::Canonical), 1 => Just(Spelling::Shouted)],
        pool,
        proptest::bool::weighted(0.04),
        sign_out,
    )
        .prop_map(|(user, spelling, pool, invalid, sign_out)| Req {
            user,
            spelling,
            pool,
            invalid,
            sign_out,
        })
        .boxed()
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        4 => Just(When::InMargin),
        2 => Just(When::BeforeMargin),
        1 => Just(When::LastQuarter),
        1 => Just(When::AfterDeadline),
    ]
}

/// Faults a Cognito call can meet.
fn cognito_fault(op: Op) -> BoxedStrategy<Fault> {
    // LimitExceeded is a reset's answer; a lookup meets a plain throttle instead.
    let limit = if op.sends_code() {
        Fault::LimitExceeded
    } else {
        Fault::Throttle
    };
    prop_oneof![
        3 => Just(Fault::Throttle),
        1 => Just(limit),
        1 => Just(Fault::Refuse),
        2 => any::<bool>().prop_map(|landed| Fault::ServerError { landed }),
        2 => any::<bool>().prop_map(|landed| Fault::Timeout { landed }),
        1 => Just(Fault::ConnectionReset),
        1 => Just(Fault::ConnectionRefused),
        2 => Just(Fault::Lost),
    ]
    .boxed()
}

/// Faults a guard call can meet.
fn guard_fault() -> BoxedStrategy<Fault> {
    prop_oneof![
        2 => Just(Fault::Throttle),
        1 => Just(Fault::Refuse),
        2 => any::<bool>().prop_map(|landed| Fault::ServerError { landed }),
        2 => any::<bool>().prop_map(|landed| Fault::Timeout { landed }),
        1 => Just(Fault::ConnectionRefused),
        2 => Just(Fault::Lost),
        2 => Just(Fault::Echo),
        1 => Just(Fault::Outage),
    ]
    .boxed()
}

fn bus_fault() -> BoxedStrategy<Fault> {
    prop_oneof![
        Just(Fault::ServerError { landed: false }),
        Just(Fault::Timeout { landed: false }),
    ]
    .boxed()
}

/// Faults a pacing bucket write can meet (the pacer falls back to its static share).
fn bucket_fault() -> BoxedStrategy<Fault> {
    prop_oneof![
        2 => Just(Fault::Throttle),
        1 => any::<bool>().prop_map(|landed| Fault::ServerError { landed }),
        1 => any::<bool>().prop_map(|landed| Fault::Timeout { landed }),
    ]
    .boxed()
}

/// A fault, a late answer, or a late failure, for the `nth` call of an operation.
fn injected(mix: Mix) -> BoxedStrategy<Injected> {
    let op = match mix {
        Mix::All | Mix::Sqs | Mix::Http | Mix::Windows => prop_oneof![
            7 => Just(Op::Reset),
            3 => Just(Op::Complete),
            3 => Just(Op::Finish),
            2 => Just(Op::Claim),
            2 => Just(Op::Begin),
            2 => Just(Op::GetUser),
            1 => Just(Op::ListGroups),
            1 => Just(Op::Publish),
        ]
        .boxed(),
        // DRY_RUN never sends a reset, a sign-out or a refund: its faults go where it calls.
        Mix::DryRun => prop_oneof![
            4 => Just(Op::GetUser),
            2 => Just(Op::ListGroups),
            3 => Just(Op::Claim),
            2 => Just(Op::Begin),
            2 => Just(Op::Finish),
            2 => Just(Op::Spend),
            1 => Just(Op::Publish),
        ]
        .boxed(),
        Mix::Helpdesk | Mix::Faults => prop_oneof![
            5 => Just(Op::Reset),
            3 => Just(Op::Resend),
            5 => Just(Op::SignOut),
            3 => Just(Op::Spend),
            2 => Just(Op::Refund),
            2 => Just(Op::Complete),
            2 => Just(Op::Finish),
            2 => Just(Op::Claim),
            1 => Just(Op::Begin),
            2 => Just(Op::GetUser),
            1 => Just(Op::ListGroups),
            1 => Just(Op::Publish),
        ]
        .boxed(),
        // Approvals: the approval operations, and the approved reset's calls.
        Mix::Approvals => prop_oneof![
            4 => Just(Op::Reset),
            1 => Just(Op::SignOut),
            6 => Just(Op::Decide),
            4 => Just(Op::Request),
            3 => Just(Op::Approval),
            2 => Just(Op::PeekUser),
            1 => Just(Op::PeekBudget),
            1 => Just(Op::Keep),
            2 => Just(Op::Begin),
            2 => Just(Op::Finish),
            2 => Just(Op::Claim),
            2 => Just(Op::Complete),
            1 => Just(Op::Spend),
            1 => Just(Op::GetUser),
        ]
        .boxed(),
        Mix::Paced => prop_oneof![
            8 => Just(Op::Reset),
            2 => Just(Op::Resend),
            2 => Just(Op::SignOut),
            3 => Just(Op::Lease),
            3 => Just(Op::GetUser),
            1 => Just(Op::ListGroups),
            1 => Just(Op::Spend),
            1 => Just(Op::Complete),
            1 => Just(Op::Claim),
        ]
        .boxed(),
    };
    let nth = prop_oneof![4 => Just(0u8), 2 => 1u8..3, 1 => 3u8..10];
    (op, nth).prop_flat_map(move |(op, nth)| {
        let fault = match op {
            Op::GetUser | Op::ListGroups | Op::Reset | Op::Resend | Op::SignOut => {
                // Paced schedules meet throttling most (what cuts the rate).
                if matches!(mix, Mix::Paced) && op != Op::SignOut {
                    prop_oneof![3 => Just(Fault::Throttle), 2 => cognito_fault(op)].boxed()
                } else {
                    cognito_fault(op)
                }
            }
            Op::Publish => bus_fault(),
            Op::Lease => bucket_fault(),
            _ => guard_fault(),
        };
        prop_oneof![
            // Late: the normal answer at a chosen moment.
            3 => when().prop_map(move |at| Injected { op, nth, fault: None, at: Some(at) }),
            4 => fault.clone().prop_map(move |fault| Injected { op, nth, fault: Some(fault), at: None }),
            // A late failure (a throttle inside the margin, a 5xx after the deadline).
            2 => (fault, when()).prop_map(move |(fault, at)| Injected { op, nth, fault: Some(fault), at: Some(at) }),
        ]
    })
    .boxed()
}

fn run(mix: Mix) -> impl Strategy<Value = Run> {
    (
        prop_oneof![
            3 => Just(5_000u64),
            3 => Just(3_500),
            3 => Just(2_500),
            2 => Just(1_300),
            1 => Just(600),
        ],
        prop_oneof![Just(20u64), Just(3), Just(0)],
        // One vector from none up: a counterexample shrinks to the faults that matter.
        proptest::collection::vec(injected(mix), 0..=5),
    )
        .prop_map(|(deadline, latency, faults)| Run {
            deadline: Duration::from_millis(deadline),
            latency: Duration::from_millis(latency),
            faults,
        })
}

fn recs(max: usize) -> impl Strategy<Value = Vec<Rec>> {
    let rec = (0usize..4, prop_oneof![3 => Just(0u8), 1 => Just(1u8)])
        .prop_map(|(request, group)| Rec { request, group });
    prop_oneof![
        6 => proptest::collection::vec(rec.clone(), 1..=3.min(max)),
        2 => proptest::collection::vec(rec, 1..=max),
    ]
}

/// Which sources (and world options) a test draws from.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    All,
    Sqs,
    Http,
    /// Every source, few requests, waits around the cooldown and its `Retry-After`, and
    /// redeliveries of everything: the windows' edges.
    Windows,
    /// Every source, the rules' options: sign-out (allowed or always, requests with
    /// `SignOut`), resent invitations, a caller budget; a pool in another account in some.
    Helpdesk,
    /// Every source, pacing at real rates (per instance, or the shared bucket), throttles
    /// that cut the rate, faults at the bucket's writes; the rules' options in some.
    Paced,
    /// `DRY_RUN`, with the rules' options in some.
    DryRun,
    /// The fault matrix: short schedules, each aimed at one (port call, fault kind) pair of
    /// [`matrix`], in a world where every call happens (sign-out always, resent invitations,
    /// a budget).
    Faults,
    /// Approvals: privileged users' requests (HTTP, SQS) answered PENDING, decisions (approve,
    /// deny, by the requester, by a non-approver, twice, two at once), waits past the
    /// approval's time, re-sends of the request; faults at the approval operations and at the
    /// approved reset.
    Approvals,
}

impl Mix {
    /// Whether the schedules turn options on (and name the invited user, the other account's
    /// pool, `SignOut`).
    pub fn has_options(self) -> bool {
        matches!(self, Mix::Helpdesk | Mix::Paced | Mix::DryRun | Mix::Faults)
    }
}

/// Every (port call, fault kind) pair the suite injects, and asserts it met.
pub fn matrix() -> Vec<(Op, Fault)> {
    let cognito = |op: Op| {
        let mut faults = vec![
            Fault::Throttle,
            Fault::Refuse,
            Fault::ServerError { landed: false },
            Fault::ServerError { landed: true },
            Fault::Timeout { landed: false },
            Fault::Timeout { landed: true },
            Fault::ConnectionReset,
            Fault::ConnectionRefused,
            Fault::Lost,
        ];
        if op.sends_code() {
            faults.push(Fault::LimitExceeded);
        }
        faults.into_iter().map(move |f| (op, f))
    };
    let guard = |op: Op| {
        [
            Fault::Throttle,
            Fault::Refuse,
            Fault::ServerError { landed: false },
            Fault::ServerError { landed: true },
            Fault::Timeout { landed: false },
            Fault::Timeout { landed: true },
            Fault::ConnectionRefused,
            Fault::Lost,
            Fault::Echo,
            Fault::Outage,
        ]
        .into_iter()
        .map(move |f| (op, f))
    };
    let mut pairs: Vec<(Op, Fault)> = Vec::new();
    for op in [
        Op::GetUser,
        Op::ListGroups,
        Op::Reset,
        Op::Resend,
        Op::SignOut,
    ] {
        pairs.extend(cognito(op));
    }
    for op in [
        Op::Begin,
        Op::Finish,
        Op::Claim,
        Op::Complete,
        Op::Spend,
        Op::Refund,
    ] {
        pairs.extend(guard(op));
    }
    pairs.push((Op::Publish, Fault::ServerError { landed: false }));
    pairs.push((Op::Publish, Fault::Timeout { landed: false }));
    pairs
}

/// A short schedule aimed at one pair of [`matrix`]: the request that reaches the call (an
/// invited user for a resent invitation, an admin for a key's result without a claim), the
/// fault on its first call, a refused reset before a refund, maybe another fault, maybe a
/// redelivery.
fn matrix_schedule() -> BoxedStrategy<Schedule> {
    let pairs = matrix();
    let count = pairs.len();
    (
        0..count,
        0u64..1000,
        any::<bool>(),
        prop_oneof![2 => Just(Source::Sqs), 1 => Just(Source::HttpSingle), 1 => Just(Source::HttpBatch)],
        proptest::collection::vec(injected(Mix::Helpdesk), 0..=1),
        proptest::option::weighted(
            0.5,
            (
                0u64..3_000,
                prop_oneof![Just(Again::HandedBack), Just(Again::Everything)],
            ),
        ),
        prop_oneof![Just(When::InMargin), Just(When::BeforeMargin)],
        any::<bool>(),
    )
        .prop_map(
            move |(target, phase_ms, other_account, source, extra, again, when, late)| {
                let (op, fault) = pairs[target];
                let user = match op {
                    Op::Resend => User::Ivy,
                    Op::Finish => User::Mal,
                    _ => User::Ann,
                };
                let requests = vec![Req {
                    user,
                    spelling: Spelling::Email,
                    pool: if other_account { Pool::Foreign } else { Pool::Listed },
                    invalid: false,
                    sign_out: false,
                }];
                let mut faults = vec![Injected {
                    op,
                    nth: 0,
                    fault: Some(fault),
                    // A late failure, now and then (a throttle answered inside the margin).
                    at: late.then_some(when),
                }];
                // The sign-out is retried like a lookup: the same fault on every attempt makes
                // it fail for good (and an SQS record is handed back for it).
                if op == Op::SignOut {
                    for nth in 1..3 {
                        faults.push(Injected {
                            op,
                            nth,
                            fault: Some(fault),
                            at: None,
                        });
                    }
                }
                if op == Op::Refund {
                    faults.push(Injected {
                        op: Op::Reset,
                        nth: 0,
                        fault: Some(Fault::Refuse),
                        at: None,
                    });
                }
                faults.extend(extra.into_iter().filter(|i| i.op != op));
                let (sender, key) = match source {
                    Source::Sqs => (Sender::Queue, None),
                    _ => (Sender::Portal, Some(Key::K)),
                };
                let batch = Batch {
                    source,
                    sender,
                    key,
                    records: vec![Rec { request: 0, group: 0 }],
                };
                let run = Run {
                    deadline: Duration::from_millis(5_000),
                    latency: Duration::from_millis(20),
                    faults,
                };
                let mut steps = vec![Step::Send { batch, run }];
                // A failed sign-out is retried by the SQS redelivery: always deliver it again.
                let again = match (again, op, source) {
                    (None, Op::SignOut, Source::Sqs) => Some((0, Again::HandedBack)),
                    (again, _, _) => again,
                };
                if let Some((wait, what)) = again {
                    steps.push(Step::Wait(Duration::from_millis(wait)));
                    steps.push(Step::Again {
                        of: 0,
                        what,
                        run: Run {
                            deadline: Duration::from_millis(5_000),
                            latency: Duration::from_millis(20),
                            faults: Vec::new(),
                        },
                    });
                }
                Schedule {
                    phase_ms,
                    concurrency: 10,
                    options: Options {
                        sign_out: SignOut::Always,
                        resend: true,
                        budget: Some((3, 5)),
                        pacing: Pacing::Off,
                        dry_run: false,
                        other_account,
                    },
                    requests,
                    steps,
                }
            },
        )
        .boxed()
}

fn options(mix: Mix) -> BoxedStrategy<Options> {
    let sign_out = prop_oneof![1 => Just(SignOut::Never), 2 => Just(SignOut::Allowed), 2 => Just(SignOut::Always)];
    let budget = prop_oneof![
        1 => Just(None),
        2 => (1u32..=3, prop_oneof![Just(5u32), Just(20), Just(60)]).prop_map(Some),
    ];
    let pacing = match mix {
        Mix::Paced => prop_oneof![Just(Pacing::Instance), Just(Pacing::Shared)].boxed(),
        _ => Just(Pacing::Off).boxed(),
    };
    let dry_run = matches!(mix, Mix::DryRun);
    (
        sign_out,
        any::<bool>(),
        budget,
        pacing,
        proptest::bool::weighted(0.4),
    )
        .prop_map(
            move |(sign_out, resend, budget, pacing, other_account)| Options {
                sign_out,
                resend,
                budget,
                pacing,
                dry_run,
                other_account,
            },
        )
        .boxed()
}

fn batch(mix: Mix) -> BoxedStrategy<Batch> {
    let key = || prop_oneof![3 => Just(Some(Key::K)), 2 => Just(Some(Key::K0)), 1 => Just(Some(Key::K1)), 1 => Just(None)];
    let http_sender = || prop_oneof![8 => Just(Sender::Portal), 1 => Just(Sender::Intruder)];
    let single = (http_sender(), key(), recs(1)).prop_map(|(sender, key, records)| Batch {
        source: Source::HttpSingle,
        sender,
        key,
        records,
    });
    let http_batch = (http_sender(), key(), recs(10)).prop_map(|(sender, key, records)| Batch {
        source: Source::HttpBatch,
        sender,
        key,
        records,
    });
    let sqs = (
        prop_oneof![8 => Just(Sender::Queue), 1 => Just(Sender::StrangerQueue)],
        recs(10),
    )
        .prop_map(|(sender, records)| Batch {
            source: Source::Sqs,
            sender,
            key: None,
            records,
        });
    let fifo = recs(10).prop_map(|records| Batch {
        source: Source::SqsFifo,
        sender: Sender::FifoQueue,
        key: None,
        records,
    });
    match mix {
        Mix::All | Mix::Helpdesk | Mix::Paced | Mix::DryRun | Mix::Faults => {
            prop_oneof![3 => sqs, 2 => single, 2 => http_batch, 2 => fifo].boxed()
        }
        // The portal's single requests (a key or none) first, the queues', a batch.
        Mix::Approvals => {
            let portal_single = (key(), recs(1)).prop_map(|(key, records)| Batch {
                source: Source::HttpSingle,
                sender: Sender::Portal,
                key,
                records,
            });
            let queue = recs(3).prop_map(|records| Batch {
                source: Source::Sqs,
                sender: Sender::Queue,
                key: None,
                records,
            });
            let portal_batch = (key(), recs(3)).prop_map(|(key, records)| Batch {
                source: Source::HttpBatch,
                sender: Sender::Portal,
                key,
                records,
            });
            prop_oneof![4 => portal_single, 3 => queue, 1 => portal_batch, 1 => fifo].boxed()
        }
        // Single requests carry Retry-After.
        Mix::Windows => prop_oneof![2 => sqs, 5 => single, 1 => http_batch, 1 => fifo].boxed(),
        Mix::Sqs => prop_oneof![sqs, fifo].boxed(),
        Mix::Http => prop_oneof![single, http_batch].boxed(),
    }
}

fn wait(mix: Mix) -> BoxedStrategy<Duration> {
    let cooldown = COOLDOWN.as_millis() as u64;
    let near = (cooldown - 2_000)..(cooldown + 2_500);
    match mix {
        Mix::Windows => prop_oneof![
            1 => 0u64..3_000,
            4 => near,
        ]
        .prop_map(Duration::from_millis)
        .boxed(),
        _ => prop_oneof![
            3 => 0u64..3_000,
            2 => near,
            1 => (cooldown + 2_500)..(3 * cooldown),
        ]
        .prop_map(Duration::from_millis)
        .boxed(),
    }
}

fn step(mix: Mix) -> impl Strategy<Value = Step> {
    let everything = match mix {
        Mix::Windows => 3,
        _ => 1,
    };
    // Two instances at once: the option mixes (budgets, sign-out and pacing across
    // instances).
    let together = if mix.has_options() { 1 } else { 0 };
    prop_oneof![
        3 => (batch(mix), run(mix)).prop_map(|(batch, run)| Step::Send { batch, run }),
        together => (batch(mix), batch(mix), run(mix), run(mix)).prop_map(|(a, b, ra, rb)| Step::Together {
            batches: [a, b],
            runs: [ra, rb],
        }),
        4 => (
            prop_oneof![3 => Just(0usize), 1 => 1usize..4],
            prop_oneof![
                2 => Just(Again::HandedBack),
                everything => Just(Again::Everything),
                everything => Just(Again::AfterRetryAfter),
            ],
            run(mix),
        )
            .prop_map(|(of, what, run)| Step::Again { of, what, run }),
        3 => wait(mix).prop_map(Step::Wait),
    ]
}

/// Schedules of one to eight steps, the first a send.
pub fn schedule(mix: Mix) -> BoxedStrategy<Schedule> {
    if matches!(mix, Mix::Faults) {
        return matrix_schedule();
    }
    if matches!(mix, Mix::Approvals) {
        return approvals_schedule();
    }
    let world = if mix.has_options() {
        options(mix)
    } else {
        Just(Options::default()).boxed()
    };
    (
        0u64..1000,
        prop_oneof![4 => Just(10usize), 1 => Just(3), 1 => Just(1)],
        world,
        match mix {
            Mix::Windows => proptest::collection::vec(req(mix), 1..=2).boxed(),
            _ => proptest::collection::vec(req(mix), 1..=4).boxed(),
        },
        (batch(mix), run(mix)),
        proptest::collection::vec(step(mix), 0..=7),
    )
        .prop_map(
            |(phase_ms, concurrency, options, mut requests, (batch, run), rest)| {
                // The other account's pool is listed in every world, but is in another
                // account only with the option: without it, its requests go to the listed pool.
                if !options.other_account {
                    for req in &mut requests {
                        if req.pool == Pool::Foreign {
                            req.pool = Pool::Listed;
                        }
                    }
                }
                let mut steps = vec![Step::Send { batch, run }];
                steps.extend(rest);
                Schedule {
                    phase_ms,
                    concurrency,
                    options,
                    requests,
                    steps,
                }
            },
        )
        .boxed()
}

/// Who decides: the leads mostly, the portal (the requester of its own requests, an approver of
/// the queues'), a caller who approves nothing.
fn decider() -> impl Strategy<Value = Sender> {
    prop_oneof![
        4 => Just(Sender::Lead),
        2 => Just(Sender::LeadTwo),
        2 => Just(Sender::Portal),
        1 => Just(Sender::Intruder),
    ]
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![3 => Just(Verdict::Approve), 1 => Just(Verdict::Deny)]
}

/// The approvals' schedules: the first request is a privileged user's (answered PENDING), then
/// sends, re-sends, decisions and waits (short, across the cooldown, across the approval's
/// time).
fn approvals_schedule() -> BoxedStrategy<Schedule> {
    let mix = Mix::Approvals;
    let user = prop_oneof![5 => Just(User::Pam), 2 => Just(User::Ann), 1 => Just(User::Bob)];
    let req = (
        user,
        prop_oneof![4 => Just(Spelling::Email), 1 => Just(Spelling::Canonical), 1 => Just(Spelling::Shouted)],
        proptest::bool::weighted(0.4),
    )
        .prop_map(|(user, spelling, sign_out)| Req {
            user,
            spelling,
            pool: Pool::Listed,
            invalid: false,
            sign_out,
        });
    let ttl = APPROVAL_TTL.as_millis() as u64;
    let cooldown = COOLDOWN.as_millis() as u64;
    let wait = prop_oneof![
        3 => 0u64..3_000,
        1 => (cooldown - 1_500)..(cooldown + 2_500),
        3 => (ttl - 1_500)..(ttl + 2_500),
    ]
    .prop_map(Duration::from_millis);
    let of = || prop_oneof![3 => Just(0usize), 1 => 1usize..3];
    let step = prop_oneof![
        2 => (batch(mix), run(mix)).prop_map(|(batch, run)| Step::Send { batch, run }),
        2 => (
            of(),
            prop_oneof![1 => Just(Again::HandedBack), 2 => Just(Again::Everything)],
            run(mix),
        )
            .prop_map(|(of, what, run)| Step::Again { of, what, run }),
        2 => wait.prop_map(Step::Wait),
        5 => (of(), decider(), verdict(), run(mix)).prop_map(|(of, by, verdict, run)| Step::Decide {
            of,
            by,
            verdict,
            run,
        }),
        1 => (of(), decider(), decider(), verdict(), verdict(), run(mix), run(mix)).prop_map(
            |(of, a, b, va, vb, ra, rb)| Step::DecideTogether {
                of,
                by: [a, b],
                verdicts: [va, vb],
                runs: [ra, rb],
            }
        ),
    ];
    let options = (
        prop_oneof![1 => Just(SignOut::Never), 1 => Just(SignOut::Allowed), 1 => Just(SignOut::Always)],
        prop_oneof![2 => Just(None), 1 => Just(Some((2u32, 20u32)))],
    )
        .prop_map(|(sign_out, budget)| Options {
            sign_out,
            budget,
            ..Options::default()
        });
    (
        0u64..1000,
        options,
        proptest::collection::vec(req, 1..=3),
        (batch(mix), run(mix)),
        proptest::collection::vec(step, 1..=7),
    )
        .prop_map(
            |(phase_ms, options, mut requests, (mut batch, run), rest)| {
                // The first request is a privileged user's, and the first send carries it.
                requests[0].user = User::Pam;
                if let Some(first) = batch.records.first_mut() {
                    first.request = 0;
                }
                let mut steps = vec![Step::Send { batch, run }];
                steps.extend(rest);
                Schedule {
                    phase_ms,
                    concurrency: 10,
                    options,
                    requests,
                    steps,
                }
            },
        )
        .boxed()
}
