//! Outcome events on EventBridge: batching, partial and whole-call failures counted as not
//! delivered, no ClientMetadata in any event, and the shipped example events and rule.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::error::ErrorMetadata;
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsInput, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::events::{
    self as bus, Bus, DEFAULT_SOURCE, DETAIL_TYPE, EventOutcome, OutcomeEvent,
};
use cognito_reset::request::ResetRequest;
use serde_json::Value;

use crate::helpers::{POOL, QUEUE};

const BUS: &str = "arn:aws:events:us-west-2:123456789012:event-bus/password-resets";

/// The `PutEvents` calls a mock received.
type Calls = Arc<Mutex<Vec<PutEventsInput>>>;

/// What the fake EventBridge answers to one call (given the call's index and input).
type Answer = fn(usize, &PutEventsInput) -> MockResponse<PutEventsOutput, PutEventsError>;

fn accept_all(_: usize, input: &PutEventsInput) -> MockResponse<PutEventsOutput, PutEventsError> {
    let entries = input.entries().iter().enumerate().map(|(i, _)| {
        PutEventsResultEntry::builder()
            .event_id(format!("evt-{i}"))
            .build()
    });
    MockResponse::Output(
        PutEventsOutput::builder()
            .failed_entry_count(0)
            .set_entries(Some(entries.collect()))
            .build(),
    )
}

fn throttled() -> PutEventsError {
    PutEventsError::generic(
        ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build(),
    )
}

/// A fake EventBridge recording every call, answering with `answer`.
fn eventbridge(answer: Answer) -> (Rule, Calls) {
    let calls: Calls = Arc::default();
    let log = Arc::clone(&calls);
    let rule = mock!(Client::put_events).then_compute_response(move |input| {
        let mut log = log.lock().expect("log");
        log.push(input.clone());
        answer(log.len() - 1, input)
    });
    (rule, calls)
}

fn client(rule: &Rule, max_attempts: u32) -> Client {
    let settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts,
    };
    mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [rule], |builder| {
        bus::configure(builder, settings).retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(2)),
        )
    })
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn events(n: usize) -> Vec<OutcomeEvent> {
    (0..n)
        .map(|i| {
            let mut event =
                OutcomeEvent::new(EventOutcome::Reset, "sqs", &format!("m{i}"), QUEUE, at(0));
            event.user_pool_id = Some(POOL.to_owned());
            event
        })
        .collect()
}

fn ids_sent(calls: &Calls) -> Vec<Vec<String>> {
    calls
        .lock()
        .expect("log")
        .iter()
        .map(|input| {
            input
                .entries()
                .iter()
                .map(|e| {
                    let detail: Value =
                        serde_json::from_str(e.detail().expect("detail")).expect("JSON detail");
                    detail["id"].as_str().expect("id").to_owned()
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn twenty_three_events_go_out_as_ten_ten_and_three_in_order() {
    let (rule, calls) = eventbridge(accept_all);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);

    let delivery = bus.publish(&events(23)).await;

    assert_eq!(delivery.delivered, 23);
    assert_eq!(delivery.not_delivered(), 0);
    let sent = ids_sent(&calls);
    assert_eq!(
        sent.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 10, 3]
    );
    let expected: Vec<String> = (0..23).map(|i| format!("m{i}")).collect();
    assert_eq!(sent.concat(), expected);
    for input in calls.lock().expect("log").iter() {
        for entry in input.entries() {
            assert_eq!(entry.event_bus_name(), Some(BUS));
            assert_eq!(entry.source(), Some(DEFAULT_SOURCE));
            assert_eq!(entry.detail_type(), Some(DETAIL_TYPE));
            assert_eq!(entry.time().map(|t| t.secs()), Some(0));
        }
    }
}

#[tokio::test]
async fn nothing_to_publish_makes_no_call() {
    let (rule, calls) = eventbridge(accept_all);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);
    assert_eq!(bus.publish(&[]).await, bus::Delivery::default());
    assert!(calls.lock().expect("log").is_empty());
}

#[tokio::test]
async fn entries_eventbridge_reports_as_failed_are_counted_as_not_delivered() {
    fn partial(_: usize, input: &PutEventsInput) -> MockResponse<PutEventsOutput, PutEventsError> {
        // The 2nd and 5th entries fail; the others get event ids.
        let entries = input.entries().iter().enumerate().map(|(i, _)| {
            if i == 1 || i == 4 {
                PutEventsResultEntry::builder()
                    .error_code("ThrottlingException")
                    .error_message("Rate exceeded")
                    .build()
            } else {
                PutEventsResultEntry::builder()
                    .event_id(format!("evt-{i}"))
                    .build()
            }
        });
        MockResponse::Output(
            PutEventsOutput::builder()
                .failed_entry_count(2)
                .set_entries(Some(entries.collect()))
                .build(),
        )
    }
    let (rule, _calls) = eventbridge(partial);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);

    let delivery = bus.publish(&events(6)).await;

    assert_eq!(delivery.delivered, 4);
    assert_eq!(delivery.failed_entries, 2);
    assert_eq!(delivery.failed_calls, 0);
    assert_eq!(delivery.not_delivered(), 2);
}

#[tokio::test]
async fn a_throttled_put_events_is_retried_by_the_sdk_then_counted_as_not_delivered() {
    let rule = mock!(Client::put_events).then_error(throttled);
    let bus = Bus::new(client(&rule, 3), BUS, DEFAULT_SOURCE);

    let delivery = bus.publish(&events(3)).await;

    assert_eq!(rule.num_calls(), 3, "the SDK's 3 attempts");
    assert_eq!(delivery.delivered, 0);
    assert_eq!(delivery.failed_calls, 1);
    assert_eq!(delivery.in_failed_calls, 3);
    assert_eq!(delivery.not_delivered(), 3);
}

#[tokio::test]
async fn a_failed_call_is_logged_with_its_class_and_without_any_event_content() {
    let (_guard, logs) = crate::logs::capture();
    let rule = mock!(Client::put_events).then_error(throttled);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);
    let mut events = events(2);
    events[0].reason = Some("locked out, ticket INC-77".to_owned());

    bus.publish(&events).await;

    let warnings = logs.lines_at("WARN");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(warnings[0].contains("could not publish outcome events"));
    assert!(warnings[0].contains("events=2"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("error.kind=\"throttled\""),
        "{}",
        warnings[0]
    );
    assert!(
        !logs.text().contains("INC-77"),
        "no event content in any log line"
    );
}

#[tokio::test]
async fn events_not_sent_before_the_deadline_are_counted_and_nothing_is_called() {
    let (rule, calls) = eventbridge(accept_all);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);

    let delivery = bus
        .publish_before(&events(12), std::time::Instant::now().into())
        .await;

    assert!(calls.lock().expect("log").is_empty());
    assert_eq!(delivery.unsent, 12);
    assert_eq!(delivery.not_delivered(), 12);

    let delivery = bus
        .publish_before(
            &events(12),
            (std::time::Instant::now() + Duration::from_secs(30)).into(),
        )
        .await;
    assert_eq!(delivery.delivered, 12);
    assert_eq!(calls.lock().expect("log").len(), 2);
}

#[tokio::test]
async fn a_failed_call_does_not_stop_the_next_batches() {
    fn first_call_fails(
        call: usize,
        input: &PutEventsInput,
    ) -> MockResponse<PutEventsOutput, PutEventsError> {
        if call == 0 {
            MockResponse::Error(throttled())
        } else {
            accept_all(call, input)
        }
    }
    let (rule, calls) = eventbridge(first_call_fails);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);

    let delivery = bus.publish(&events(15)).await;

    assert_eq!(calls.lock().expect("log").len(), 2);
    assert_eq!(delivery.in_failed_calls, 10);
    assert_eq!(delivery.delivered, 5);
    assert_eq!(delivery.not_delivered(), 10);
}

#[tokio::test]
async fn batches_stay_under_the_256_kb_request_limit() {
    let (rule, calls) = eventbridge(accept_all);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);
    // Four events of ~100 KB each: at most two fit in one request.
    let mut big = events(4);
    for event in &mut big {
        event.canonical_username = Some("x".repeat(100 * 1024));
    }
    // And one that can never fit.
    let mut huge = events(1);
    huge[0].id = "huge".to_owned();
    huge[0].canonical_username = Some("x".repeat(bus::MAX_REQUEST_BYTES));
    big.extend(huge);

    let delivery = bus.publish(&big).await;

    for input in calls.lock().expect("log").iter() {
        let bytes: usize = input.entries().iter().map(bus::entry_size).sum();
        assert!(bytes <= bus::MAX_REQUEST_BYTES, "{bytes} bytes in one call");
    }
    assert_eq!(ids_sent(&calls).concat(), vec!["m0", "m1", "m2", "m3"]);
    assert_eq!(delivery.delivered, 4);
    assert_eq!(delivery.too_large, 1);
    assert_eq!(delivery.not_delivered(), 1);
}

#[tokio::test]
async fn the_event_never_carries_client_metadata() {
    let request = ResetRequest::from_json(
        &serde_json::json!({
            "UserPoolId": POOL,
            "Username": "diego@example.com",
            "ClientMetadata": {"ticket": "SECRET-TICKET-42", "otp-hint": "s3cr3t"},
            "Reason": "locked out"
        })
        .to_string(),
        None,
    )
    .expect("valid request");
    let event =
        OutcomeEvent::new(EventOutcome::Reset, "sqs", "m0", QUEUE, at(0)).with_request(&request);
    let (rule, calls) = eventbridge(accept_all);
    let bus = Bus::new(client(&rule, 1), BUS, DEFAULT_SOURCE);

    bus.publish(&[event]).await;

    let calls = calls.lock().expect("log");
    let detail = calls[0].entries()[0].detail().expect("detail").to_owned();
    for secret in ["SECRET-TICKET-42", "s3cr3t", "otp-hint", "lientMetadata"] {
        assert!(!detail.contains(secret), "{secret} in {detail}");
    }
    let detail: Value = serde_json::from_str(&detail).expect("JSON");
    assert_eq!(detail["requestedUsername"], "diego@example.com");
    assert_eq!(detail["userPoolId"], POOL);
    assert_eq!(detail["reason"], "locked out");
}

fn example(name: &str) -> Value {
    let path = format!(
        "{}/events/outcome-events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The example events in `events/outcome-events/`, rebuilt from code: the documented schema
/// is the one the function sends.
fn example_events() -> Vec<(&'static str, OutcomeEvent)> {
    let alice = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice";
    let t0 = 1_795_770_000;
    let mut reset = OutcomeEvent::new(
        EventOutcome::Reset,
        "http-api",
        "d1a5c2f0-7b7e-4c0a-9a51-0e6c1f3b8a01",
        alice,
        at(t0),
    );
    reset.user_pool_id = Some(POOL.to_owned());
    // A pool of POOL_ROLES: in its role's account, not the function's.
    reset.pool_account = Some("222233334444".to_owned());
    reset.requested_username = Some("diego@example.com".to_owned());
    reset.canonical_username = Some("7c1e4a52-9b1d-4f0e-8a57-2f6d3c9e0a11".to_owned());
    reset.rule = Some("helpdesk-portal".to_owned());
    reset.idempotency_key = Some("INC-1234".to_owned());
    reset.reason = Some("locked out, ticket INC-1234".to_owned());
    reset.policy_version = Some("7".to_owned());
    reset.action = Some("reset-password".to_owned());
    reset.signed_out = Some(true);

    let sqs = |outcome, id: &str, secs, user: &str, canonical: &str| {
        let mut e = OutcomeEvent::new(outcome, "sqs", id, QUEUE, at(secs));
        e.user_pool_id = Some(POOL.to_owned());
        e.pool_account = Some("123456789012".to_owned());
        e.requested_username = Some(user.to_owned());
        e.canonical_username = Some(canonical.to_owned());
        e.idempotency_key = Some(id.to_owned());
        e.policy_version = Some("7".to_owned());
        e
    };
    let erin = "3f9b2d14-5e6a-4c7b-9d8e-1a2b3c4d5e02";
    let mut would = sqs(
        EventOutcome::WouldReset,
        "059f36b4-87a3-44ab-83d2-661975830a01",
        t0 + 1,
        "erin@example.com",
        erin,
    );
    would.rule = Some("ticket-queue".to_owned());
    would.action = Some("reset-password".to_owned());
    let mut rejected = sqs(
        EventOutcome::Rejected,
        "059f36b4-87a3-44ab-83d2-661975830a02",
        t0 + 2,
        "admin@example.com",
        "b2c4e6f8-0a1b-4c2d-8e3f-4a5b6c7d8e03",
    );
    rejected.code = Some("denied-user".to_owned());
    rejected.reason = Some("ticket INC-2002".to_owned());
    let mut gave_up = sqs(
        EventOutcome::GaveUp,
        "059f36b4-87a3-44ab-83d2-661975830a05",
        t0 + 3,
        "erin@example.com",
        erin,
    );
    gave_up.code = Some("throttled".to_owned());
    gave_up.rule = Some("ticket-queue".to_owned());
    vec![
        ("reset.json", reset),
        ("would-reset.json", would),
        ("rejected.json", rejected),
        ("gave-up.json", gave_up),
    ]
}

#[test]
fn the_example_events_are_what_the_function_sends() {
    let bus = Bus::new(client(&eventbridge(accept_all).0, 1), BUS, DEFAULT_SOURCE);
    for (file, event) in example_events() {
        let example = example(file);
        let entry = bus.entry(&event);
        let detail: Value = serde_json::from_str(entry.detail().expect("detail")).expect("JSON");
        assert_eq!(example["detail"], detail, "{file}");
        assert_eq!(example["source"], DEFAULT_SOURCE, "{file}");
        assert_eq!(example["detail-type"], DETAIL_TYPE, "{file}");
        assert_eq!(example["time"], detail["time"], "{file}");
        assert_eq!(
            example["detail"]["outcome"],
            event.outcome.as_str(),
            "{file}"
        );
    }
}

/// Whether an EventBridge pattern of exact-match arrays (the only kind the example uses)
/// matches an event.
fn matches(pattern: &Value, event: &Value) -> bool {
    pattern
        .as_object()
        .expect("pattern object")
        .iter()
        .all(|(key, wanted)| match wanted {
            Value::Array(values) => values.contains(&event[key]),
            Value::Object(_) => matches(wanted, &event[key]),
            other => panic!("unexpected pattern value {other}"),
        })
}

#[test]
fn the_example_rule_routes_this_pools_outcomes_and_nothing_else() {
    let rule = example("rule-route-pool-to-queue.json");
    for (file, _) in example_events() {
        let event = example(file);
        assert!(matches(&rule, &event), "{file} should match");

        let mut other_pool = event.clone();
        other_pool["detail"]["userPoolId"] = Value::from("us-west-2_other");
        assert!(!matches(&rule, &other_pool), "{file} in another pool");

        let mut other_source = event.clone();
        other_source["source"] = Value::from("someone-else");
        assert!(!matches(&rule, &other_source), "{file} from another source");
    }
}

// ---- through the function: which records emit, and what ---------------------------------------

mod through_the_function {
    use std::sync::Arc;

    use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
    use aws_sdk_cognitoidentityprovider::types::error::TooManyRequestsException;
    use cognito_reset::aws::cognito::Directory;
    use cognito_reset::aws::events::Bus;
    use cognito_reset::pipeline::App;
    use cognito_reset::sources::invoke;
    use serde_json::{Value, json};

    use super::{BUS, Calls, accept_all, client, eventbridge, throttled};
    use crate::helpers::*;

    fn app_with_bus(cognito: &Cognito, rule: &aws_smithy_mocks::Rule, dry_run: bool) -> Arc<App> {
        let dry = if dry_run { "true" } else { "false" };
        let config = config(&[
            ("POLICY", DEMO_POLICY),
            ("MAX_RECEIVE_COUNT", "3"),
            ("DRY_RUN", dry),
        ]);
        let directory = Directory::sdk(
            cognito.client(),
            config.cognito,
            config.deadline_margin,
            config.rates,
        );
        let policy = config.fixed_policy().expect("fixed");
        let bus = Bus::new(client(rule, 1), BUS, "cognito-reset");
        Arc::new(App::new(
            config,
            directory,
            None,
            policy,
            Some(Arc::new(bus) as _),
        ))
    }

    fn details(calls: &Calls) -> Vec<Value> {
        calls
            .lock()
            .expect("log")
            .iter()
            .flat_map(|input| input.entries().to_vec())
            .map(|e| serde_json::from_str(e.detail().unwrap_or("{}")).expect("JSON detail"))
            .collect()
    }

    fn tina_throttled() -> Vec<TestUser> {
        let mut tina = user("tina", &["staff"]);
        tina.reset_error = Some(|| {
            AdminResetUserPasswordError::TooManyRequestsException(
                TooManyRequestsException::builder().build(),
            )
        });
        let mut users = demo_users();
        users.push(tina);
        users
    }

    #[tokio::test]
    async fn a_reset_says_what_was_done_and_whether_the_user_was_signed_out() {
        // The demo policy: the portal may ask for a sign-out, and its invitations rule resends.
        const PLAIN_POOL: &str = "us-west-2_3cb16e0c4e06d6da7481c048fd3580f0c31baeba31c42";
        let (rule, calls) = eventbridge(accept_all);
        let mut users = demo_users();
        users.push(invited("ivy"));
        let cognito = Cognito::with_users(users);
        let app = app_with_bus(&cognito, &rule, false);
        let diego = http_event_with_body(&json!({
            "UserPoolId": POOL, "Username": "diego@example.com", "SignOut": true,
            "ClientMetadata": {"ticket": "canary-5150"}
        }));
        let (response, diego_metrics) = invoke(&app, diego, "req-1", far_deadline()).await;
        assert_eq!(http_parts(&response.expect("response")).0, 200);
        let ivy = http_event_with_body(&json!({
            "UserPoolId": PLAIN_POOL, "Username": "ivy@example.com",
            "ClientMetadata": {"ticket": "canary-5150"}
        }));
        let (response, ivy_metrics) = invoke(&app, ivy, "req-2", far_deadline()).await;
        assert_eq!(http_parts(&response.expect("response")).0, 200);
        // Events: the action, the sign-out, and never the metadata.
        let details = details(&calls);
        assert_eq!(details.len(), 2, "{details:?}");
        assert_eq!(
            (&details[0]["action"], &details[0]["signedOut"]),
            (&json!("reset-password"), &json!(true))
        );
        assert_eq!(details[1]["action"], "resend-invitation");
        assert_eq!(details[1].get("signedOut"), None);
        assert!(!format!("{details:?}").contains("canary-5150"));
        // Metrics: one of each action, one sign-out, and the new operations' latencies.
        let diego_emf = diego_metrics.to_json_line().expect("metrics");
        let ivy_emf = ivy_metrics.to_json_line().expect("metrics");
        for name in [
            "\"Actions.reset-password\":1",
            "\"SignOuts\":1",
            "CognitoLatency.AdminUserGlobalSignOut",
        ] {
            assert!(diego_emf.contains(name), "{name}: {diego_emf}");
        }
        for name in [
            "\"Actions.resend-invitation\":1",
            "CognitoLatency.AdminCreateUser",
        ] {
            assert!(ivy_emf.contains(name), "{name}: {ivy_emf}");
        }
        assert_eq!(cognito.resend.num_calls(), 1);
        assert_eq!(cognito.sign_out.num_calls(), 1);
    }

    #[tokio::test]
    async fn every_final_outcome_emits_one_event_and_a_retry_only_on_its_last_receive() {
        let (rule, calls) = eventbridge(accept_all);
        let cognito = Cognito::with_users(tina_throttled());
        let app = app_with_bus(&cognito, &rule, false);

        // HTTP: diego RESET (with a canary in ClientMetadata), then a throttled HTTP request
        // (RETRY: no event)
        let diego = http_event_with_body(&json!({
            "UserPoolId": POOL, "Username": "diego@example.com",
            "ClientMetadata": {"ticket": "canary-77e1"}, "Reason": "locked out"
        }));
        let (response, _) = invoke(&app, diego, "req-1", far_deadline()).await;
        assert_eq!(http_parts(&response.expect("response")).0, 200);
        let tina =
            http_event_with_body(&json!({"UserPoolId": POOL, "Username": "tina@example.com"}));
        let (response, _) = invoke(&app, tina, "req-2", far_deadline()).await;
        assert_eq!(http_parts(&response.expect("response")).0, 429);
        // SQS: admin REJECTED; tina throttled on her 3rd (last) receive, and on a 1st receive
        let mut sqs = sqs_event(
            QUEUE,
            &[
                (reset_body("admin@example.com"), None),
                (reset_body("tina@example.com"), None),
                (reset_body("tina@example.com"), None),
            ],
        );
        sqs["Records"][1]["attributes"]["ApproximateReceiveCount"] = json!("3");
        let (response, _) = invoke(&app, sqs, "req-3", far_deadline()).await;
        assert_eq!(failed_ids(&response.expect("response")), ["m1", "m2"]);

        let sent = details(&calls);
        let summary: Vec<(String, String, String)> = sent
            .iter()
            .map(|d| {
                (
                    d["outcome"].as_str().unwrap_or("").to_owned(),
                    d["code"].as_str().unwrap_or("").to_owned(),
                    d["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("RESET".into(), "".into(), "req-1".into()),
                ("REJECTED".into(), "denied-user".into(), "m0".into()),
                ("GAVE_UP".into(), "throttled".into(), "m1".into()),
            ]
        );
        let reset = &sent[0];
        assert_eq!(reset["userPoolId"], POOL);
        assert_eq!(reset["requestedUsername"], "diego@example.com");
        assert_eq!(reset["canonicalUsername"], "diego-0000-uuid");
        assert_eq!(reset["rule"], "helpdesk-portal");
        assert_eq!(reset["source"], "http-api");
        assert!(
            reset["policyVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("sha256:")
        );
        assert!(
            reset["caller"]
                .as_str()
                .unwrap_or("")
                .contains("helpdesk-portal/alice")
        );
        assert!(reset["time"].as_str().unwrap_or("").ends_with('Z'));
        // The sample request carries ClientMetadata {"ticket": "INC-1234"}: never in an event.
        let all = serde_json::to_string(&sent).expect("JSON");
        assert!(
            !all.contains("INC-1234") && !all.contains("ClientMetadata"),
            "{all}"
        );

        // Dry run: WOULD_RESET
        let (rule, calls) = eventbridge(accept_all);
        let dry = app_with_bus(&Cognito::with_users(demo_users()), &rule, true);
        invoke(&dry, event("http-api-v2.json"), "req-4", far_deadline())
            .await
            .0
            .expect("response");
        assert_eq!(details(&calls)[0]["outcome"], "WOULD_RESET");
    }

    #[tokio::test]
    async fn a_failing_put_events_changes_no_outcome_and_is_counted() {
        let rule =
            aws_smithy_mocks::mock!(aws_sdk_eventbridge::Client::put_events).then_error(throttled);
        let cognito = Cognito::with_users(demo_users());
        let app = app_with_bus(&cognito, &rule, false);
        let (response, metrics) =
            invoke(&app, event("sqs-standard.json"), "r", far_deadline()).await;
        // Then the batch answers as it would without events: nothing handed back, erin reset once
        assert_eq!(
            failed_ids(&response.expect("response")),
            Vec::<String>::new()
        );
        assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
        let doc: Value =
            serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON");
        assert_eq!(doc["EventsNotDelivered"].as_u64(), Some(5));
    }
}
