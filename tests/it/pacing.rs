//! Fleet-wide pacing through the whole handler: instances (apps) sharing the guard's table pace
//! their Cognito calls on its buckets (the in-process table evaluates the buckets' DynamoDB
//! expressions on its own, so these tests check `DynamoBucket` against `pacing::apply`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::bucket::{BucketStore, DynamoBucket};
use cognito_reset::aws::cognito::Directory;
use cognito_reset::aws::guard::Guard;
use cognito_reset::config::Pacing;
use cognito_reset::deadline::Deadline;
use cognito_reset::limiter::Category;
use cognito_reset::pipeline::App;
use cognito_reset::sources::dispatch;

use crate::cognito::{ANYONE, SlowCognito, bodies, client_over, most_in_one_second};
use crate::dynamodb::{Mode, TABLE, Table, settings};
use crate::helpers::*;

const RESET_BUCKET: &str = "bucket#us-west-2#UserAccountRecovery";

/// One instance: any queue may reset anyone, through a counting Cognito that answers at once,
/// with the guard (and the pacing buckets) in `table`.
fn instance(table: &Table, in_flight: &Arc<InFlight>, vars: &[(&str, &str)]) -> Arc<App> {
    instance_with(table, in_flight, ANYONE, vars)
}

/// [`instance`] with its own policy.
fn instance_with(
    table: &Table,
    in_flight: &Arc<InFlight>,
    policy: &str,
    vars: &[(&str, &str)],
) -> Arc<App> {
    let mut all = vec![("POLICY", policy), ("GUARD_TABLE", TABLE)];
    all.extend_from_slice(vars);
    let config = config(&all);
    let client_settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let cognito = SlowCognito {
        delay: Duration::ZERO,
        in_flight: Arc::clone(in_flight),
        only: None,
    };
    let store = DynamoBucket::new(table.client(), TABLE, Duration::from_secs(5));
    let limiters = config.limiters(Some(Arc::new(store) as Arc<dyn BucketStore>));
    let directory = Directory::sdk(
        client_over(cognito, client_settings),
        client_settings,
        config.deadline_margin,
        config.rates,
    )
    .with_limiters(limiters);
    let guard = Guard::dynamodb(table.client(), settings(300), false, config.deadline_margin);
    let policy = config.fixed_policy().expect("a fixed policy");
    Arc::new(App::new(config, directory, Some(guard), policy, None))
}

/// A quota of 10 resets a second for at most 5 instances: a static share of 2 a second.
const TEN_A_SECOND_FOR_FIVE: [(&str, &str); 3] = [
    ("COGNITO_RESET_QUOTA", "10"),
    ("MAX_INSTANCES", "5"),
    ("COGNITO_RESET_RPS", "2"),
];

fn resets(in_flight: &InFlight) -> Vec<Instant> {
    in_flight
        .calls()
        .iter()
        .filter(|c| c.operation == "AdminResetUserPassword")
        .map(|c| c.at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn with_the_guard_table_a_lone_instance_resets_at_the_whole_quota() {
    // Given the guard table and a quota of 10 resets a second for at most 5 instances
    let table = Table::new(Mode::Normal);
    let in_flight = Arc::new(InFlight::default());
    let app = instance(&table, &in_flight, &TEN_A_SECOND_FOR_FIVE);
    assert!(matches!(app.config.pacing, Pacing::Shared { .. }));
    // When one instance gets a batch of 10
    let started = Instant::now();
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(10)), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    // Then its resets are paced at the quota (105 ms apart: under 1.2 s for 10), not at its
    // static share (525 ms apart: 4.7 s)
    let times = resets(&in_flight);
    assert_eq!(times.len(), 10);
    let span = times[9] - times[0];
    assert!(span >= Duration::from_millis(900), "{span:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert!(most_in_one_second(&in_flight.calls(), "AdminResetUserPassword") <= 10);
    // And the bucket is one item in the guard table, written a few times (leases of 200 ms)
    let item = &table.items()[RESET_BUCKET];
    assert!(item.contains_key("nextUs") && item.contains_key("expiresAt"));
    // Each record's end is two updates (the key's answer, then the claim's completion); the
    // rest are the bucket's.
    let bucket_writes = table.update.num_calls() - 20;
    assert!(
        bucket_writes <= 12,
        "{bucket_writes} bucket writes for 10 resets"
    );
}

#[tokio::test(start_paused = true)]
async fn instances_sharing_the_table_stay_within_the_quota_together() {
    // Given three instances on one guard table, each with a batch of 10
    let table = Table::new(Mode::Normal);
    let in_flight = Arc::new(InFlight::default());
    let apps: Vec<_> = (0..3)
        .map(|_| instance(&table, &in_flight, &TEN_A_SECOND_FOR_FIVE))
        .collect();
    let started = Instant::now();
    let runs: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let mut event = sqs_event(QUEUE, &bodies(30));
            // each instance its own ten users and message ids
            let records = event["Records"].as_array_mut().expect("records");
            records.drain(..i * 10);
            records.truncate(10);
            let app = Arc::clone(app);
            tokio::spawn(async move { dispatch(&app, event, "r", far_deadline()).await })
        })
        .collect();
    for run in runs {
        let response = run.await.expect("no panic").expect("response");
        assert_eq!(failed_ids(&response), Vec::<String>::new());
    }
    // Then the 30 resets never exceed the quota in any second, and take about 3 s (3.05 at
    // the quota, 14.5 at the static shares)
    let times = resets(&in_flight);
    assert_eq!(times.len(), 30);
    assert!(most_in_one_second(&in_flight.calls(), "AdminResetUserPassword") <= 10);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3_600), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_record_whose_reset_cannot_get_its_turn_in_time_is_handed_back_without_a_lookup() {
    // Given one reset a second, 2.6 s left and the default 2 s margin: one reset turn fits
    let in_flight = Arc::new(InFlight::default());
    let cognito = SlowCognito {
        delay: Duration::ZERO,
        in_flight: Arc::clone(&in_flight),
        only: None,
    };
    let client_settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let app = app(
        config(&[
            ("POLICY", ANYONE),
            ("MAX_CONCURRENCY", "3"),
            ("COGNITO_RESET_RPS", "1"),
        ]),
        client_over(cognito, client_settings),
    );
    let started = Instant::now();
    let deadline = Deadline(started + Duration::from_millis(2600));
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(3)), "r", deadline)
        .await
        .expect("response");
    // Then two records are handed back at once, and only the first record called Cognito:
    // no lookup was spent on a record whose reset could not come in time
    assert_eq!(failed_ids(&response).len(), 2);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        in_flight.total.load(Ordering::SeqCst),
        2,
        "one lookup, one reset"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_reset_cuts_the_fleets_rate_in_the_table() {
    // Given the guard table, and Cognito throttling the first reset (another user of the quota)
    let table = Table::new(Mode::Normal);
    let mut cognito = Cognito::with_users(demo_users());
    cognito.reset = crate::cognito::reset_fails_once_on_the_wire("TooManyRequestsException");
    let config = config(&[
        ("POLICY", DEMO_POLICY),
        ("GUARD_TABLE", TABLE),
        ("COGNITO_MAX_ATTEMPTS", "3"),
        ("COGNITO_RESET_RPS", "6"),
    ]);
    let store = DynamoBucket::new(table.client(), TABLE, Duration::from_secs(5));
    let directory = Directory::sdk(
        cognito.client(),
        config.cognito,
        config.deadline_margin,
        config.rates,
    )
    .with_limiters(config.limiters(Some(Arc::new(store) as Arc<dyn BucketStore>)));
    let guard = Guard::dynamodb(table.client(), settings(300), false, config.deadline_margin);
    let policy = config.fixed_policy().expect("fixed");
    let app = Arc::new(App::new(config, directory, Some(guard), policy, None));
    // When a request is retried after the throttle and succeeds
    let response = dispatch(&app, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(http_parts(&response).0, 200, "{response}");
    // Then the reset's rate is cut to 70% for the whole fleet: the cut is in the bucket
    let factor = app
        .directory
        .limiters()
        .factor("us-west-2", Category::UserAccountRecovery);
    assert!((0.69..0.72).contains(&factor), "{factor}");
    let item = &table.items()[RESET_BUCKET];
    assert_eq!(
        item["cutFactor"].as_n().ok().map(String::as_str),
        Some("0.7000")
    );
    assert!(item.contains_key("cutAtUs"));
}

/// Any queue, and the helpdesk portal's role over HTTP, may reset anyone.
const QUEUE_AND_HELPDESK: &str = r#"{"version":1,"rules":[
    {"name":"queue","callers":["arn:aws:sqs:*"],"userPools":["*"],"users":["*"]},
    {"name":"helpdesk","callers":["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
     "userPools":["*"],"users":["*"]}]}"#;

#[tokio::test(start_paused = true)]
async fn a_helpdesk_click_beside_a_draining_fleet_does_not_wait_for_the_queues_booking() {
    // Given two instances draining batches of 10 at a shared quota of 20 resets a second (the
    // bucket booked 100 to 260 ms ahead while they wait)
    let table = Table::new(Mode::Normal);
    let in_flight = Arc::new(InFlight::default());
    let vars = [
        ("COGNITO_RESET_QUOTA", "20"),
        ("MAX_INSTANCES", "5"),
        ("COGNITO_RESET_RPS", "4"),
    ];
    let drains: Vec<_> = (0..2)
        .map(|i| {
            let app = instance_with(&table, &in_flight, QUEUE_AND_HELPDESK, &vars);
            let mut event = sqs_event(QUEUE, &bodies(20));
            let records = event["Records"].as_array_mut().expect("records");
            records.drain(..i * 10);
            records.truncate(10);
            tokio::spawn(async move { dispatch(&app, event, "r", far_deadline()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // When a helpdesk agent's request reaches a third instance
    let helpdesk = instance_with(&table, &in_flight, QUEUE_AND_HELPDESK, &vars);
    let clicked = Instant::now();
    let response = dispatch(&helpdesk, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(http_parts(&response).0, 200, "{response}");
    // Then its reset went out at once (the table answers at once here), ahead of the queue's
    // booked turns, which it repays at the booking's end
    let reset = in_flight
        .calls()
        .into_iter()
        .find(|c| c.operation == "AdminResetUserPassword" && c.username == "diego@example.com")
        .expect("the helpdesk's reset");
    assert!(
        reset.at - clicked <= Duration::from_millis(10),
        "{:?}",
        reset.at - clicked
    );
    for drain in drains {
        let response = drain.await.expect("no panic").expect("response");
        assert_eq!(failed_ids(&response), Vec::<String>::new());
    }
    // And the fleet made at most one call over its timeline in any second (19.05 a second)
    assert_eq!(resets(&in_flight).len(), 21);
    assert!(most_in_one_second(&in_flight.calls(), "AdminResetUserPassword") <= 21);
}
