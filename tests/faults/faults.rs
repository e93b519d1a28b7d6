//! What can go wrong at a port call, when an answer arrives, and the injector that hands each
//! call its fault from the schedule (by operation and by its rank among that operation's calls
//! in the invocation) and keeps the journal of what every fake did.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cognito_reset::aws::events::OutcomeEvent;
use cognito_reset::aws::guard::Completion;
use cognito_reset::failure::{CognitoErrorKind, Effect};
use tokio::time::Instant;

use crate::world::MARGIN;

/// A port operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    GetUser,
    ListGroups,
    Reset,
    /// `AdminCreateUser` with `MessageAction=RESEND`.
    Resend,
    SignOut,
    Begin,
    Finish,
    Claim,
    Complete,
    Spend,
    Refund,
    Publish,
    /// A write to a pacing bucket (a lease or a rate cut).
    Lease,
    /// The guard's look-ahead at a user item (a request waiting for approval writes nothing).
    PeekUser,
    /// The guard's look-ahead at a caller's budget.
    PeekBudget,
    /// Creating an approval item.
    Request,
    /// Deciding an approval (one conditional write).
    Decide,
    /// Reading an approval item.
    Approval,
    /// Keeping a request's answer under its id.
    Keep,
    /// Reading a kept answer.
    Kept,
}

impl Op {
    /// A call that sends the user a code (a reset, or a resent invitation's temporary
    /// password): what the cooldown counts.
    pub fn sends_code(self) -> bool {
        matches!(self, Op::Reset | Op::Resend)
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::GetUser => "AdminGetUser",
            Op::ListGroups => "AdminListGroupsForUser",
            Op::Reset => "AdminResetUserPassword",
            Op::Resend => "AdminCreateUser RESEND",
            Op::SignOut => "AdminUserGlobalSignOut",
            Op::Begin => "guard key",
            Op::Finish => "guard key result",
            Op::Claim => "guard claim",
            Op::Complete => "guard claim result",
            Op::Spend => "guard budget spend",
            Op::Refund => "guard budget refund",
            Op::Publish => "PutEvents",
            Op::Lease => "pacing bucket write",
            Op::PeekUser => "guard user look-ahead",
            Op::PeekBudget => "guard budget look-ahead",
            Op::Request => "guard approval request",
            Op::Decide => "guard approval decision",
            Op::Approval => "guard approval read",
            Op::Keep => "guard answer keep",
            Op::Kept => "guard answer read",
        }
    }
}

/// A moment relative to the invocation's deadline D and margin m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// D − m − 100 ms: before the margin.
    BeforeMargin,
    /// D − 3m/4: inside [m/2, m) before the deadline, after every lookup's end.
    InMargin,
    /// D − m/4: after the reset's stage, before the events'.
    LastQuarter,
    /// D + 100 ms: after the deadline.
    AfterDeadline,
}

impl When {
    pub fn at(self, deadline: Instant) -> Instant {
        let before = |d: Duration| deadline.checked_sub(d).unwrap_or(deadline);
        match self {
            When::BeforeMargin => before(MARGIN + Duration::from_millis(100)),
            When::InMargin => before(MARGIN * 3 / 4),
            When::LastQuarter => before(MARGIN / 4),
            When::AfterDeadline => deadline + Duration::from_millis(100),
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            When::BeforeMargin => "before the margin",
            When::InMargin => "inside [m/2, m)",
            When::LastQuarter => "at D-m/4",
            When::AfterDeadline => "after the deadline",
        })
    }
}

/// What goes wrong with one call (its answer may also come late: see [`Injected::at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Throttled: nothing happened (`Throttled`, effect none).
    Throttle,
    /// `LimitExceededException` (a reset's per-user limit): nothing happened, never retried.
    LimitExceeded,
    /// A 4xx refusal: nothing happened (`UserNotFound` for lookups, `NotResettable` for a
    /// reset; `AccessDenied` for the guard).
    Refuse,
    /// A 5xx: effect unknown; `landed` says whether the call took effect.
    ServerError { landed: bool },
    /// No answer: the call runs until its timeout, then fails (`Unavailable`, effect unknown).
    Timeout { landed: bool },
    /// The connection broke before the request arrived (effect unknown to the caller).
    ConnectionReset,
    /// Connection refused: the request never left (`Unavailable`, effect none).
    ConnectionRefused,
    /// Performed, then the answer was lost (`Unavailable`, effect unknown).
    Lost,
    /// Guard: the write landed, its answer was lost, and the SDK's retry met the write.
    Echo,
    /// Guard: the table fails every attempt of the call (nothing lands).
    Outage,
}

impl Fault {
    /// The fault's kind, for the coverage table.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Throttle => "throttled",
            Fault::LimitExceeded => "LimitExceeded",
            Fault::Refuse => "4xx",
            Fault::ServerError { landed: false } => "5xx",
            Fault::ServerError { landed: true } => "5xx (performed)",
            Fault::Timeout { landed: false } => "timeout",
            Fault::Timeout { landed: true } => "timeout (performed)",
            Fault::ConnectionReset => "connection reset",
            Fault::ConnectionRefused => "connection refused",
            Fault::Lost => "answer lost",
            Fault::Echo => "echo",
            Fault::Outage => "outage",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let landed = |l: bool| if l { " (performed)" } else { "" };
        match self {
            Fault::Throttle => write!(f, "throttled"),
            Fault::LimitExceeded => write!(f, "LimitExceeded"),
            Fault::Refuse => write!(f, "4xx refusal"),
            Fault::ServerError { landed: l } => write!(f, "5xx{}", landed(*l)),
            Fault::Timeout { landed: l } => write!(f, "timeout{}", landed(*l)),
            Fault::ConnectionReset => write!(f, "connection reset"),
            Fault::ConnectionRefused => write!(f, "connection refused"),
            Fault::Lost => write!(f, "performed, answer lost"),
            Fault::Echo => write!(f, "landed, answer lost, SDK retry met it"),
            Fault::Outage => write!(f, "table unavailable on every attempt"),
        }
    }
}

/// What happens to the `nth` call (from 0) of `op` in one invocation: a fault, an answer at a
/// chosen moment, or both (a late throttle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    pub op: Op,
    pub nth: u8,
    pub fault: Option<Fault>,
    /// When the answer arrives (the call is still cut at its timeout); `None`: the fakes'
    /// normal latency.
    pub at: Option<When>,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}: ", self.op.name(), self.nth)?;
        match (self.fault, self.at) {
            (Some(fault), Some(at)) => write!(f, "{fault}, answered {at}"),
            (Some(fault), None) => write!(f, "{fault}"),
            (None, Some(at)) => write!(f, "answers {at}"),
            (None, None) => write!(f, "answers normally"),
        }
    }
}

/// What a call sees of its invocation.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub inv: usize,
    /// The call's place among every port call of the schedule (calls of one record, in its
    /// task, are in this order).
    pub seq: u64,
    pub deadline: Instant,
    pub latency: Duration,
    pub fault: Option<Fault>,
    pub at: Option<When>,
}

impl Ctx {
    /// When the answer arrives, for a call that started at `start`.
    pub fn arrival(&self, start: Instant) -> Instant {
        match self.at {
            Some(when) => when.at(self.deadline).max(start),
            None => start + self.latency,
        }
    }
}

/// Sleeps until `arrives`, or until `cut` if that comes first (or never arrives); true when cut.
pub async fn arrive(arrives: Option<Instant>, cut: Instant) -> bool {
    let (at, cut_short) = match arrives {
        Some(at) if at <= cut => (at, false),
        _ => (cut, true),
    };
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
    cut_short
}

/// How a Cognito call was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answered {
    Ok,
    Err(CognitoErrorKind, Effect),
}

/// One Cognito call, as the fake saw it.
#[derive(Clone, Debug)]
pub struct CognitoCall {
    pub inv: usize,
    pub seq: u64,
    /// The record's task (a FIFO group's records share one, one after the other).
    pub task: Option<tokio::task::Id>,
    pub op: Op,
    pub pool: String,
    /// The username as passed.
    pub name: String,
    /// `ClientMetadata.ticket` (resets).
    pub ticket: Option<String>,
    pub start: Instant,
    pub end: Instant,
    pub fault: Option<Fault>,
    pub at: Option<When>,
    /// A reset (or resent invitation, or sign-out) that Cognito performed (the user got a code).
    pub performed: bool,
    pub answered: Answered,
}

/// How a call was injected with, for the journal: `[5xx, answered inside [m/2, m)]`.
pub fn injected_text(fault: Option<Fault>, at: Option<When>) -> String {
    match (fault, at) {
        (Some(fault), Some(at)) => format!(" [{fault}, answered {at}]"),
        (Some(fault), None) => format!(" [{fault}]"),
        (None, Some(at)) => format!(" [answers {at}]"),
        (None, None) => String::new(),
    }
}

impl GuardCall {
    /// The store misbehaved at this call (failed, or answered late).
    pub fn injected(&self) -> bool {
        self.fault.is_some() || self.at.is_some()
    }

    /// The call failed after every attempt the client makes (its caller was told an error).
    pub fn failed(&self) -> bool {
        self.injected() && self.result.starts_with("error")
    }
}

impl CognitoCall {
    /// A reset whose answer does not say whether it happened.
    pub fn ambiguous(&self) -> bool {
        matches!(self.answered, Answered::Err(_, Effect::Unknown))
    }

    /// A reset (or resent invitation) that may have sent the user a code.
    pub fn may_have_sent(&self) -> bool {
        self.op.sends_code() && (self.performed || self.ambiguous())
    }
}

/// One guard call, as the fake saw it.
#[derive(Clone, Debug)]
pub struct GuardCall {
    pub inv: usize,
    pub op: Op,
    /// The key's label (`k`, `k#0`, a message id) or the user item's `pk`.
    pub label: String,
    pub pk: String,
    pub claim_id: Option<String>,
    pub completion: Option<Completion>,
    pub start: Instant,
    pub end: Instant,
    pub fault: Option<Fault>,
    pub at: Option<When>,
    /// The table changed.
    pub wrote: bool,
    /// What the caller was told.
    pub result: String,
    /// The caller was told `Replay` (begin).
    pub replay: bool,
    /// What an approval operation was asked (JSON): a request's approval id, requester, pool,
    /// user, ticket, sign-out and `decideBy` (epoch seconds); a decision's approval id, verdict
    /// and approver. Taken from the call's arguments, not from its answer.
    pub detail: Option<serde_json::Value>,
}

/// One `publish_before` call.
#[derive(Clone, Debug)]
pub struct Published {
    pub inv: usize,
    pub fault: Option<Fault>,
    pub until: Instant,
    pub events: Vec<OutcomeEvent>,
}

/// What the fakes recorded.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    pub cognito: Vec<CognitoCall>,
    pub guard: Vec<GuardCall>,
    /// The task and the sequence number of each guard call (`guard[i]`'s is `guard_meta[i]`).
    pub guard_meta: Vec<(Option<tokio::task::Id>, u64)>,
    pub published: Vec<Published>,
    /// Writes to the pacing buckets.
    pub buckets: Vec<BucketCall>,
}

/// One write to a pacing bucket, as the fake bucket store saw it.
#[derive(Clone, Debug)]
pub struct BucketCall {
    pub inv: usize,
    pub pk: String,
    pub at: Instant,
    /// A rate cut written (AIMD), rather than a lease.
    pub cut: bool,
    pub applied: bool,
    /// The store failed the write (the pacer falls back to its static share).
    pub failed: bool,
}

#[derive(Debug, Default)]
struct Plan {
    inv: usize,
    deadline: Option<Instant>,
    latency: Duration,
    faults: Vec<Injected>,
    counts: BTreeMap<Op, u8>,
}

/// The next call's sequence number, and the guard operation each task has under way.
type Sequence = (
    u64,
    // By task, operation and invocation: two instances' invocations run "together" on one
    // task (neither spawned), and their calls must not take each other's numbers.
    std::collections::HashMap<(Option<tokio::task::Id>, Op, usize), u64>,
);

/// Hands each call its fault, and keeps the journal.
#[derive(Debug, Default)]
pub struct Injector {
    plan: Mutex<Plan>,
    /// Shared with the other instance's injector (see [`Injector::sibling`]).
    journal: Arc<Mutex<Journal>>,
    /// The next call's sequence number, and the guard operation each task has under way.
    seq: Arc<Mutex<Sequence>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Injector {
    /// The injector of another instance: its own invocations and faults, the same journal.
    pub fn sibling(&self) -> Injector {
        Injector {
            plan: Mutex::default(),
            journal: Arc::clone(&self.journal),
            seq: Arc::clone(&self.seq),
        }
    }

    /// The next invocation: its index, deadline, the fakes' normal latency and its faults.
    pub fn start(&self, inv: usize, deadline: Instant, latency: Duration, faults: &[Injected]) {
        *lock(&self.plan) = Plan {
            inv,
            deadline: Some(deadline),
            latency,
            faults: faults.to_vec(),
            counts: BTreeMap::new(),
        };
    }

    /// The context of the next call of `op`.
    pub fn next(&self, op: Op) -> Ctx {
        let mut plan = lock(&self.plan);
        let count = plan.counts.entry(op).or_insert(0);
        let nth = *count;
        *count = count.saturating_add(1);
        let injected = plan.faults.iter().find(|i| i.op == op && i.nth == nth);
        let seq = {
            let mut seq = lock(&self.seq);
            seq.0 += 1;
            let n = seq.0;
            seq.1.insert((tokio::task::try_id(), op, plan.inv), n);
            n
        };
        Ctx {
            inv: plan.inv,
            seq,
            deadline: plan.deadline.expect("a call outside an invocation"),
            latency: plan.latency,
            fault: injected.and_then(|i| i.fault),
            at: injected.and_then(|i| i.at),
        }
    }

    pub fn cognito(&self, call: CognitoCall) {
        lock(&self.journal).cognito.push(call);
    }

    pub fn guard(&self, call: GuardCall) {
        let task = tokio::task::try_id();
        let seq = lock(&self.seq)
            .1
            .remove(&(task, call.op, call.inv))
            .unwrap_or(0);
        let mut journal = lock(&self.journal);
        journal.guard.push(call);
        journal.guard_meta.push((task, seq));
    }

    pub fn bucket(&self, call: BucketCall) {
        lock(&self.journal).buckets.push(call);
    }

    pub fn published(&self, call: Published) {
        lock(&self.journal).published.push(call);
    }

    pub fn journal(&self) -> Journal {
        lock(&self.journal).clone()
    }
}
