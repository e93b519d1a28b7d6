//! The pacers under tokio's paused clock: time is exact, and the fleet's bucket is a
//! [`MemoryBuckets`] table shared by several `Limiters` (each one an instance).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::aws::bucket::MemoryBuckets;

const REGION: &str = "us-west-2";
const RESET: Category = Category::UserAccountRecovery;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn static_rates(rate: f64) -> Rates {
    Rates {
        read: Some(rate),
        resource_read: Some(rate),
        account_recovery: Some(rate),
        user_creation: Some(rate),
        user_update: Some(rate),
    }
}

/// An instance pacing on `table` at a quota of `quota`, with `static_rate` as its fallback.
fn instance(table: &Arc<MemoryBuckets>, quota: f64, static_rate: f64) -> Arc<Limiters> {
    Arc::new(Limiters::shared(
        static_rates(static_rate),
        SharedPacing {
            store: Arc::clone(table) as Arc<dyn BucketStore>,
            quotas: Quotas {
                read: quota,
                resource_read: quota,
                account_recovery: quota,
                user_creation: quota,
                user_update: quota,
            },
            lease: ms(200),
            timeout: ms(300),
        },
    ))
}

/// The most `times` in any one-second window.
fn most_in_any_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= Duration::from_secs(1) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// `tasks` concurrent callers on `limiters`, each taking `turns` turns; the moment of every turn.
async fn busy(
    limiters: Arc<Limiters>,
    tasks: usize,
    turns: usize,
    priority: Priority,
) -> Vec<Instant> {
    let far = Instant::now() + Duration::from_secs(3600);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let limiters = Arc::clone(&limiters);
        handles.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for _ in 0..turns {
                limiters
                    .acquire(REGION, RESET, priority, far)
                    .await
                    .expect("a turn");
                times.push(Instant::now());
            }
            times
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("no panic"));
    }
    all
}

/// Two instances draining the queue as fast as a shared quota of 20 a second allows, a second
/// into their drain; await the handles to let them finish.
async fn draining_fleet(table: &Arc<MemoryBuckets>) -> Vec<tokio::task::JoinHandle<Vec<Instant>>> {
    let drains = (0..2)
        .map(|_| tokio::spawn(busy(instance(table, 20.0, 4.0), 10, 30, Priority::Batch)))
        .collect();
    tokio::time::sleep(ms(1_000)).await;
    drains
}

/// Waits for the queue instances of [`draining_fleet`] to drain.
async fn drained(drains: Vec<tokio::task::JoinHandle<Vec<Instant>>>) {
    for drain in drains {
        drain.await.unwrap();
    }
}

/// How long each of three HTTP calls on `http`, 500 ms apart, waits for its turn after one
/// call whose writes took `slow` (the table's round trip 5 ms again after it).
async fn waits_after_a_slow_write(
    table: &MemoryBuckets,
    http: &Limiters,
    slow: Duration,
) -> Vec<Duration> {
    table.set_latency(slow);
    http_wait(http).await;
    table.set_latency(ms(5));
    let mut waits = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(ms(500)).await;
        waits.push(http_wait(http).await);
    }
    waits
}

/// How long one HTTP call on `limiters` waits for its turn.
async fn http_wait(limiters: &Limiters) -> Duration {
    let asked = Instant::now();
    limiters
        .acquire(
            REGION,
            RESET,
            Priority::Interactive,
            asked + Duration::from_secs(5),
        )
        .await
        .unwrap();
    Instant::now() - asked
}

// ---- the static share: each instance on its own --------------------------------------------

#[tokio::test(start_paused = true)]
async fn turns_are_spaced_and_a_late_turn_is_refused_without_reserving() {
    let limiters = Limiters::new(static_rates(10.0));
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(10);
    for _ in 0..3 {
        limiters
            .acquire(REGION, RESET, Priority::Batch, far)
            .await
            .unwrap();
    }
    // Three turns: at 0, 102 and 204 ms.
    assert_eq!(Instant::now() - t0, ms(204));
    // The next turn is at 306 ms: refused when the latest start is earlier...
    assert_eq!(
        limiters
            .acquire(REGION, RESET, Priority::Batch, t0 + ms(300))
            .await,
        Err(TooLate)
    );
    // ...and the refusal took no turn.
    limiters
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    assert_eq!(Instant::now() - t0, ms(306));
}

#[tokio::test(start_paused = true)]
async fn a_vanishing_or_invalid_rate_is_one_call_a_day_not_a_panic() {
    for rate in [1e-20, 0.0, -1.0, f64::NAN, f64::MIN_POSITIVE] {
        let limiters = Limiters::new(static_rates(rate));
        let t0 = Instant::now();
        limiters
            .acquire(REGION, RESET, Priority::Batch, t0)
            .await
            .unwrap();
        assert_eq!(
            limiters
                .acquire(
                    REGION,
                    RESET,
                    Priority::Batch,
                    t0 + Duration::from_secs(3600)
                )
                .await,
            Err(TooLate),
            "{rate}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn regions_and_categories_have_their_own_limiters() {
    let limiters = Limiters::new(static_rates(1.0));
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(10);
    let take = |region: &'static str, category| {
        let limiters = &limiters;
        async move {
            limiters
                .acquire(region, category, Priority::Batch, far)
                .await
                .unwrap()
        }
    };
    take("us-west-2", Category::UserRead).await;
    take("eu-west-1", Category::UserRead).await;
    take("us-west-2", Category::UserAccountRecovery).await;
    assert_eq!(Instant::now(), t0, "no one waited");
    take("us-west-2", Category::UserRead).await;
    assert_eq!(Instant::now() - t0, ms(1020));
}

#[tokio::test(start_paused = true)]
async fn an_unlimited_category_is_never_paced() {
    let limiters = Limiters::new(Rates::OFF);
    let t0 = Instant::now();
    for _ in 0..100 {
        limiters
            .acquire(REGION, RESET, Priority::Batch, t0)
            .await
            .unwrap();
    }
    assert_eq!(Instant::now(), t0);
    assert!(limiters.intend(REGION, RESET, t0).is_ok());
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_of_the_static_share_keep_its_spacing_in_arrival_order() {
    let limiters = Arc::new(Limiters::new(static_rates(20.0)));
    let t0 = Instant::now();
    let times = busy(Arc::clone(&limiters), 5, 8, Priority::Batch).await;
    assert_eq!(times.len(), 40);
    assert!(most_in_any_second(&times) <= 20);
    // 40 turns 51 ms apart (tokio's timers have whole milliseconds: turns come at most 1 ms
    // late, never early)
    let took = Instant::now() - t0;
    let ideal = Duration::from_micros(39 * 51_000);
    assert!(took >= ideal && took <= ideal + ms(1), "{took:?}");
}

// ---- the fleet's bucket --------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn one_busy_instance_uses_the_whole_quota_not_its_static_share() {
    // Given a quota of 20 a second shared by at most 5 instances (a static share of 4)
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(5));
    let alone = instance(&table, 20.0, 4.0);
    let t0 = Instant::now();
    // When one instance makes 40 calls, 10 at a time
    let times = busy(alone, 10, 4, Priority::Batch).await;
    // Then they take 40 turns of the whole quota (2.04 s), not of a fifth of it (10.2 s)
    let took = Instant::now() - t0;
    assert!(took < ms(2_150), "{took:?}");
    assert!(took >= Duration::from_micros(39 * 51_000), "{took:?}");
    assert!(most_in_any_second(&times) <= 20);
    // And the table saw a few writes a second (leases of 200 ms), not one per call
    let per_second = table.writes() as f64 / took.as_secs_f64();
    assert!(per_second <= 12.0, "{per_second} writes/s");
}

#[tokio::test(start_paused = true)]
async fn the_fleet_stays_within_the_quota_whatever_the_instance_count() {
    for instances in [2usize, 5, 8] {
        // Given instances sharing one bucket of 20 a second, each with 3 busy callers
        let table = Arc::new(MemoryBuckets::new());
        table.set_latency(ms(5));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..instances)
            .map(|_| tokio::spawn(busy(instance(&table, 20.0, 4.0), 3, 10, Priority::Batch)))
            .collect();
        let mut all = Vec::new();
        let mut each = Vec::new();
        for handle in handles {
            let times = handle.await.unwrap();
            each.push(times.len());
            all.extend(times);
        }
        let took = Instant::now() - t0;
        // Then no second saw more than the quota, and the quota was used
        assert!(most_in_any_second(&all) <= 20, "{instances}");
        let calls = (instances * 30) as f64;
        let ideal = calls / 20.0;
        assert!(
            took.as_secs_f64() <= ideal * 1.10,
            "{instances}: {took:?} for {calls} calls"
        );
        assert!(each.iter().all(|n| *n == 30));
        // a few writes a second per instance
        let per_instance = table.writes() as f64 / took.as_secs_f64() / instances as f64;
        assert!(
            per_instance < 12.0,
            "{instances}: {per_instance} writes/s each"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_table_each_instance_falls_back_to_its_static_share_never_unlimited() {
    // Given the table unavailable
    let table = Arc::new(MemoryBuckets::new());
    table.set_unavailable(true);
    let limiters = instance(&table, 20.0, 4.0);
    let t0 = Instant::now();
    let times = busy(Arc::clone(&limiters), 4, 2, Priority::Batch).await;
    // Then the first lease times out (300 ms) and 8 turns come at 4 a second: 255 ms apart
    // (give or take tokio's whole milliseconds)
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let gaps: Vec<Duration> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|gap| *gap >= ms(254)), "{gaps:?}");
    let took = Instant::now() - t0;
    let ideal = ms(300) + Duration::from_micros(7 * 255_000);
    assert!(took >= ideal && took <= ideal + ms(1), "{took:?}");
    // And once the table is back (after the fallback period), the whole quota again
    table.set_unavailable(false);
    tokio::time::sleep(FALLBACK).await;
    let t1 = Instant::now();
    busy(limiters, 4, 5, Priority::Batch).await;
    assert!(Instant::now() - t1 < ms(1_200), "{:?}", Instant::now() - t1);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_lease_holder_costs_at_most_its_lease() {
    // Given an instance that leased the next 200 ms and died
    let table = Arc::new(MemoryBuckets::new());
    let dead = instance(&table, 20.0, 4.0);
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(10);
    dead.acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    let leased_until = table
        .item(&bucket_pk(REGION, RESET))
        .unwrap()
        .next_us
        .unwrap();
    drop(dead);
    // When another asks, its turn comes when the dead lease ends, not later
    let alive = instance(&table, 20.0, 4.0);
    alive
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    let at = now_us();
    assert!(
        at >= leased_until && at <= leased_until + 1_000,
        "{at} {leased_until}"
    );
    assert!(Instant::now() - t0 <= ms(200));
}

#[tokio::test(start_paused = true)]
async fn a_turn_past_the_latest_start_is_refused_at_once_when_the_bucket_is_booked_past_it() {
    let table = Arc::new(MemoryBuckets::new());
    let limiters = instance(&table, 20.0, 4.0);
    // Given the bucket booked for the next 3 s by another interactive instance
    table.put(
        &bucket_pk(REGION, RESET),
        BucketItem {
            next_us: Some(now_us() + 3_000_000),
            cut: None,
        },
    );
    let t0 = Instant::now();
    // Then a call that must start within 1 s gets no turn, at once, and without a write
    assert_eq!(
        limiters
            .acquire(REGION, RESET, Priority::Interactive, t0 + ms(1_000))
            .await
            .map_err(|_| table.writes()),
        Err(1),
        "one write to learn the booking"
    );
    assert_eq!(Instant::now(), t0 + ms(0));
    assert_eq!(
        limiters.intend(REGION, RESET, t0 + ms(1_000)).err(),
        Some(TooLate),
        "and a record that would need a turn is told so before its lookup"
    );
}

// ---- interactive first ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_waiting_http_call_takes_the_next_turn_before_queued_records() {
    // Given 20 queue records waiting at 10 turns a second (static share)
    let limiters = Arc::new(Limiters::new(static_rates(10.0)));
    let batch = tokio::spawn(busy(Arc::clone(&limiters), 20, 1, Priority::Batch));
    tokio::time::sleep(ms(300)).await;
    // When an HTTP call arrives
    let arrived = Instant::now();
    limiters
        .acquire(
            REGION,
            RESET,
            Priority::Interactive,
            arrived + Duration::from_secs(5),
        )
        .await
        .unwrap();
    // Then its turn is the next free one (queue records take theirs at most half a lease,
    // 100 ms, ahead; turns are 105 ms apart), not the 18th
    assert!(
        Instant::now() - arrived <= ms(205),
        "{:?}",
        Instant::now() - arrived
    );
    batch.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn behind_a_fleet_busy_with_queue_records_an_http_call_waits_at_most_one_and_a_half_leases() {
    // Given two instances draining the queue as fast as the shared quota allows
    let table = Arc::new(MemoryBuckets::new());
    let rtt = ms(5);
    table.set_latency(rtt);
    let drains = draining_fleet(&table).await;
    // When a third instance gets HTTP calls, one at a time
    let http = instance(&table, 20.0, 4.0);
    let mut waits = Vec::new();
    for _ in 0..10 {
        waits.push(http_wait(&http).await);
        tokio::time::sleep(ms(237)).await;
    }
    // Then each waits at most 1.5 leases (300 ms) plus its lease's round trip
    let worst = waits.iter().max().copied().unwrap();
    assert!(worst <= ms(300) + rtt + ms(1), "{waits:?}");
    drained(drains).await;
}

#[tokio::test(start_paused = true)]
async fn behind_a_fleet_busy_with_queue_records_an_http_call_borrows_a_turn_within_two_round_trips()
{
    // Given two instances draining the queue as fast as the shared quota allows (the timeline
    // booked 100 to 260 ms ahead)
    let table = Arc::new(MemoryBuckets::new());
    let rtt = ms(5);
    table.set_latency(rtt);
    let drains = draining_fleet(&table).await;
    // When a third instance gets an HTTP call every half a second (as `make bench-drain`'s
    // probe does), each with a stale view of the bucket
    let http = instance(&table, 20.0, 4.0);
    let mut waits = Vec::new();
    for _ in 0..10 {
        waits.push(http_wait(&http).await);
        tokio::time::sleep(ms(500)).await;
    }
    // Then none waits for the queue's booking: two round trips at most (a write refused on the
    // stale view, then the append and its borrow window, side by side), as on an idle fleet
    assert!(
        waits.iter().all(|wait| *wait <= rtt * 2 + ms(1)),
        "{waits:?}"
    );
    drained(drains).await;
}

#[tokio::test(start_paused = true)]
async fn a_borrowed_turn_waits_for_its_own_writes_not_for_an_earlier_slow_one() {
    // Given two instances draining the queue, and an instance whose HTTP calls borrow turns
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(5));
    let drains = draining_fleet(&table).await;
    let http = instance(&table, 20.0, 4.0);
    http_wait(&http).await;
    tokio::time::sleep(ms(500)).await;
    // When one call's writes are slow (the table busy for a moment: its round trip 60 ms)
    let waits = waits_after_a_slow_write(&table, &http, ms(60)).await;
    // Then the calls after it, their writes quick again, wait for those writes only (two round
    // trips at most), not for a lead sized by the slow one
    assert!(waits.iter().all(|wait| *wait <= ms(11)), "{waits:?}");
    drained(drains).await;
}

#[tokio::test(start_paused = true)]
async fn a_call_behind_another_borrow_waits_for_its_window_not_for_the_booking() {
    // Given two instances draining the queue, and two instances taking HTTP calls
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(5));
    let drains = draining_fleet(&table).await;
    let (first, second) = (instance(&table, 20.0, 4.0), instance(&table, 20.0, 4.0));
    // When a call on the second comes while the first's borrow window is still open, at a
    // range of moments after the first's call
    let mut waits = Vec::new();
    for gap in (150..450).step_by(25) {
        tokio::time::sleep(ms(700)).await;
        http_wait(&first).await;
        tokio::time::sleep(ms(gap)).await;
        waits.push(http_wait(&second).await);
    }
    // Then it waits for the first's window, which ends with the first's repayment slot, and
    // borrows then: never for the whole booking behind the queue (before: up to 241 ms here,
    // its window holding a lease's room beyond the repayment and no borrowing after it)
    assert!(waits.iter().all(|wait| *wait <= ms(100)), "{waits:?}");
    drained(drains).await;
}

#[tokio::test(start_paused = true)]
async fn on_an_idle_bucket_a_call_goes_when_its_writes_are_back_not_a_slow_estimate_later() {
    // Given an instance taking HTTP calls on an idle bucket, one of whose writes was slow
    let table = Arc::new(MemoryBuckets::new());
    let http = instance(&table, 20.0, 4.0);
    // When the next calls come, the bucket idle again each time
    let waits = waits_after_a_slow_write(&table, &http, ms(130)).await;
    // Then each goes once its lease and its borrow window are written (two round trips and a
    // tick), not at a first slot the slow write's estimate put up to 130 ms ahead
    assert!(waits.iter().all(|wait| *wait <= ms(12)), "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn http_calls_borrowing_turns_leave_the_fleet_at_most_one_call_over_its_timeline() {
    // Given two instances draining the queue, and three instances flooded with HTTP calls (two
    // callers each, one call after another), all on one bucket of 20 a second
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(3));
    let t0 = Instant::now();
    let mut handles: Vec<_> = (0..2)
        .map(|_| tokio::spawn(busy(instance(&table, 20.0, 4.0), 10, 15, Priority::Batch)))
        .collect();
    handles.extend((0..3).map(|_| {
        tokio::spawn(busy(
            instance(&table, 20.0, 4.0),
            2,
            10,
            Priority::Interactive,
        ))
    }));
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    assert_eq!(all.len(), 2 * 10 * 15 + 3 * 2 * 10);
    // Then in any window the fleet made at most one call more than the timeline's slots in it
    // (51 ms apart: one borrowed call outstanding at a time), and the whole run took the
    // timeline's time: borrowed turns are repaid
    all.sort_unstable();
    let slot = Duration::from_micros(51_000);
    for window in [ms(100), ms(500), ms(1_000), ms(3_000)] {
        // (a window's calls may include one made a table round trip after its slot: the first
        // lease, made before any round trip was measured, starts at once)
        let timeline = ((window + ms(3)).as_micros() / slot.as_micros()) as usize + 1;
        let mut lo = 0;
        for hi in 0..all.len() {
            while all[hi] - all[lo] >= window {
                lo += 1;
            }
            assert!(
                hi - lo < timeline + 1,
                "{} calls in {window:?} from {:?}: the timeline holds {timeline}",
                hi - lo + 1,
                all[lo] - t0
            );
        }
    }
    assert!(most_in_any_second(&all) <= 21);
    let took = Instant::now() - t0;
    let floor = slot * (all.len() as u32 - 2);
    assert!(took >= floor, "{took:?} for {} calls", all.len());
}

// ---- throttling as feedback ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_throttle_cuts_the_rate_for_a_while_and_it_grows_back() {
    let limiters = Limiters::new(static_rates(10.0));
    let far = || Instant::now() + Duration::from_secs(60);
    let gap = async || {
        let t = Instant::now();
        limiters
            .acquire(REGION, RESET, Priority::Batch, far())
            .await
            .unwrap();
        Instant::now() - t
    };
    gap().await;
    assert_eq!(gap().await, ms(102));
    // When Cognito throttles a call
    limiters.throttled(REGION, RESET);
    // Then, after the turn already booked, turns come at 70% of the rate: 145.7 ms apart (146
    // in tokio's whole milliseconds)
    assert_eq!(limiters.factor(REGION, RESET), 0.7);
    gap().await;
    assert_eq!(gap().await, ms(146));
    // A second throttle within the second (a call sent before the cut) does not cut again
    limiters.throttled(REGION, RESET);
    assert!(limiters.factor(REGION, RESET) > 0.69);
    // And the rate grows back: 5% of it a second, the whole of it after 6 s
    tokio::time::sleep(Duration::from_secs(3)).await;
    let f = limiters.factor(REGION, RESET);
    assert!((0.85..0.9).contains(&f), "{f}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(limiters.factor(REGION, RESET), 1.0);
    gap().await;
    gap().await;
    assert_eq!(gap().await, ms(102));
}

#[tokio::test(start_paused = true)]
async fn a_throttle_seen_by_one_instance_slows_the_whole_fleet() {
    let table = Arc::new(MemoryBuckets::new());
    let a = instance(&table, 20.0, 4.0);
    let b = instance(&table, 20.0, 4.0);
    let far = Instant::now() + Duration::from_secs(60);
    a.acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    b.acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    // When A is throttled, its next lease writes the cut to the bucket
    a.throttled(REGION, RESET);
    a.acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    let cut = table.item(&bucket_pk(REGION, RESET)).unwrap().cut.unwrap();
    assert_eq!(cut.factor, 0.7);
    // Then B, at its next lease, paces at the cut rate too
    tokio::time::sleep(ms(500)).await;
    b.acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    let f = b.factor(REGION, RESET);
    assert!(f < 0.75, "{f}");
    // and both recover
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(a.factor(REGION, RESET), 1.0);
    assert_eq!(b.factor(REGION, RESET), 1.0);
}

// ---- promised turns (records that have not asked yet) --------------------------------------

#[tokio::test(start_paused = true)]
async fn a_record_whose_reset_could_not_get_a_turn_in_time_is_told_before_it_starts() {
    // Given one reset a second and 2.5 s to go
    let limiters = Limiters::new(static_rates(1.0));
    let latest = Instant::now() + ms(2_500);
    // Then three records may start (turns at 0, 1.02 and 2.04 s), and the fourth may not
    let intents: Vec<_> = (0..3)
        .map(|_| limiters.intend(REGION, RESET, latest).expect("fits"))
        .collect();
    assert_eq!(limiters.intend(REGION, RESET, latest).err(), Some(TooLate));
    // When one of them ends without a reset (refused by the policy), its place is free again
    drop(intents);
    assert!(limiters.intend(REGION, RESET, latest).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_while_leasing_leaves_the_queue_and_the_lease_to_others() {
    // Given a slow table (100 ms a write)
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(100));
    let limiters = instance(&table, 20.0, 4.0);
    let far = Instant::now() + Duration::from_secs(60);
    // When a caller gives up while its lease write is under way (its future is dropped)
    let gone = tokio::time::timeout(
        ms(10),
        limiters.acquire(REGION, RESET, Priority::Batch, far),
    )
    .await;
    assert!(gone.is_err());
    // Then the next caller is not stuck behind it: it leases, and has its turn (within two
    // round trips: the first lease of a pacer does not know the table's round trip yet, and
    // its slot has passed when the answer comes)
    let t = Instant::now();
    limiters
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    assert!(Instant::now() - t <= ms(201), "{:?}", Instant::now() - t);
}

#[tokio::test(start_paused = true)]
async fn an_instance_whose_records_run_out_of_time_gets_the_next_leases_before_one_with_time_to_spare()
 {
    // Given instance B draining with time to spare (20 callers, an hour to go)
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(ms(5));
    let relaxed = tokio::spawn(busy(instance(&table, 20.0, 4.0), 20, 3, Priority::Batch));
    tokio::time::sleep(ms(300)).await;
    // When instance A gets 10 records that must all start within 1 s (10 turns take 525 ms)
    let urgent = instance(&table, 20.0, 4.0);
    let latest = Instant::now() + ms(1_000);
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let urgent = Arc::clone(&urgent);
            tokio::spawn(
                async move { urgent.acquire(REGION, RESET, Priority::Batch, latest).await },
            )
        })
        .collect();
    // Then every one of A's records gets its turn in time (the least time to spare books
    // first), although B has twice as many callers waiting
    for handle in handles {
        assert_eq!(handle.await.unwrap(), Ok(()));
    }
    relaxed.await.unwrap();
}
