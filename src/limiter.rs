//! Pacing of Cognito calls: one pacer per account, region and quota category ([`Scope`] and
//! [`Category`]) in each instance, giving out turns (start times) so that the whole fleet stays
//! inside each account's quota (Cognito's quotas are per account and region; a pool reached
//! through `POOL_ROLES` is paced in its role's account).
//!
//! - **Shared** (with `GUARD_TABLE`): the pacer leases slots of the fleet's bucket in the guard
//!   table ([`crate::pacing`] has the arithmetic, [`crate::aws::bucket`] the port), a few at a
//!   time for the calls waiting, so that the fleet's turns stay within the quota whatever the
//!   number of instances, and a lone busy instance can have all of them.
//! - **Static** (without the table, in `DRY_RUN`, or for [`FALLBACK`] after the table failed):
//!   each instance keeps to its own share, `quota / MAX_INSTANCES` (or `COGNITO_*_RPS`), as if
//!   every instance were busy. Never unlimited, unless a rate is set to `unlimited`.
//!
//! Turns are spaced `1.02 / rate` apart (no bursts; the 2% absorb timing jitter). **Interactive
//! first:** waiting HTTP calls ([`Priority::Interactive`]) take the next turn before any queue
//! record, and may book the shared timeline further ahead than queue traffic, which books at most
//! half a lease ahead (up to 1 s while its records run out of time: least laxity first between
//! instances). Behind queue traffic, an HTTP call **borrows** the booking's first slot: its lease
//! is appended as usual, but the call goes at once and the slot at the booking's end repays it,
//! under the fleet's borrow window ([`crate::pacing`]: one borrowed call outstanding at a time),
//! so its turn comes within the lease write's round trip (two when its view of the bucket was
//! stale). When another borrow's window is open, or the booking reaches past the window, it
//! waits for the booking as before: within 1.5 leases (or 1 s and a lease), plus the lease's
//! round trip and the turns of the HTTP calls before it. **Throttling as feedback:** a
//! `TooManyRequestsException` cuts the rate ([`crate::pacing::Aimd`]); with the table, the cut is
//! written to the bucket and the whole fleet slows down, then grows back.
//!
//! A caller whose turn would come after its latest start gets no turn and reserves nothing: the
//! record is RETRY `deadline` rather than timing out. [`Limiters::intend`] tells the same before a
//! record spends a read on a lookup whose reset could not get its turn in time.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::Instrument;

use crate::deadline::wall_now;
use crate::pacing::{
    self, Aimd, BucketItem, BucketOp, Cut, INTERACTIVE_HORIZON_US, Lease, Plan, Want,
};
use crate::pacing::{BucketStore, bucket_pk};

pub use crate::pacing::{Category, Priority, Scope};

/// The turn would come too late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no turn within the time left: the rate limit's queue is longer than the deadline")]
pub struct TooLate;

/// Per-instance rates (the static share); `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// `COGNITO_READ_RPS`.
    pub read: Option<f64>,
    /// `COGNITO_RESOURCE_READ_RPS`.
    pub resource_read: Option<f64>,
    /// `COGNITO_RESET_RPS`.
    pub account_recovery: Option<f64>,
    /// `COGNITO_CREATION_RPS`.
    pub user_creation: Option<f64>,
    /// `COGNITO_UPDATE_RPS`.
    pub user_update: Option<f64>,
}

impl Rates {
    /// No limits at all.
    pub const OFF: Rates = Rates {
        read: None,
        resource_read: None,
        account_recovery: None,
        user_creation: None,
        user_update: None,
    };

    fn of(&self, category: Category) -> Option<f64> {
        match category {
            Category::UserRead => self.read,
            Category::UserResourceRead => self.resource_read,
            Category::UserAccountRecovery => self.account_recovery,
            Category::UserCreation => self.user_creation,
            Category::UserUpdate => self.user_update,
        }
    }
}

/// The account's quotas per category, requests a second (`COGNITO_*_QUOTA`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub read: f64,
    pub resource_read: f64,
    pub account_recovery: f64,
    pub user_creation: f64,
    pub user_update: f64,
}

impl Quotas {
    fn of(&self, category: Category) -> f64 {
        match category {
            Category::UserRead => self.read,
            Category::UserResourceRead => self.resource_read,
            Category::UserAccountRecovery => self.account_recovery,
            Category::UserCreation => self.user_creation,
            Category::UserUpdate => self.user_update,
        }
    }
}

/// The fleet's buckets: where they are kept and how they are leased.
#[derive(Debug, Clone)]
pub struct SharedPacing {
    /// The guard's table.
    pub store: Arc<dyn BucketStore>,
    /// The quotas the fleet shares.
    pub quotas: Quotas,
    /// How much of the quota one lease takes (`PACING_LEASE_MS`, 100–250 ms).
    pub lease: Duration,
    /// The most one lease write may take before the pacer falls back to the static share.
    pub timeout: Duration,
}

/// After a failed lease write, the static share is used this long before the table is tried
/// again.
pub const FALLBACK: Duration = Duration::from_secs(2);

/// A leased slot more than this late is not used (its turn has passed).
const LATE_US: u64 = 20_000;
/// The longest lead a lease is given for its own round trip.
const MAX_LEAD_US: u64 = 1_000_000;
/// A window for this instance's achieved rate (the projection of its future turns).
const ACHIEVED_WINDOW_US: u64 = 2_000_000;
/// The shortest wait for the booking to come within the horizon (tokio's timers tick in
/// milliseconds).
const MIN_WAIT_US: u64 = 1_000;
/// Writes per lease before the pacer lets its waiters plan again.
const TRIES: usize = 4;
/// The lease length of a pacer without the fleet's bucket (it sets the queue's horizon).
const DEFAULT_LEASE: Duration = Duration::from_millis(200);

/// One pacer per (account, region, category), created on first use.
#[derive(Debug)]
pub struct Limiters {
    rates: Rates,
    shared: Option<SharedPacing>,
    pacers: Mutex<HashMap<PacerKey, Arc<Pacer>>>,
}

/// (account, region, category) of one pacer.
type PacerKey = (Option<String>, String, Category);

impl Limiters {
    /// Each instance at its static share, `rates`.
    pub fn new(rates: Rates) -> Limiters {
        Limiters {
            rates,
            shared: None,
            pacers: Mutex::default(),
        }
    }

    /// The fleet's buckets, with `rates` as each instance's share when the table is unavailable.
    pub fn shared(rates: Rates, shared: SharedPacing) -> Limiters {
        Limiters {
            rates,
            shared: Some(shared),
            pacers: Mutex::default(),
        }
    }

    /// Whether the fleet's buckets are in use.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn pacer<'s>(&self, scope: impl Into<Scope<'s>>, category: Category) -> Option<Arc<Pacer>> {
        let scope = scope.into();
        let rate = self.rates.of(category)?;
        let mut pacers = lock(&self.pacers);
        Some(Arc::clone(
            pacers
                .entry((
                    scope.account.map(str::to_owned),
                    scope.region.to_owned(),
                    category,
                ))
                .or_insert_with(|| {
                    Arc::new(Pacer::new(
                        bucket_pk(scope, category),
                        rate,
                        self.shared.as_ref(),
                        category,
                    ))
                }),
        ))
    }

    /// Waits for a turn for a call of `category` in `scope` (an account's region), starting no
    /// later than `latest`.
    pub async fn acquire<'s>(
        &self,
        scope: impl Into<Scope<'s>>,
        category: Category,
        priority: Priority,
        latest: Instant,
    ) -> Result<(), TooLate> {
        match self.pacer(scope, category) {
            None => Ok(()),
            Some(pacer) => pacer.acquire(priority, latest).await,
        }
    }

    /// Says that a record will want a turn of `category` in `region` later (its reset, after its
    /// lookups): `TooLate` when, counting every turn already promised, it could not come by
    /// `latest` even if this instance had the fleet's whole rate. Until it is dropped, the
    /// intent counts as a turn ahead of later intents.
    pub fn intend<'s>(
        &self,
        scope: impl Into<Scope<'s>>,
        category: Category,
        latest: Instant,
    ) -> Result<Intent, TooLate> {
        match self.pacer(scope, category) {
            None => Ok(Intent { pacer: None }),
            Some(pacer) => pacer.intend(latest).map(|()| Intent { pacer: Some(pacer) }),
        }
    }

    /// A call of `category` in `region` was throttled by Cognito (another user of the quota):
    /// the rate is cut, for the whole fleet when the bucket is shared.
    pub fn throttled<'s>(&self, scope: impl Into<Scope<'s>>, category: Category) {
        if let Some(pacer) = self.pacer(scope, category) {
            pacer.throttled();
        }
    }

    /// The share of the quota (or of the static rate) in force for `category` in `region`: 1
    /// until a throttle cuts it.
    pub fn factor<'s>(&self, scope: impl Into<Scope<'s>>, category: Category) -> f64 {
        self.pacer(scope, category)
            .map_or(1.0, |pacer| pacer.factor())
    }
}

/// A promised turn (see [`Limiters::intend`]), counted until dropped.
#[derive(Debug)]
pub struct Intent {
    pacer: Option<Arc<Pacer>>,
}

impl Drop for Intent {
    fn drop(&mut self) {
        if let Some(pacer) = &self.pacer {
            let mut state = pacer.lock();
            state.intents = state.intents.saturating_sub(1);
        }
    }
}

/// The fleet's bucket as one pacer sees it.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn BucketStore>,
    quota: f64,
    lease_us: u64,
    timeout: Duration,
}

/// The turns of one (region, category) in this instance.
#[derive(Debug)]
struct Pacer {
    pk: String,
    /// The fleet's borrow window for this bucket ([`pacing::borrow_pk`]).
    borrow_pk: String,
    category: Category,
    /// The static share's rate.
    rate: f64,
    /// How far ahead a queue record may take a turn (half a lease): an HTTP call arriving
    /// later still gets the next turn after that.
    batch_horizon_us: u64,
    shared: Option<Shared>,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Leased turns not given out yet (µs since the epoch), in order.
    slots: VecDeque<u64>,
    /// The waiting calls (ticket, latest start in µs), interactive first, each in arrival order.
    interactive: VecDeque<(u64, u64)>,
    batch: VecDeque<(u64, u64)>,
    tickets: u64,
    /// A lease write is under way.
    leasing: bool,
    /// The fleet's bucket as last seen.
    seen: Option<BucketItem>,
    /// The static share's own timeline.
    local: BucketItem,
    /// This instance's last rate cut, and one still to be written to the fleet's bucket.
    cut: Option<Cut>,
    cut_to_write: Option<Cut>,
    /// The static share is in force until then (µs), after a failed lease write.
    fallback_until: u64,
    /// The lease writes' round trip (a moving average, µs).
    round_trip_us: u64,
    /// Turns promised to records that have not asked yet.
    intents: u32,
    /// Turns given out recently (µs), for this instance's achieved rate.
    given: VecDeque<u64>,
}

impl State {
    fn waiting(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    /// The ticket whose turn is next: interactive calls first.
    fn head(&self) -> Option<u64> {
        self.interactive
            .front()
            .or(self.batch.front())
            .map(|(ticket, _)| *ticket)
    }

    /// How many waiting calls are ahead of `ticket`.
    fn position(&self, priority: Priority, ticket: u64) -> usize {
        let before =
            |queue: &VecDeque<(u64, u64)>| queue.iter().take_while(|(t, _)| *t != ticket).count();
        match priority {
            Priority::Interactive => before(&self.interactive),
            Priority::Batch => self.interactive.len() + before(&self.batch),
        }
    }

    /// The latest start of any waiting call of `priority` or higher: a lease that starts later
    /// serves none of them.
    fn latest(&self, priority: Priority) -> u64 {
        let interactive = self.interactive.iter().map(|(_, latest)| *latest);
        let latest = match priority {
            Priority::Interactive => interactive.max(),
            Priority::Batch => interactive
                .chain(self.batch.iter().map(|(_, latest)| *latest))
                .max(),
        };
        latest.unwrap_or(0)
    }

    fn remove(&mut self, priority: Priority, ticket: u64) {
        let queue = match priority {
            Priority::Interactive => &mut self.interactive,
            Priority::Batch => &mut self.batch,
        };
        queue.retain(|(t, _)| *t != ticket);
    }
}

/// What a waiting call does next.
enum Step {
    /// Its turn is at this moment (µs).
    Turn(u64),
    TooLate,
    /// Lease slots for the waiting calls.
    Lease(LeaseJob),
    /// Wait for a change, or until this moment (µs).
    Wait(Option<u64>),
}

/// One lease to ask the fleet's bucket for.
struct LeaseJob {
    want: Want,
    /// No waiting call can use a slot after this (µs).
    latest_us: u64,
    seen: Option<BucketItem>,
    cut: Option<Cut>,
    /// For interactive calls: borrow the booking's first slot rather than wait for it.
    borrow: bool,
}

impl Pacer {
    fn new(pk: String, rate: f64, shared: Option<&SharedPacing>, category: Category) -> Pacer {
        Pacer {
            borrow_pk: pacing::borrow_pk(&pk),
            pk,
            category,
            rate,
            batch_horizon_us: micros(shared.map_or(DEFAULT_LEASE, |shared| shared.lease)) / 2,
            shared: shared.map(|shared| Shared {
                store: Arc::clone(&shared.store),
                quota: shared.quotas.of(category),
                lease_us: micros(shared.lease),
                timeout: shared.timeout,
            }),
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The share in force (the lower of this instance's cut and the fleet's).
    fn factor(&self) -> f64 {
        let state = self.lock();
        Aimd::merged(
            state.cut.as_ref(),
            state.seen.and_then(|s| s.cut).as_ref(),
            now_us(),
        )
    }

    /// Whether the fleet's bucket is in use at `now`.
    fn shared_now(&self, state: &State, now: u64) -> Option<&Shared> {
        self.shared.as_ref().filter(|_| now >= state.fallback_until)
    }

    /// One turn's length now: the fleet's rate, or the static share, times the cut.
    fn slot_us(&self, state: &State, now: u64) -> u64 {
        let factor = Aimd::merged(
            state.cut.as_ref(),
            state.seen.and_then(|s| s.cut).as_ref(),
            now,
        );
        match self.shared_now(state, now) {
            Some(shared) => pacing::slot_us(shared.quota * factor),
            None => pacing::slot_us(self.rate * factor),
        }
    }

    /// The earliest moment a turn `ahead` places behind every leased slot can come, if this
    /// instance had the whole rate.
    fn projected(&self, state: &State, now: u64, ahead: usize) -> u64 {
        let slot = self.slot_us(state, now);
        if let Some(slot_time) = state.slots.get(ahead) {
            return *slot_time;
        }
        let ahead = (ahead - state.slots.len()) as u32;
        let free = match self.shared_now(state, now) {
            Some(_) => {
                let leased_end = state.slots.back().map_or(0, |last| last + slot);
                leased_end.max(state.seen.and_then(|s| s.next_us).unwrap_or(0))
            }
            None => state.local.next_us.unwrap_or(0),
        };
        pacing::projected_turn(free, now, ahead, slot)
    }

    fn intend(&self, latest: Instant) -> Result<(), TooLate> {
        let mut state = self.lock();
        let now = now_us();
        let ahead = state.waiting() + state.intents as usize;
        if self.projected(&state, now, ahead) > to_us(latest, now) {
            return Err(TooLate);
        }
        state.intents += 1;
        Ok(())
    }

    fn throttled(&self) {
        let mut state = self.lock();
        let now = now_us();
        // The cut in force is the lower of the two; a new one starts from it.
        let fleet = state.seen.and_then(|s| s.cut);
        let last = match (state.cut, fleet) {
            (Some(own), Some(fleet)) => Some(
                if Aimd::factor(Some(&own), now) <= Aimd::factor(Some(&fleet), now) {
                    own
                } else {
                    fleet
                },
            ),
            (own, fleet) => own.or(fleet),
        };
        if let Some(cut) = Aimd::cut(last.as_ref(), now) {
            tracing::info!(
                category = self.category.as_str(),
                bucket = %self.pk,
                share = cut.factor,
                "Cognito throttled a call: its rate is cut and grows back"
            );
            state.cut = Some(cut);
            if self.shared.is_some() {
                state.cut_to_write = Some(cut);
            }
        }
    }

    async fn acquire(&self, priority: Priority, latest: Instant) -> Result<(), TooLate> {
        let ticket = {
            let mut state = self.lock();
            state.tickets += 1;
            let ticket = state.tickets;
            let latest = to_us(latest, now_us());
            match priority {
                Priority::Interactive => state.interactive.push_back((ticket, latest)),
                Priority::Batch => state.batch.push_back((ticket, latest)),
            }
            ticket
        };
        // Leaves the queue whatever happens to this call (a dropped future included).
        let _waiting = Waiting {
            pacer: self,
            priority,
            ticket,
        };
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let step = self.step(priority, ticket, latest);
        // A turn already due goes at once, and without a span: there was nothing to wait for
        // (a trace's `pacing.wait` is a wait, or the lease writes that ended one).
        if let Step::Turn(at) = step
            && at <= now_us()
        {
            return Ok(());
        }
        self.wait_for_turn(priority, ticket, latest, step, changed)
            .instrument(tracing::debug_span!("pacing.wait", category = ?self.category))
            .await
    }

    /// Waits for the turn of `ticket`, from the first `step` decided for it (`changed`: the
    /// notification enabled before it was decided).
    async fn wait_for_turn<'p>(
        &'p self,
        priority: Priority,
        ticket: u64,
        latest: Instant,
        mut step: Step,
        mut changed: Pin<&mut Notified<'p>>,
    ) -> Result<(), TooLate> {
        loop {
            match step {
                Step::Turn(at) => {
                    // A turn already due goes at once: tokio's timer rounds a deadline up to
                    // its next millisecond tick, so sleeping until now cost up to a millisecond
                    // (every call of an idle limiter paid it: two in a cold start's reset).
                    if at > now_us() {
                        tokio::time::sleep_until(instant_of(at)).await;
                    }
                    return Ok(());
                }
                Step::TooLate => return Err(TooLate),
                Step::Lease(job) => {
                    let _leasing = Leasing { pacer: self };
                    self.lease(job).await;
                }
                Step::Wait(None) => changed.as_mut().await,
                Step::Wait(Some(until)) => {
                    tokio::select! {
                        () = changed.as_mut() => {}
                        () = tokio::time::sleep_until(instant_of(until)) => {}
                    }
                }
            }
            changed.set(self.changed.notified());
            changed.as_mut().enable();
            step = self.step(priority, ticket, latest);
        }
    }

    /// Decides, under the lock, what the call `ticket` does next.
    fn step(&self, priority: Priority, ticket: u64, latest: Instant) -> Step {
        let mut state = self.lock();
        let now = now_us();
        let latest = to_us(latest, now);
        while state.slots.front().is_some_and(|at| at + LATE_US < now) {
            state.slots.pop_front();
        }
        let head = state.head() == Some(ticket);
        let shared = self.shared_now(&state, now).is_some();
        // The static share: the head takes the next turn of its own timeline, or none at all.
        if !shared && state.slots.is_empty() {
            if !head {
                let ahead = state.position(priority, ticket);
                if self.projected(&state, now, ahead) > latest {
                    state.remove(priority, ticket);
                    self.changed.notify_waiters();
                    return Step::TooLate;
                }
                return Step::Wait(None);
            }
            let want = Want {
                slots: 1,
                slot_us: self.slot_us(&state, now),
                horizon_us: u64::MAX / 4,
                lead_us: 0,
                repair_after_us: u64::MAX / 2,
                expires_at: 0,
            };
            let Plan::Write(op) = pacing::plan(Some(&state.local), now, &want) else {
                unreachable!("an unbounded horizon never waits")
            };
            let turn = match op {
                BucketOp::Restart { start_us, .. } => start_us,
                _ => state.local.next_us.unwrap_or(now),
            };
            if turn > latest {
                state.remove(priority, ticket);
                self.changed.notify_waiters();
                return Step::TooLate;
            }
            // A queue record takes a turn at most half a lease ahead, so that an HTTP call
            // arriving meanwhile still goes first.
            if priority == Priority::Batch && turn > now + self.batch_horizon_us {
                return Step::Wait(Some(turn - self.batch_horizon_us));
            }
            state.remove(priority, ticket);
            self.changed.notify_waiters();
            if let Ok(after) = pacing::apply(&op, Some(&state.local)) {
                state.local = after;
            }
            give(&mut state, now);
            return Step::Turn(turn);
        }
        // Leased slots go to the head.
        if head && let Some(&slot) = state.slots.front() {
            state.remove(priority, ticket);
            self.changed.notify_waiters();
            if slot > latest {
                return Step::TooLate;
            }
            state.slots.pop_front();
            give(&mut state, now);
            return Step::Turn(slot);
        }
        let ahead = state.position(priority, ticket);
        if self.projected(&state, now, ahead) > latest {
            state.remove(priority, ticket);
            self.changed.notify_waiters();
            return Step::TooLate;
        }
        let Some(shared) = self.shared_now(&state, now) else {
            return Step::Wait(None);
        };
        if state.leasing || state.slots.len() >= state.waiting() {
            return Step::Wait(None);
        }
        let top = if state.interactive.is_empty() {
            Priority::Batch
        } else {
            Priority::Interactive
        };
        let slot_us = self.slot_us(&state, now);
        // Queue records book half a lease ahead, further as they run out of time to spare
        // (least laxity first between instances); HTTP calls up to 5 s ahead.
        let spare = spare_us(&state, now, slot_us);
        let horizon_us = match top {
            Priority::Interactive => INTERACTIVE_HORIZON_US,
            Priority::Batch => pacing::batch_horizon_us(spare, shared.lease_us),
        };
        let repair_after_us =
            pacing::repair_after_us(shared.lease_us, pacing::slot_us(shared.quota));
        // Booked beyond the horizon (as last seen): wait until it is within it.
        if let Some(next) = state.seen.and_then(|s| s.next_us)
            && next > now + horizon_us
            && next <= now + repair_after_us
        {
            let at = match top {
                Priority::Interactive => next - horizon_us,
                Priority::Batch => pacing::batch_retry_at(next, now, spare, shared.lease_us),
            };
            // At least a timer tick ahead: never a busy loop on a rounding.
            return Step::Wait(Some(at.max(now + MIN_WAIT_US)));
        }
        // An interactive lease is for the interactive calls only: queue records never book
        // further ahead than their own horizon.
        let wanting = match top {
            Priority::Interactive => state.interactive.len(),
            Priority::Batch => state.waiting(),
        };
        let missing = wanting.saturating_sub(state.slots.len()).max(1) as u32;
        let want = Want {
            slots: missing.min(pacing::slots_per_lease(shared.lease_us, slot_us)),
            slot_us,
            horizon_us,
            lead_us: state.round_trip_us.min(MAX_LEAD_US),
            repair_after_us,
            expires_at: expires_at(now),
        };
        state.leasing = true;
        Step::Lease(LeaseJob {
            want,
            latest_us: state.latest(top),
            seen: state.seen,
            cut: state.cut_to_write.take(),
            borrow: top == Priority::Interactive,
        })
    }

    /// After another borrower's window (ending at `ends`) refused this interactive caller's:
    /// when it closes at least two round trips before `lease`'s first slot, waits for it to
    /// close (never longer than for that slot) and holds the next window, from then to the end
    /// of that slot, which repays the call. The moment the call may go, if the window was
    /// written (`None`: it waits for its slot, another borrower having come first).
    async fn borrow_after(
        &self,
        ends: u64,
        lease: &Lease,
        round_trip: u64,
        expires_at: u64,
    ) -> Option<u64> {
        let shared = self.shared.as_ref()?;
        let now = now_us();
        if ends + 2 * round_trip >= lease.start_us {
            return None;
        }
        // Past its end by a tick: the window's `Restart` needs the old one ended.
        tokio::time::sleep_until(instant_of(ends + 1_000)).await;
        let start = now_us();
        let end = lease.first_slot_end_us();
        if end <= start {
            return None;
        }
        let window = BucketOp::Restart {
            start_us: start,
            len_us: end - start,
            expires_at,
        };
        match shared
            .store
            .write(&self.borrow_pk, &window, shared.timeout)
            .await
        {
            Ok(Ok(_)) => {
                let at = now_us();
                tracing::debug!(
                    bucket = %self.pk,
                    waited_ms = ms_after(now, at),
                    first_slot_in_ms = ms_after(at, lease.start_us),
                    "interactive lease: borrowed once the other window closed"
                );
                Some(at)
            }
            _ => None,
        }
    }

    /// A borrow window held from `start` to `end` ends, once the borrower's append is back,
    /// with the slot that repays the call (the first of `lease`): the rest was room for appends
    /// that might land before the borrower's, and held it only from other borrowers. Written
    /// in the background (the call does not wait for it) and only over this very window; if
    /// it is lost, the window lasts as written.
    fn shrink_window(&self, start: u64, end: u64, lease: &Lease, expires_at: u64) {
        let Some(shared) = &self.shared else { return };
        let repaid = lease.first_slot_end_us();
        if repaid >= end || repaid <= start {
            return;
        }
        let op = BucketOp::Repair {
            seen_us: end,
            start_us: start,
            len_us: repaid - start,
            expires_at,
        };
        let (store, pk, timeout) = (
            Arc::clone(&shared.store),
            self.borrow_pk.clone(),
            shared.timeout,
        );
        tokio::spawn(async move {
            let _ = store.write(&pk, &op, timeout).await;
        });
    }

    /// Asks the fleet's bucket for the slots of `job` (and writes a pending cut first).
    async fn lease(&self, job: LeaseJob) {
        let Some(shared) = &self.shared else { return };
        let LeaseJob {
            mut want,
            latest_us,
            mut seen,
            cut,
            borrow,
        } = job;
        if let Some(cut) = cut {
            let op = BucketOp::Cut {
                cut,
                expires_at: want.expires_at,
            };
            match shared.store.write(&self.pk, &op, shared.timeout).await {
                Ok(Ok(item)) | Ok(Err(pacing::Refused { item: Some(item) })) => seen = Some(item),
                Ok(Err(_)) => {}
                Err(error) => return self.fall_back(&error),
            }
        }
        // An interactive caller behind a booking borrows its first slot (see `pacing`): the end
        // of the borrow window it holds, once written; `None` with `may_borrow` off once another's
        // window was found open.
        let mut may_borrow = borrow;
        let mut window: Option<u64> = None;
        // Where the window held begins: the borrowed call goes once it is written, from there.
        let mut window_start = 0;
        // The end of another borrower's window, found open.
        let mut other_window_ends: Option<u64> = None;
        for _ in 0..TRIES {
            let now = now_us();
            want.expires_at = expires_at(now);
            let mut op = match pacing::plan(seen.as_ref(), now, &want) {
                // Booked past every waiting call's latest start: no lease serves them.
                Plan::Write(BucketOp::Append { .. })
                    if seen.and_then(|s| s.next_us).unwrap_or(0) > latest_us =>
                {
                    break;
                }
                Plan::Write(op) => op,
                // Booked beyond the horizon: the waiting calls wait for it (see `step`).
                Plan::WaitUntil(_) => break,
            };
            // Borrowing: the append must end the booking inside the window, and the window is
            // written beside it unless already held.
            let mut window_op = None;
            if may_borrow
                && let BucketOp::Append {
                    earliest_us,
                    len_us,
                    expires_at,
                    ..
                } = op
            {
                let soon = earliest_us;
                let end = window.unwrap_or_else(|| {
                    pacing::borrow_end(seen.and_then(|s| s.next_us), soon, shared.lease_us)
                });
                if end > soon {
                    op = BucketOp::Append {
                        earliest_us,
                        latest_us: end,
                        len_us,
                        expires_at,
                    };
                    // From now, not from `soon`: the lease's lead keeps its first slot from
                    // passing during the write, but a borrowed call needs only its window, and
                    // goes as soon as both writes are back (not a round-trip estimate later).
                    if window.is_none() {
                        window_op = Some(BucketOp::Restart {
                            start_us: now,
                            len_us: end - now,
                            expires_at,
                        });
                    }
                } else {
                    may_borrow = false;
                }
            }
            let sent = Instant::now();
            let (written, window_written) = match &window_op {
                Some(window_op) => {
                    let (written, window_written) = tokio::join!(
                        shared.store.write(&self.pk, &op, shared.timeout),
                        shared
                            .store
                            .write(&self.borrow_pk, window_op, shared.timeout)
                    );
                    (written, Some(window_written))
                }
                None => (
                    shared.store.write(&self.pk, &op, shared.timeout).await,
                    None,
                ),
            };
            let round_trip = micros(sent.elapsed());
            match (window_written, window_op) {
                (
                    Some(Ok(Ok(_))),
                    Some(BucketOp::Restart {
                        start_us, len_us, ..
                    }),
                ) => {
                    window = Some(start_us + len_us);
                    window_start = start_us;
                }
                // Another borrower's window is open (or the window could not be written): this
                // call appends behind the booking, as queue records do.
                (Some(refused), _) => {
                    let open_for_ms = match &refused {
                        Ok(Err(pacing::Refused { item: Some(item) })) => {
                            item.next_us.map(|end| ms_after(now_us(), end))
                        }
                        _ => None,
                    };
                    tracing::debug!(
                        bucket = %self.pk,
                        open_for_ms,
                        written = refused.is_ok(),
                        "not borrowing: another borrow window is open"
                    );
                    if let Ok(Err(pacing::Refused { item: Some(item) })) = &refused {
                        other_window_ends = item.next_us;
                    }
                    may_borrow = false;
                }
                (None, _) => {}
            }
            let borrowing = may_borrow && window.is_some() && matches!(op, BucketOp::Append { .. });
            match written {
                Ok(Ok(after)) => {
                    // Behind another's window that closes before this lease's first slot: wait
                    // for it, then borrow (the slot is the repayment).
                    // And on an idle bucket (a `Restart`, its first slot a lead ahead: the
                    // round-trip estimate, slow to fall after one slow write), borrow it too
                    // when the writes came back well before it.
                    let after_window = match op {
                        _ if !borrow || borrowing => None,
                        BucketOp::Restart { .. } => other_window_ends.or(Some(now_us())),
                        _ => other_window_ends,
                    };
                    let granted = Lease::granted(&op, &after, want.slot_us);
                    let late = match (after_window, &granted) {
                        (Some(ends), Some(lease)) => {
                            self.borrow_after(ends, lease, round_trip, want.expires_at)
                                .await
                        }
                        _ => None,
                    };
                    let mut state = self.lock();
                    // Up at once, down slowly: a lease whose first slots passed during its own
                    // round trip would be wasted.
                    state.round_trip_us =
                        round_trip.max((state.round_trip_us * 3 + round_trip) / 4);
                    state.seen = Some(after);
                    if let Some(lease) = granted {
                        let now = now_us();
                        if borrow {
                            tracing::debug!(
                                bucket = %self.pk,
                                borrowed = borrowing,
                                first_slot_in_ms = ms_after(now, lease.start_us),
                                window_ends_in_ms = window.map(|end| ms_after(now, end)),
                                op = ?op,
                                round_trip_ms = ms_after(0, round_trip),
                                "interactive lease"
                            );
                        }
                        let mut times: Vec<u64> = lease.slot_times().collect();
                        // The first slot, borrowed: now, repaid at its place.
                        if borrowing && let Some(first) = times.first_mut() {
                            *first = pacing::borrowed_slot(window_start, *first, now);
                        }
                        if borrowing && let Some(end) = window {
                            self.shrink_window(window_start, end, &lease, want.expires_at);
                        }
                        if let (Some(at), Some(first)) = (late, times.first_mut()) {
                            *first = at.min(*first);
                        }
                        // Slots in order, after any still in hand (a repair may start earlier).
                        let mut slots: Vec<u64> = state.slots.drain(..).collect();
                        slots.extend(times.into_iter().filter(|at| at + LATE_US >= now));
                        slots.sort_unstable();
                        state.slots = slots.into();
                    }
                    return;
                }
                Ok(Err(refused)) => {
                    // The booking moved past the window: no borrowing with it.
                    if borrowing
                        && refused
                            .item
                            .and_then(|item| item.next_us)
                            .zip(window)
                            .is_some_and(|(next, end)| next > end)
                    {
                        may_borrow = false;
                    }
                    seen = refused.item;
                }
                Err(error) => return self.fall_back(&error),
            }
        }
        self.lock().seen = seen;
    }

    fn fall_back(&self, error: &crate::failure::GuardError) {
        let mut state = self.lock();
        let now = now_us();
        if state.fallback_until <= now {
            tracing::warn!(
                bucket = %self.pk,
                error.cause_chain = %crate::logging::cause_chain(error),
                static_rate = self.rate,
                "the pacing bucket is unavailable: this instance paces at its static share (quota / MAX_INSTANCES) and tries the table again in {} s",
                FALLBACK.as_secs()
            );
        }
        state.fallback_until = now + micros(FALLBACK);
        // The static timeline starts after whatever was leased from the fleet.
        let leased_end = state.slots.back().copied().unwrap_or(0);
        state.local.next_us = state.local.next_us.max(Some(leased_end));
    }
}

/// How many milliseconds `at_us` is after `from_us` (negative if before), for the log lines.
fn ms_after(from_us: u64, at_us: u64) -> f64 {
    (at_us as f64 - from_us as f64) / 1000.0
}

/// Takes a waiting call out of its queue when it ends, however it ends.
struct Waiting<'a> {
    pacer: &'a Pacer,
    priority: Priority,
    ticket: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pacer.lock().remove(self.priority, self.ticket);
        self.pacer.changed.notify_waiters();
    }
}

/// Ends a lease write, however it ends.
struct Leasing<'a> {
    pacer: &'a Pacer,
}

impl Drop for Leasing<'_> {
    fn drop(&mut self) {
        self.pacer.lock().leasing = false;
        self.pacer.changed.notify_waiters();
    }
}

/// The least time to spare among the waiting queue records: each one's latest start, less the
/// moment its turn would come if this instance had every turn from now on (the leased slots in
/// hand serve the first ones).
fn spare_us(state: &State, now: u64, slot_us: u64) -> i64 {
    let in_hand = state.slots.len();
    state
        .batch
        .iter()
        .enumerate()
        .skip(in_hand)
        .map(|(i, (_, latest))| {
            let turns = (i - in_hand + 1) as i64;
            *latest as i64 - now as i64 - turns * slot_us as i64
        })
        .min()
        .unwrap_or(i64::MAX)
}

/// Counts a turn given out.
fn give(state: &mut State, now: u64) {
    state.given.push_back(now);
    while state
        .given
        .front()
        .is_some_and(|at| at + ACHIEVED_WINDOW_US < now)
    {
        state.given.pop_front();
    }
}

/// A lock whose holder panicked still holds valid pacing state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u128::from(u64::MAX)) as u64
}

/// The wall clock now, µs since the epoch (tokio's clock: paused in tests).
fn now_us() -> u64 {
    micros(wall_now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// `instant` on the wall clock, µs since the epoch, seen at `now`.
fn to_us(instant: Instant, now: u64) -> u64 {
    let current = Instant::now();
    if instant >= current {
        now.saturating_add(micros(instant - current))
    } else {
        now.saturating_sub(micros(current - instant))
    }
}

/// The moment a wall-clock time (µs) comes, on tokio's clock.
fn instant_of(at_us: u64) -> Instant {
    Instant::now() + Duration::from_micros(at_us.saturating_sub(now_us()))
}

/// A bucket item lives a day after its last write.
fn expires_at(now: u64) -> u64 {
    now / 1_000_000 + 86_400
}

#[cfg(test)]
mod tests;
