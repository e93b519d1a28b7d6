//! The arithmetic of fleet-wide pacing: a token bucket shared by every instance, one per (account,
//! region, quota category), as plain functions over plain numbers. No clock, no I/O, no SDK: the caller
//! passes the time, and the port ([`crate::aws::bucket`]) stores the item.
//!
//! **The bucket is a timeline.** Its item holds one moment, `next`: the end of the last lease
//! handed out. A call's turn is a *slot* of `1.02 / rate` seconds on that timeline (2% slack for
//! timing jitter, as in the per-instance limiter); an instance *leases* `n` consecutive slots at
//! once (at most [`Lease::MAX`] worth, 100–250 ms), so the table sees a few writes a second per
//! busy instance rather than one per call. Leases never overlap, so whatever the number of
//! instances, the fleet's turns are at most `rate / 1.02` a second; one busy instance can lease
//! every slot. Nothing accumulates while the bucket is idle (no burst after a quiet spell).
//!
//! **Each lease is one conditional write** ([`BucketOp`]) that [`plan`] chooses from the item as
//! last seen, and [`apply`] defines exactly (the in-memory fake and the DynamoDB expressions
//! follow it):
//!
//! | op | condition | effect | lease |
//! |---|---|---|---|
//! | `Restart` | no `next`, or `next < soon` | `next = soon + len` | `[soon, soon + len)` |
//! | `Append` | `soon ≤ next ≤ now + horizon` | `next = next + len` | `[next, next + len)` |
//! | `Repair` | `next = seen` (far in the future: a writer's clock is wrong) | `next = soon + len` | `[soon, soon + len)` |
//!
//! with `soon = now + lead` (the lease's round trip, so that its first slot is not already past)
//! and `len = n × slot`. An instance books at most `horizon` ahead: a batch (queue) caller's
//! horizon is half a lease while its records have time to spare, growing up to
//! [`URGENCY_WINDOW_US`] as they run out of it ([`batch_horizon_us`]: least laxity first between
//! instances); an interactive (HTTP) caller's is [`INTERACTIVE_HORIZON_US`]. So the timeline is
//! booked by queue traffic at most `1.5 × lease` ahead of now (`1 s + lease` while queued records
//! are at risk), and an interactive call appended behind it waits at most that long for its first
//! slot, unless it borrows it (below). A refused write returns the item as it stands and the caller plans again; a bucket
//! booked beyond the horizon means waiting until it is within it ([`Plan::WaitUntil`],
//! [`batch_retry_at`]).
//!
//! **An HTTP call borrows the booking's first slot.** Behind queue traffic, an interactive caller
//! would wait up to `1.5 × lease` for the end of the booking. Instead it appends its slot as
//! usual (so the timeline still counts it) but makes the call at once, as soon as its writes are
//! back: the slot at the end of the booking is left unused, and repays it. The gap between the
//! borrowed call and its repayment is covered by a *borrow window* (a second item,
//! [`borrow_pk`], written with a `Restart` of its own from the moment the caller planned it to
//! [`borrow_end`]) that no other borrower may overlap, and
//! the append is conditional on the booking ending inside that window: **at any moment at most
//! one call of the fleet is not on the timeline**, so in any interval the fleet makes at most
//! one call more than the timeline's slots in it (in any second, `⌈quota / 1.02⌉ + 1`). The
//! window is written together with the append (one round trip). Once the append is back, the
//! borrower shrinks its window to end with its repayment slot (a `Repair` over exactly its own
//! window, in the background): the lease of room beyond it only covered appends landing first.
//! A caller that finds another's window open appends behind the booking as before, and if that
//! window closes before its own slot, waits for it and borrows then, its appended slot being the
//! repayment. On an idle bucket (a `Restart`, whose first slot is the lease's lead ahead: the
//! round-trip estimate, which falls slowly after one slow write), an interactive caller whose
//! writes came back well before that slot holds a window until it and goes then, the same way.
//! Queue records never borrow.
//!
//! **Clocks.** Times are microseconds of each instance's wall clock (Lambda's is kept in sync
//! by the Amazon Time Sync Service, typically well under a millisecond apart). Two instances
//! whose clocks differ by `s` may run the edges of adjacent leases up to `s` closer than a
//! slot; the 2% slack absorbs 20 ms of that per second. A writer whose clock is far ahead
//! books `next` in the future; once `next` is beyond any legitimate booking
//! ([`repair_after_us`]) the others take the timeline back with `Repair` instead of waiting for
//! a future that is not coming. **A crashed lease holder** costs its unused slots, at most one
//! lease: they simply pass, and nothing has to be released.
//!
//! **Throttling as feedback (AIMD).** A `TooManyRequestsException` means someone else uses the
//! same quota: the rate is multiplied by [`Aimd::DECREASE`] (at most once a second, never below
//! [`Aimd::MIN_FACTOR`]) and grows back by [`Aimd::INCREASE_PER_S`] of the quota per second. The cut is kept in the bucket
//! item ([`Cut`]), so the whole fleet slows down, not just the instance that was throttled.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::failure::GuardError;

/// Cognito's quota categories, as its quota page names them, as far as this function calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// `UserRead` (120/s by default): `AdminGetUser`.
    UserRead,
    /// `UserResourceRead` (50/s by default): `AdminListGroupsForUser`.
    UserResourceRead,
    /// `UserAccountRecovery` (30/s by default): `AdminResetUserPassword`.
    UserAccountRecovery,
    /// `UserCreation` (50/s by default): `AdminCreateUser` (an invitation resent).
    UserCreation,
    /// `UserUpdate` (25/s by default): `AdminUserGlobalSignOut`.
    UserUpdate,
}

impl Category {
    /// The category's name on Cognito's quota page.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::UserRead => "UserRead",
            Category::UserResourceRead => "UserResourceRead",
            Category::UserAccountRecovery => "UserAccountRecovery",
            Category::UserCreation => "UserCreation",
            Category::UserUpdate => "UserUpdate",
        }
    }
}

/// Where a quota applies: an account (`None`: the function's own, when `FUNCTION_ACCOUNT_ID` is
/// not set) and a region. A bare region is the function's own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope<'a> {
    pub account: Option<&'a str>,
    pub region: &'a str,
}

impl<'a> From<&'a str> for Scope<'a> {
    fn from(region: &'a str) -> Self {
        Scope {
            account: None,
            region,
        }
    }
}

/// The result of one write: the item after it, or the refusal with the item as it stands.
pub type Written = Result<BucketItem, Refused>;

/// The partition key of a bucket: `bucket#<account>#<region>#<category>`, or
/// `bucket#<region>#<category>` for the function's own account when `FUNCTION_ACCOUNT_ID` is
/// not set (Cognito's quotas are per account and region: two accounts' pools in one region
/// never share a bucket).
pub fn bucket_pk<'s>(scope: impl Into<Scope<'s>>, category: Category) -> String {
    let scope = scope.into();
    match scope.account {
        Some(account) => format!("bucket#{account}#{}#{}", scope.region, category.as_str()),
        None => format!("bucket#{}#{}", scope.region, category.as_str()),
    }
}

/// One conditional write on a bucket item, within `budget`: the port to the table that holds
/// the buckets (`crate::aws::bucket::DynamoBucket`; `MemoryBuckets` in tests).
pub trait BucketStore: Send + Sync + std::fmt::Debug {
    /// Applies `op` to the item `pk` if its condition holds.
    fn write<'a>(
        &'a self,
        pk: &'a str,
        op: &'a BucketOp,
        budget: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Written, GuardError>> + Send + 'a>>;
}

/// Slack over a second for timing jitter: `rate` turns are spaced `1.02 / rate` seconds apart.
pub const SPACING: f64 = 1.02;

/// How far ahead an interactive (HTTP) caller may book the timeline.
pub const INTERACTIVE_HORIZON_US: u64 = 5_000_000;

/// Queue records whose turns are at risk (less than this to spare) book further ahead, up to
/// this far, the least time to spare the furthest: see [`batch_horizon_us`].
pub const URGENCY_WINDOW_US: u64 = 1_000_000;

/// The largest clock difference between two instances that pacing treats as legitimate.
pub const MAX_SKEW_US: u64 = 1_000_000;

/// One second in microseconds.
const SECOND_US: f64 = 1_000_000.0;

/// Who waits for a turn. HTTP requests have a person waiting; queue records do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// An HTTP request (API Gateway, function URL, ALB): served first, and may book further ahead.
    Interactive,
    /// A queue record: books at most half a lease ahead, and yields to waiting interactive calls.
    Batch,
}

/// The fleet's last cut of its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    /// The share of the quota in force right after the cut, `MIN_FACTOR..=1`.
    pub factor: f64,
    /// When it was made, µs since the epoch.
    pub at_us: u64,
}

/// A bucket item as stored.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BucketItem {
    /// The end of the last lease (µs since the epoch); `None`: never leased.
    pub next_us: Option<u64>,
    /// The fleet's last rate cut, if any.
    pub cut: Option<Cut>,
}

/// One conditional write on a bucket item. Every write also sets the item's TTL
/// (`expires_at`, epoch seconds), so a region's bucket that is no longer used disappears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BucketOp {
    /// The bucket is idle (`next` absent or before `start_us`): book `[start_us, start_us + len_us)`.
    Restart {
        start_us: u64,
        len_us: u64,
        expires_at: u64,
    },
    /// The bucket is busy but booked no further than `latest_us`: book `len_us` after `next`.
    Append {
        earliest_us: u64,
        latest_us: u64,
        len_us: u64,
        expires_at: u64,
    },
    /// `next` is `seen_us`, beyond anything a correct clock books: take the timeline back
    /// from `start_us`.
    Repair {
        seen_us: u64,
        start_us: u64,
        len_us: u64,
        expires_at: u64,
    },
    /// Record a rate cut, unless another was made less than [`Aimd::GAP_US`] before it.
    Cut { cut: Cut, expires_at: u64 },
}

/// Why a write was refused: its condition did not hold on the item as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Refused {
    /// The item as it stands (`None`: there is none).
    pub item: Option<BucketItem>,
}

/// Applies `op` to `item` exactly as the table does: the item after the write, or the refusal.
pub fn apply(op: &BucketOp, item: Option<&BucketItem>) -> Result<BucketItem, Refused> {
    let before = item.copied().unwrap_or_default();
    let refused = Refused {
        item: item.copied(),
    };
    match *op {
        BucketOp::Restart {
            start_us, len_us, ..
        } => match before.next_us {
            Some(next) if next >= start_us => Err(refused),
            _ => Ok(BucketItem {
                next_us: Some(start_us + len_us),
                ..before
            }),
        },
        BucketOp::Append {
            earliest_us,
            latest_us,
            len_us,
            ..
        } => match before.next_us {
            Some(next) if (earliest_us..=latest_us).contains(&next) => Ok(BucketItem {
                next_us: Some(next + len_us),
                ..before
            }),
            _ => Err(refused),
        },
        BucketOp::Repair {
            seen_us,
            start_us,
            len_us,
            ..
        } => match before.next_us {
            Some(next) if next == seen_us => Ok(BucketItem {
                next_us: Some(start_us + len_us),
                ..before
            }),
            _ => Err(refused),
        },
        BucketOp::Cut { cut, .. } => match before.cut {
            Some(last) if last.at_us.saturating_add(Aimd::GAP_US) > cut.at_us => Err(refused),
            _ => Ok(BucketItem {
                cut: Some(cut),
                ..before
            }),
        },
    }
}

/// What a caller wants from the bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Want {
    /// Slots to lease (at least 1).
    pub slots: u32,
    /// One slot's length at the rate in force.
    pub slot_us: u64,
    /// How far ahead of now it may book.
    pub horizon_us: u64,
    /// The lease's expected round trip: the lease starts no earlier than now + lead.
    pub lead_us: u64,
    /// Beyond this much ahead of now, `next` is taken for a wrong clock ([`repair_after_us`]).
    pub repair_after_us: u64,
    /// The item's TTL to write (epoch seconds).
    pub expires_at: u64,
}

/// The next step towards a lease.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Send this write.
    Write(BucketOp),
    /// The timeline is booked beyond the horizon: plan again at this moment (µs since the epoch).
    WaitUntil(u64),
}

/// Chooses the write that leases `want.slots` slots from `item` as last seen, at `now_us`.
pub fn plan(item: Option<&BucketItem>, now_us: u64, want: &Want) -> Plan {
    let soon = now_us + want.lead_us;
    let len_us = u64::from(want.slots.max(1)) * want.slot_us;
    let expires_at = want.expires_at;
    match item.and_then(|item| item.next_us) {
        None => Plan::Write(BucketOp::Restart {
            start_us: soon,
            len_us,
            expires_at,
        }),
        Some(next) if next < soon => Plan::Write(BucketOp::Restart {
            start_us: soon,
            len_us,
            expires_at,
        }),
        Some(next) if next <= now_us + want.horizon_us => Plan::Write(BucketOp::Append {
            earliest_us: soon,
            latest_us: now_us + want.horizon_us,
            len_us,
            expires_at,
        }),
        Some(next) if next > now_us + want.repair_after_us => Plan::Write(BucketOp::Repair {
            seen_us: next,
            start_us: soon,
            len_us,
            expires_at,
        }),
        Some(next) => Plan::WaitUntil(next - want.horizon_us),
    }
}

/// How far ahead a queue caller may book: half a lease while its waiting records have time to
/// spare, more as they run out of it (least laxity first), up to [`URGENCY_WINDOW_US`].
///
/// `spare_us` is the least time to spare among the caller's waiting records: each one's latest
/// start, less the moment its turn would come if the caller had every turn from now on. The
/// horizon is `URGENCY_WINDOW − spare`, within `[lease / 2, URGENCY_WINDOW]`: between
/// instances competing for the next lease, the one whose records are closest to their deadline
/// can book first (it may write while the others' conditions still fail), so no instance's
/// batch starves while another's has time to spare.
pub fn batch_horizon_us(spare_us: i64, lease_us: u64) -> u64 {
    let window = URGENCY_WINDOW_US as i64;
    let relaxed = (lease_us / 2) as i64;
    (window - spare_us).clamp(relaxed, window.max(relaxed)) as u64
}

/// When a queue caller that found the timeline booked until `next_us` may write again, its
/// horizon growing as its records' time to spare shrinks (see [`batch_horizon_us`]): the
/// first moment `t` at which `next − t ≤ horizon(t)`.
pub fn batch_retry_at(next_us: u64, now_us: u64, spare_us: i64, lease_us: u64) -> u64 {
    let relaxed = lease_us / 2;
    let window = URGENCY_WINDOW_US.max(relaxed);
    // with the relaxed horizon (time to spare left), and never before the widest horizon
    let relaxed_at = next_us.saturating_sub(relaxed);
    let widest_at = next_us.saturating_sub(window);
    // the urgent horizon grows as fast as time passes: next − t = window − spare + (t − now)
    let urgent_at =
        (next_us as i128 + now_us as i128 + spare_us as i128 - window as i128 + 1).div_euclid(2);
    let urgent_at = urgent_at.clamp(0, u64::MAX as i128) as u64;
    urgent_at.min(relaxed_at).max(widest_at).max(now_us)
}

/// The moment beyond which `next` cannot be a legitimate booking by any correct clock: the
/// interactive horizon, the longest lease any instance may append (its slots at the slowest
/// rate AIMD allows), and the clock skew tolerated.
pub fn repair_after_us(lease_us: u64, full_slot_us: u64) -> u64 {
    let longest = (lease_us.max(full_slot_us) as f64 / Aimd::MIN_FACTOR).ceil() as u64;
    INTERACTIVE_HORIZON_US + longest + MAX_SKEW_US
}

/// The item that holds the fleet's borrow window for the bucket `pk` (see the module's doc):
/// `<pk>#borrow`, written only with `Restart`.
pub fn borrow_pk(pk: &str) -> String {
    format!("{pk}#borrow")
}

/// The end of the borrow window of an interactive caller that borrows at `soon`, the booking
/// last seen ending at `next_seen`: the booking as seen, plus one lease that other instances may
/// append before the caller's write lands. The caller's append is conditional on the booking
/// ending by then, so its repayment falls inside its window.
pub fn borrow_end(next_seen: Option<u64>, soon_us: u64, lease_us: u64) -> u64 {
    next_seen.unwrap_or(0).max(soon_us) + lease_us
}

/// When the borrowed call goes: at once (`now_us`, its writes back), never before its window
/// opens (`soon_us`, the window's start) and never after the slot it borrowed (`booked_us`, its
/// repayment).
pub fn borrowed_slot(soon_us: u64, booked_us: u64, now_us: u64) -> u64 {
    now_us.min(booked_us).max(soon_us)
}

/// Slots leased by one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The first slot, µs since the epoch.
    pub start_us: u64,
    /// The spacing of the slots.
    pub slot_us: u64,
    /// How many.
    pub slots: u32,
}

impl Lease {
    /// The longest lease a caller may ask for: 250 ms of the rate.
    pub const MAX_US: u64 = 250_000;
    /// The shortest: 100 ms.
    pub const MIN_US: u64 = 100_000;

    /// The lease a successful `op` gave, the item being `after` the write.
    pub fn granted(op: &BucketOp, after: &BucketItem, slot_us: u64) -> Option<Lease> {
        let slots = |len_us: u64| (len_us / slot_us.max(1)) as u32;
        match *op {
            BucketOp::Restart {
                start_us, len_us, ..
            }
            | BucketOp::Repair {
                start_us, len_us, ..
            } => Some(Lease {
                start_us,
                slot_us,
                slots: slots(len_us),
            }),
            BucketOp::Append { len_us, .. } => Some(Lease {
                start_us: after.next_us?.checked_sub(len_us)?,
                slot_us,
                slots: slots(len_us),
            }),
            BucketOp::Cut { .. } => None,
        }
    }

    /// The start of each slot.
    pub fn slot_times(&self) -> impl Iterator<Item = u64> + '_ {
        (0..u64::from(self.slots)).map(|i| self.start_us + i * self.slot_us)
    }

    /// Where its first slot ends: a borrowed call's window must last until then (that slot
    /// repays it).
    pub fn first_slot_end_us(&self) -> u64 {
        self.start_us + self.slot_us
    }

    /// Where the lease ends.
    pub fn end_us(&self) -> u64 {
        self.start_us + u64::from(self.slots) * self.slot_us
    }
}

/// One slot's length at `rate` turns a second: `1.02 / rate` seconds, rounded up (never faster).
/// A rate that is not a positive number is one turn a day.
pub fn slot_us(rate: f64) -> u64 {
    const DAY_US: u64 = 86_400_000_000;
    if rate.is_nan() || rate <= 0.0 || rate.is_infinite() {
        return DAY_US;
    }
    ((SPACING * SECOND_US / rate).ceil() as u64).clamp(1, DAY_US)
}

/// How many slots fit in a lease of `lease_us` (at least one).
pub fn slots_per_lease(lease_us: u64, slot_us: u64) -> u32 {
    (lease_us / slot_us.max(1)).clamp(1, u64::from(u32::MAX)) as u32
}

/// The earliest moment the `ahead`-th turn from now can come, when the timeline is free from
/// `free_us` on and turns come `slot_us` apart: the projection of a turn that has not been
/// leased yet.
pub fn projected_turn(free_us: u64, now_us: u64, ahead: u32, slot_us: u64) -> u64 {
    free_us.max(now_us) + u64::from(ahead) * slot_us
}

/// Additive increase, multiplicative decrease of the share of the quota in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd;

impl Aimd {
    /// A throttle multiplies the share by this.
    pub const DECREASE: f64 = 0.7;
    /// The share grows back by this much of the quota each second.
    pub const INCREASE_PER_S: f64 = 0.05;
    /// The share never falls below this.
    pub const MIN_FACTOR: f64 = 0.1;
    /// At most one cut in this long: the throttles of calls sent before a cut say nothing of it.
    pub const GAP_US: u64 = 1_000_000;

    /// The share of the quota in force at `now_us` after `cut` (1 without one).
    pub fn factor(cut: Option<&Cut>, now_us: u64) -> f64 {
        match cut {
            None => 1.0,
            Some(cut) => {
                let since = now_us.saturating_sub(cut.at_us) as f64 / SECOND_US;
                (cut.factor + since * Aimd::INCREASE_PER_S).clamp(Aimd::MIN_FACTOR, 1.0)
            }
        }
    }

    /// The cut a throttle at `now_us` makes after `last`, or `None` inside the gap of the last.
    pub fn cut(last: Option<&Cut>, now_us: u64) -> Option<Cut> {
        if let Some(last) = last
            && last.at_us.saturating_add(Aimd::GAP_US) > now_us
        {
            return None;
        }
        Some(Cut {
            factor: (Aimd::factor(last, now_us) * Aimd::DECREASE).max(Aimd::MIN_FACTOR),
            at_us: now_us,
        })
    }

    /// The lower of two cuts' shares at `now_us` (this instance's and the fleet's).
    pub fn merged(a: Option<&Cut>, b: Option<&Cut>, now_us: u64) -> f64 {
        Aimd::factor(a, now_us).min(Aimd::factor(b, now_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;
    const S: u64 = 1_000_000;
    /// 20 calls a second: a slot of 51 ms.
    const SLOT: u64 = 51_000;
    const T0: u64 = 1_700_000_000 * S;

    fn want(slots: u32, horizon_us: u64) -> Want {
        Want {
            slots,
            slot_us: SLOT,
            horizon_us,
            lead_us: 0,
            repair_after_us: repair_after_us(200 * MS, SLOT),
            expires_at: 0,
        }
    }

    /// Plans and writes until a lease is granted (as an instance does), at `now`.
    fn lease(item: &mut Option<BucketItem>, now: u64, want: &Want) -> Result<Lease, u64> {
        for _ in 0..4 {
            match plan(item.as_ref(), now, want) {
                Plan::WaitUntil(at) => return Err(at),
                Plan::Write(op) => match apply(&op, item.as_ref()) {
                    Ok(after) => {
                        *item = Some(after);
                        return Ok(Lease::granted(&op, &after, want.slot_us).expect("a lease"));
                    }
                    Err(refused) => *item = refused.item,
                },
            }
        }
        panic!("no lease after four writes")
    }

    #[test]
    fn slots_are_the_rate_with_two_percent_slack_rounded_towards_slower() {
        assert_eq!(slot_us(20.0), 51_000);
        assert_eq!(slot_us(30.0), 34_000);
        assert_eq!(slot_us(3.0), 340_000);
        // 1.02e6 / 6 = 170000 exactly; 1.02e6 / 9 = 113333.33 → rounded up
        assert_eq!(slot_us(6.0), 170_000);
        assert_eq!(slot_us(9.0), 113_334);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(slot_us(bad), 86_400_000_000, "{bad}");
        }
        assert_eq!(slots_per_lease(200 * MS, SLOT), 3);
        assert_eq!(slots_per_lease(200 * MS, slot_us(0.5)), 1, "at least one");
    }

    #[test]
    fn an_idle_bucket_restarts_at_now_and_a_busy_one_appends() {
        let mut item = None;
        let first = lease(&mut item, T0, &want(3, 100 * MS)).unwrap();
        assert_eq!(
            first,
            Lease {
                start_us: T0,
                slot_us: SLOT,
                slots: 3
            }
        );
        assert_eq!(item.unwrap().next_us, Some(T0 + 3 * SLOT));
        // 60 ms later, the bucket is booked 97.5 ms ahead: within a 100 ms horizon, append
        let second = lease(&mut item, T0 + 60 * MS, &want(2, 100 * MS)).unwrap();
        assert_eq!(second.start_us, first.end_us(), "no gap, no overlap");
        assert_eq!(item.unwrap().next_us, Some(T0 + 5 * SLOT));
        // Long after, nothing carries over from the idle spell: a restart at now
        let later = T0 + 10 * S;
        assert_eq!(
            lease(&mut item, later, &want(1, 100 * MS))
                .unwrap()
                .start_us,
            later
        );
    }

    #[test]
    fn beyond_the_horizon_a_caller_waits_until_the_booking_is_within_it() {
        let mut item = Some(BucketItem {
            next_us: Some(T0 + 400 * MS),
            cut: None,
        });
        assert_eq!(lease(&mut item, T0, &want(1, 100 * MS)), Err(T0 + 300 * MS));
        // an interactive caller's horizon covers it: it appends behind the queue's booking
        let interactive = lease(&mut item, T0, &want(1, INTERACTIVE_HORIZON_US)).unwrap();
        assert_eq!(interactive.start_us, T0 + 400 * MS);
    }

    #[test]
    fn a_lease_starts_after_its_round_trip_and_the_bucket_is_never_restarted_under_a_booking() {
        let mut w = want(2, 100 * MS);
        w.lead_us = 10 * MS;
        let mut item = None;
        assert_eq!(lease(&mut item, T0, &w).unwrap().start_us, T0 + 10 * MS);
        // next is 5 ms from now: before `soon`, so the caller restarts (5 ms of timeline unused)
        let now = T0 + 10 * MS + 2 * SLOT - 5 * MS;
        let restart = lease(&mut item, now, &w).unwrap();
        assert_eq!(restart.start_us, now + 10 * MS);
        // A restart planned from a stale view fails on the booking that is there, and the
        // caller appends behind it instead.
        let stale = None;
        let Plan::Write(op) = plan(stale.as_ref(), now, &w) else {
            panic!("a write")
        };
        assert!(matches!(op, BucketOp::Restart { .. }));
        let refused = apply(&op, item.as_ref()).unwrap_err();
        assert_eq!(refused.item, item);
    }

    /// One instance's clock: `offset` from the true time.
    struct Instance {
        offset: i64,
        calls: Vec<u64>,
    }

    /// Instances take turns asking for leases (each as busy as can be) on one bucket for
    /// `secs` true seconds; every slot is used at its time on the instance's own clock. Returns
    /// each instance's calls in true time.
    fn run_fleet(offsets: &[i64], secs: u64, lease_us: u64, step_us: u64) -> Vec<Instance> {
        let mut fleet: Vec<Instance> = offsets
            .iter()
            .map(|&offset| Instance {
                offset,
                calls: Vec::new(),
            })
            .collect();
        let mut item = None;
        let mut wake = vec![T0; fleet.len()];
        let mut t = T0;
        while t < T0 + secs * S {
            for (i, instance) in fleet.iter_mut().enumerate() {
                if t < wake[i] {
                    continue;
                }
                let own_now = (t as i64 + instance.offset) as u64;
                let w = want(slots_per_lease(lease_us, SLOT), lease_us / 2);
                match lease(&mut item, own_now, &w) {
                    Ok(lease) => {
                        for slot in lease.slot_times() {
                            instance.calls.push((slot as i64 - instance.offset) as u64);
                        }
                        // asks again once the lease is within half a lease of its end
                        wake[i] = (lease.end_us() as i64 - instance.offset) as u64 - lease_us / 2;
                    }
                    Err(at) => wake[i] = (at as i64 - instance.offset) as u64,
                }
            }
            t += step_us;
        }
        fleet
    }

    fn most_in_any_second(calls: &[u64]) -> usize {
        let mut calls = calls.to_vec();
        calls.sort_unstable();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..calls.len() {
            while calls[hi] - calls[lo] >= S {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn the_fleet_stays_within_the_quota_whatever_the_instance_count() {
        for instances in [1, 2, 5, 8, 40] {
            let fleet = run_fleet(&vec![0; instances], 20, 200 * MS, MS);
            let all: Vec<u64> = fleet.iter().flat_map(|i| i.calls.clone()).collect();
            // 20 a second with 2% slack: 19.6 turns a second, and the timeline is used
            assert!(
                most_in_any_second(&all) <= 20,
                "{instances}: over the quota"
            );
            let per_second = all.len() as f64 / 20.0;
            assert!(
                per_second > 18.5,
                "{instances} instances used {per_second}/s of 19.6"
            );
            // no two calls closer than a slot
            let mut sorted = all.clone();
            sorted.sort_unstable();
            assert!(
                sorted.windows(2).all(|w| w[1] - w[0] >= SLOT),
                "{instances}"
            );
        }
    }

    #[test]
    fn one_busy_instance_can_use_all_of_it() {
        let fleet = run_fleet(&[0], 10, 200 * MS, MS);
        // 10 s at 19.6 a second
        assert!(fleet[0].calls.len() >= 189, "{}", fleet[0].calls.len());
    }

    #[test]
    fn clock_skew_between_instances_moves_lease_edges_by_at_most_the_skew() {
        // Two instances 20 ms apart (far more than Lambda's clocks): lease edges may come
        // closer than a slot by the skew, and the slack keeps every second within the quota.
        let fleet = run_fleet(&[10 * MS as i64, -10 * MS as i64], 20, 200 * MS, MS);
        let mut all: Vec<u64> = fleet.iter().flat_map(|i| i.calls.clone()).collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] >= SLOT - 20 * MS));
        assert!(most_in_any_second(&all) <= 20);
        assert!(all.len() as f64 / 20.0 > 18.5, "the timeline is still used");
    }

    #[test]
    fn a_clock_far_ahead_does_not_stall_the_fleet() {
        // Given a writer one hour ahead, who restarts the bucket an hour in the future
        let hour = 3_600 * S;
        let mut item = None;
        let ahead = lease(&mut item, T0 + hour, &want(3, 100 * MS)).unwrap();
        assert_eq!(ahead.start_us, T0 + hour);
        // When a correct instance asks, it takes the timeline back rather than waiting an hour
        let w = want(3, 100 * MS);
        let Plan::Write(op @ BucketOp::Repair { .. }) = plan(item.as_ref(), T0, &w) else {
            panic!("a repair")
        };
        let after = apply(&op, item.as_ref()).unwrap();
        assert_eq!(
            Lease::granted(&op, &after, SLOT).unwrap().start_us,
            T0,
            "no wait"
        );
        // A repair planned on a view that changed meanwhile is refused, like any other write.
        assert!(apply(&op, Some(&after)).is_err());
    }

    #[test]
    fn a_booking_within_legitimate_reach_is_waited_for_not_repaired() {
        // An interactive caller may book up to 5 s ahead: the others wait for it.
        let far = T0 + INTERACTIVE_HORIZON_US + 200 * MS;
        let item = Some(BucketItem {
            next_us: Some(far),
            cut: None,
        });
        assert_eq!(
            plan(item.as_ref(), T0, &want(1, 100 * MS)),
            Plan::WaitUntil(far - 100 * MS)
        );
        // the threshold covers the slowest slots AIMD allows
        assert!(repair_after_us(200 * MS, slot_us(0.1)) > 100 * S);
    }

    #[test]
    fn a_crashed_lease_holder_costs_at_most_its_lease() {
        // Given an instance that leased 200 ms and died before using it
        let mut item = None;
        let lost = lease(&mut item, T0, &want(3, 100 * MS)).unwrap();
        // When another asks right away, it is booked behind the dead lease...
        let next = lease(&mut item, T0 + MS, &want(3, 200 * MS)).unwrap();
        assert_eq!(next.start_us, lost.end_us());
        // ...and nothing of it is held any longer than that: after its end, a restart at now.
        let after = lease(&mut item, next.end_us() + MS, &want(1, 100 * MS)).unwrap();
        assert_eq!(after.start_us, next.end_us() + MS);
    }

    #[test]
    fn leases_expire_unused_slots_simply_pass() {
        // A lease whose time is past leaves nothing: the next write restarts at now.
        let item = Some(BucketItem {
            next_us: Some(T0 - S),
            cut: None,
        });
        assert!(matches!(
            plan(item.as_ref(), T0, &want(1, 100 * MS)),
            Plan::Write(BucketOp::Restart { start_us: T0, .. })
        ));
    }

    #[test]
    fn a_throttle_cuts_the_share_at_most_once_a_second_and_it_grows_back() {
        let first = Aimd::cut(None, T0).unwrap();
        assert_eq!(first.factor, 0.7);
        // throttles of calls already in flight do not cut again
        assert_eq!(Aimd::cut(Some(&first), T0 + 500 * MS), None);
        // a second later, the cut is from what has grown back meanwhile
        let second = Aimd::cut(Some(&first), T0 + S).unwrap();
        assert!((second.factor - 0.75 * 0.7).abs() < 1e-9, "{second:?}");
        // never below the floor
        let mut cut = second;
        for k in 2..40 {
            cut = Aimd::cut(Some(&cut), T0 + k * S).unwrap_or(cut);
        }
        assert!(cut.factor >= Aimd::MIN_FACTOR);
        // and back to the whole quota within (1 - 0.1) / 0.05 = 18 s
        assert_eq!(Aimd::factor(Some(&cut), cut.at_us + 18 * S), 1.0);
        assert!(Aimd::factor(Some(&cut), cut.at_us + 5 * S) < 1.0);
        // the fleet's cut and the instance's own: the lower one holds
        assert_eq!(Aimd::merged(None, Some(&first), T0), 0.7);
    }

    #[test]
    fn the_fleet_cut_is_one_conditional_write_that_keeps_the_timeline() {
        let item = BucketItem {
            next_us: Some(T0 + SLOT),
            cut: None,
        };
        let cut = Aimd::cut(None, T0).unwrap();
        let after = apply(&BucketOp::Cut { cut, expires_at: 0 }, Some(&item)).unwrap();
        assert_eq!(after.next_us, item.next_us);
        assert_eq!(after.cut, Some(cut));
        // a second instance throttled at the same moment does not cut again
        let again = Aimd::cut(None, T0 + MS).unwrap();
        assert!(
            apply(
                &BucketOp::Cut {
                    cut: again,
                    expires_at: 0
                },
                Some(&after)
            )
            .is_err()
        );
        // a timeline write keeps the cut
        let w = want(1, 100 * MS);
        let Plan::Write(op) = plan(Some(&after), T0, &w) else {
            panic!()
        };
        assert_eq!(apply(&op, Some(&after)).unwrap().cut, Some(cut));
    }

    #[test]
    fn queue_records_at_risk_book_further_ahead_the_least_time_to_spare_the_furthest() {
        let lease = 200 * MS;
        // plenty to spare: half a lease
        assert_eq!(batch_horizon_us(3 * S as i64, lease), 100 * MS);
        assert_eq!(
            batch_horizon_us(URGENCY_WINDOW_US as i64 - 50_000, lease),
            100 * MS
        );
        // less than the window to spare: the window less what is left
        assert_eq!(batch_horizon_us(400 * MS as i64, lease), 600 * MS);
        // none left (or behind already): the whole window, never more
        assert_eq!(batch_horizon_us(0, lease), URGENCY_WINDOW_US);
        assert_eq!(batch_horizon_us(-(5 * S as i64), lease), URGENCY_WINDOW_US);
    }

    #[test]
    fn a_waiting_queue_caller_writes_again_when_its_growing_horizon_reaches_the_booking() {
        let lease = 200 * MS;
        let next = T0 + 2 * S;
        // plenty to spare: when the booking is within half a lease
        assert_eq!(
            batch_retry_at(next, T0, 10 * S as i64, lease),
            next - 100 * MS
        );
        // 1.2 s to spare at T0: at t, spare = 1.2 s - (t - T0) and the horizon 1 s - spare; the
        // booking 2 s - (t - T0) away is within it when t - T0 = 1.1 s
        let at = batch_retry_at(next, T0, 1_200 * MS as i64, lease);
        assert_eq!(at, T0 + 1_100 * MS);
        let spare_then = 1_200 * MS as i64 - (at - T0) as i64;
        assert_eq!(next - at, batch_horizon_us(spare_then, lease));
        // already urgent: at once if within the window, else when the booking is 1 s ahead
        assert_eq!(batch_retry_at(T0 + 500 * MS, T0, 0, lease), T0);
        assert_eq!(
            batch_retry_at(T0 + 3 * S, T0, -(S as i64), lease),
            T0 + 2 * S
        );
    }

    #[test]
    fn under_contention_the_instance_closest_to_its_deadline_gets_the_next_lease() {
        // Given the timeline booked 400 ms ahead, and two instances waiting: A with 2 s to
        // spare, B with 500 ms
        let item = Some(BucketItem {
            next_us: Some(T0 + 400 * MS),
            cut: None,
        });
        let w = |spare: i64| want(3, batch_horizon_us(spare, 200 * MS));
        // Then A waits, and B (the least time to spare) books now
        assert!(matches!(
            plan(item.as_ref(), T0, &w(2 * S as i64)),
            Plan::WaitUntil(_)
        ));
        assert!(matches!(
            plan(item.as_ref(), T0, &w(500 * MS as i64)),
            Plan::Write(BucketOp::Append { .. })
        ));
    }

    #[test]
    fn a_borrowed_call_goes_between_its_lead_and_the_slot_that_repays_it() {
        // the window: from the call to the booking as seen, plus a lease others may append
        assert_eq!(
            borrow_end(Some(T0 + 200 * MS), T0 + 5 * MS, 200 * MS),
            T0 + 400 * MS
        );
        assert_eq!(borrow_end(None, T0 + 5 * MS, 200 * MS), T0 + 205 * MS);
        // the call: at its lead, at once after a slow write, never after the slot it repays
        assert_eq!(borrowed_slot(T0 + 5 * MS, T0 + 200 * MS, T0), T0 + 5 * MS);
        assert_eq!(
            borrowed_slot(T0 + 5 * MS, T0 + 200 * MS, T0 + 50 * MS),
            T0 + 50 * MS
        );
        assert_eq!(
            borrowed_slot(T0 + 5 * MS, T0 + 200 * MS, T0 + 300 * MS),
            T0 + 200 * MS
        );
        assert_eq!(
            borrow_pk("bucket#us-west-2#UserRead"),
            "bucket#us-west-2#UserRead#borrow"
        );
    }

    #[test]
    fn a_projected_turn_counts_the_turns_ahead_from_the_free_moment() {
        assert_eq!(projected_turn(T0 + S, T0, 0, SLOT), T0 + S);
        assert_eq!(projected_turn(T0 - S, T0, 2, SLOT), T0 + 2 * SLOT);
    }
}
