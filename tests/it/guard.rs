//! The duplicate-reset guard: cooldown, replay, in-flight claims, releases, the guard's own
//! failures and dry run, over the in-process DynamoDB table of `dynamodb.rs`.

use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
use aws_sdk_cognitoidentityprovider::types::error::TooManyRequestsException;
use cognito_reset::sources::dispatch;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::dynamodb::{Mode, Table, ms_from_now, n, s, secs_from_now};
use crate::helpers::*;

const COOLDOWN: u64 = 300;

/// The sample HTTP API request (caller: helpdesk-portal/alice) for `username`, with a key.
fn request(username: &str, key: Option<&str>) -> Value {
    let mut event = http_event_with_body(&json!({"UserPoolId": POOL, "Username": username}));
    if let Some(key) = key {
        event["headers"]["idempotency-key"] = json!(key);
    }
    event
}

fn guarded(cognito: &Cognito, table: &Table) -> std::sync::Arc<cognito_reset::pipeline::App> {
    guarded_app(cognito, table, COOLDOWN, false)
}

async fn sqs(app: &std::sync::Arc<cognito_reset::pipeline::App>, event: Value) -> Vec<String> {
    let response = dispatch(app, event, "r", far_deadline())
        .await
        .expect("an SQS response");
    failed_ids(&response)
}

fn throttled() -> AdminResetUserPasswordError {
    AdminResetUserPasswordError::TooManyRequestsException(
        TooManyRequestsException::builder().build(),
    )
}

/// An item as an invocation leaves it after `claim` (and maybe dies).
fn user_item(
    username: &str,
    state: &str,
    at_secs_ago: i64,
    lease_secs: i64,
) -> crate::dynamodb::Item {
    let at = ms_from_now(-at_secs_ago);
    let mut item = std::collections::HashMap::from([
        ("pk".to_owned(), s(&format!("user#{POOL}#{username}"))),
        ("state".to_owned(), s(state)),
        ("claimId".to_owned(), s("another-invocation/1/0")),
        ("claimedAt".to_owned(), n(at)),
        ("leaseUntil".to_owned(), n(ms_from_now(lease_secs))),
        (
            "expiresAt".to_owned(),
            n(secs_from_now(COOLDOWN as i64 - at_secs_ago)),
        ),
    ]);
    if state == "reset" {
        item.insert("resetAt".to_owned(), n(at));
    }
    item
}

// ---- 1. cooldown ------------------------------------------------------------------------------

#[tokio::test]
async fn a_second_request_inside_the_cooldown_is_409_recently_reset_whatever_name_it_uses() {
    for mode in [Mode::Normal, Mode::NoOldItemOnFailure] {
        // Given diego reset a moment ago by email
        let cognito = Cognito::with_users(demo_users());
        let table = Table::new(mode);
        let app = guarded(&cognito, &table);
        let (status, _, _) = send(&app, request("diego@example.com", Some("k1"))).await;
        assert_eq!(status, 200);

        // When the same user is asked for by sub, and by a case variant of the email
        for name in ["diego-0000-uuid", "DIEGO@example.com"] {
            let (status, body, response) = send(&app, request(name, None)).await;
            // Then 409 recently-reset, with the seconds left and the earlier reset's time
            assert_eq!(status, 409, "{mode:?} {name}: {body}");
            assert_eq!(body["error"], "recently-reset");
            let retry_after: u64 = response["headers"]["retry-after"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in whole seconds");
            // Rounded up against an expiry rounded up: at most the cooldown plus one.
            assert!(
                (COOLDOWN - 5..=COOLDOWN + 1).contains(&retry_after),
                "{retry_after}"
            );
            let reset_at = body["resetAt"].as_str().expect("resetAt");
            assert!(
                reset_at.len() == 20 && reset_at.ends_with('Z') && reset_at.as_bytes()[10] == b'T',
                "RFC 3339: {reset_at}"
            );
        }
        assert_eq!(cognito.reset_users(), ["diego-0000-uuid"], "{mode:?}");
    }
}

#[tokio::test]
async fn the_cooldown_holds_across_callers_and_sources() {
    // Given erin reset through the portal
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    assert_eq!(send(&app, request("erin@example.com", None)).await.0, 200);
    // When the ticket queue asks for erin too
    let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
    // Then the record is acknowledged (REJECTED, not retried) and erin is not reset again
    assert_eq!(sqs(&app, event).await, Vec::<String>::new());
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
}

#[tokio::test]
async fn a_refused_or_failed_reset_releases_the_user() {
    // Given nemo, whom Cognito cannot reset, and every reset throttled for the second app
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    let (status, body, _) = send(&app, request("nemo@example.com", None)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (422, json!("cannot-reset"))
    );
    assert_eq!(table.user_item(POOL, "nemo-0000-uuid"), None);

    let failing = Cognito::with_users(demo_users()).reset_fails(throttled);
    let failing_app = guarded(&failing, &table);
    let (status, body, _) = send(&failing_app, request("diego@example.com", None)).await;
    assert_eq!((status, body["error"].clone()), (429, json!("throttled")));
    assert_eq!(table.user_item(POOL, "diego-0000-uuid"), None);

    // Then a later request goes through: only a RESET starts a window
    assert_eq!(send(&app, request("diego@example.com", None)).await.0, 200);
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
}

#[tokio::test]
async fn a_zero_cooldown_allows_back_to_back_resets_and_leaves_nothing_behind() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded_app(&cognito, &table, 0, false);
    assert_eq!(send(&app, request("diego@example.com", None)).await.0, 200);
    assert_eq!(send(&app, request("diego@example.com", None)).await.0, 200);
    assert_eq!(cognito.reset_users().len(), 2);
    assert_eq!(table.user_item(POOL, "diego-0000-uuid"), None);
}

#[tokio::test]
async fn after_the_window_a_new_reset_goes_through() {
    // Given a reset whose window ended a while ago (its item not yet removed by TTL)
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    table.put_raw(user_item(
        "diego-0000-uuid",
        "reset",
        COOLDOWN as i64 + 60,
        -1,
    ));
    let app = guarded(&cognito, &table);
    // Then a new request resets, and starts a new window
    assert_eq!(send(&app, request("diego@example.com", None)).await.0, 200);
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
    let item = table
        .user_item(POOL, "diego-0000-uuid")
        .expect("a new window");
    assert_eq!(item["state"], s("reset"));
}

// ---- 2. replay --------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_key_twice_replays_the_answer_without_calling_cognito() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    let (status, first, response) =
        send(&app, request("diego@example.com", Some("ticket-42"))).await;
    assert_eq!(status, 200);
    assert!(response["headers"].get("idempotent-replayed").is_none());
    assert!(first.get("replayed").is_none());
    let calls = cognito.calls();

    let (status, again, response) =
        send(&app, request("diego@example.com", Some("ticket-42"))).await;
    assert_eq!(status, 200);
    assert_eq!(response["headers"]["idempotent-replayed"], "true");
    let mut expected = first.clone();
    expected["replayed"] = json!(true);
    assert_eq!(again, expected);
    assert_eq!(cognito.calls(), calls, "a replay makes no Cognito call");
    assert_eq!(cognito.reset_users().len(), 1);
}

#[tokio::test]
async fn a_rejection_is_replayed_too() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    let (status, first, _) = send(&app, request("mallory@example.com", Some("k"))).await;
    assert_eq!(
        (status, first["error"].clone()),
        (403, json!("denied-group"))
    );
    let calls = cognito.calls();
    let (status, again, _) = send(&app, request("mallory@example.com", Some("k"))).await;
    assert_eq!(status, 403);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["error"], "denied-group");
    assert_eq!(cognito.calls(), calls);
}

#[tokio::test]
async fn a_retry_is_not_kept_so_the_same_key_runs_again() {
    // Given a first attempt throttled by Cognito
    let table = Table::new(Mode::Normal);
    let failing = Cognito::with_users(demo_users()).reset_fails(throttled);
    let (status, _, _) = send(
        &guarded(&failing, &table),
        request("diego@example.com", Some("k")),
    )
    .await;
    assert_eq!(status, 429);
    // When the caller retries with the same key
    let cognito = Cognito::with_users(demo_users());
    let (status, body, _) = send(
        &guarded(&cognito, &table),
        request("diego@example.com", Some("k")),
    )
    .await;
    // Then it runs (no replay of the RETRY) and resets
    assert_eq!(status, 200, "{body}");
    assert!(body.get("replayed").is_none());
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422_and_the_first_answer_stands() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    assert_eq!(
        send(&app, request("diego@example.com", Some("k"))).await.0,
        200
    );
    let (status, body, _) = send(&app, request("erin@example.com", Some("k"))).await;
    assert_eq!(
        (status, body["error"].clone()),
        (422, json!("idempotency-key-reused"))
    );
    // Different ClientMetadata is a different request too.
    let mut event = request("diego@example.com", Some("k"));
    event["body"] = json!(
        json!({"UserPoolId": POOL, "Username": "diego@example.com", "ClientMetadata": {"ticket": "other"}})
            .to_string()
    );
    assert_eq!(send(&app, event).await.0, 422);
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
    let (status, body, _) = send(&app, request("diego@example.com", Some("k"))).await;
    assert_eq!((status, body["replayed"].clone()), (200, json!(true)));
}

#[tokio::test]
async fn keys_are_scoped_by_caller() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    assert_eq!(
        send(&app, request("diego@example.com", Some("k"))).await.0,
        200
    );
    // Another session of the portal role sends the same key: not a replay of alice's answer.
    let mut event = request("diego@example.com", Some("k"));
    event["requestContext"]["authorizer"]["iam"]["userArn"] =
        json!("arn:aws:sts::123456789012:assumed-role/helpdesk-portal/bob");
    let (status, body, _) = send(&app, event).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "recently-reset");
    assert!(body.get("replayed").is_none());
}

#[tokio::test]
async fn batch_items_use_their_own_keys() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    let batch = || {
        let mut event = http_event_with_body(&json!([
            {"UserPoolId": POOL, "Username": "diego@example.com"},
            {"UserPoolId": POOL, "Username": "erin@example.com"}
        ]));
        event["headers"]["idempotency-key"] = json!("batch-7");
        event
    };
    let (status, first, _) = send(&app, batch()).await;
    assert_eq!(status, 207);
    let (_, again, _) = send(&app, batch()).await;
    for i in 0..2 {
        assert_eq!(first["results"][i]["status"], 200, "{first}");
        assert_eq!(again["results"][i]["replayed"], true, "{again}");
        assert_eq!(
            again["results"][i]["username"],
            first["results"][i]["username"]
        );
    }
    assert_eq!(cognito.reset_users().len(), 2);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400_naming_the_header() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    for key in [
        "x".repeat(256),
        "ключ".to_owned(),
        " ".to_owned(),
        "tab\there".to_owned(),
    ] {
        let mut event = request("diego@example.com", None);
        event["headers"]["idempotency-key"] = json!(key);
        let (status, body, _) = send(&app, event).await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert_eq!(body["error"], "invalid-request");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("Idempotency-Key"),
            "{body}"
        );
    }
    assert_eq!(cognito.calls(), 0);
    assert_eq!(table.writes(), 0);
}

#[tokio::test]
async fn a_redelivered_sqs_message_is_acknowledged_without_a_second_reset() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded(&cognito, &table);
    let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
    assert_eq!(sqs(&app, event.clone()).await, Vec::<String>::new());
    let calls = cognito.calls();
    // The same message id again (a lost batch response): replayed, no Cognito call at all
    assert_eq!(sqs(&app, event).await, Vec::<String>::new());
    assert_eq!(cognito.calls(), calls);
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
}

#[tokio::test]
async fn an_sns_redelivery_in_a_new_sqs_message_is_replayed_by_the_sns_message_id() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded_app(&cognito, &table, 0, false);
    let notification = json!({
        "Type": "Notification",
        "MessageId": "sns-0001",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:resets",
        "Message": reset_body("erin@example.com"),
    })
    .to_string();
    // Two SQS messages (m0, then m1 in a later batch) carrying the same SNS notification; no
    // cooldown to hide behind
    let first = sqs_event(QUEUE, &[(notification.clone(), None)]);
    let mut again = sqs_event(QUEUE, &[(notification, None)]);
    again["Records"][0]["messageId"] = json!("m1");
    assert_eq!(sqs(&app, first).await, Vec::<String>::new());
    assert_eq!(sqs(&app, again).await, Vec::<String>::new());
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
}

// ---- 3. in flight -----------------------------------------------------------------------------

#[tokio::test]
async fn a_user_claimed_by_a_live_invocation_is_409_in_progress_and_retried_from_sqs() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    table.put_raw(user_item("erin-0000-uuid", "claimed", 1, 60));
    let app = guarded(&cognito, &table);
    let (status, body, response) = send(&app, request("erin@example.com", None)).await;
    assert_eq!((status, body["error"].clone()), (409, json!("in-progress")));
    assert_eq!(response["headers"]["retry-after"], "1");
    let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
    assert_eq!(sqs(&app, event).await, ["m0"]);
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
}

#[tokio::test]
async fn ten_concurrent_requests_for_one_user_reset_once() {
    for mode in [Mode::Normal, Mode::NoOldItemOnFailure] {
        let cognito = Cognito::with_users(demo_users());
        let table = Table::new(mode);
        let app = guarded(&cognito, &table);
        let mut tasks = JoinSet::new();
        for i in 0..10 {
            let app = std::sync::Arc::clone(&app);
            let key = format!("key-{i}");
            tasks.spawn(async move { send(&app, request("diego@example.com", Some(&key))).await });
        }
        let mut statuses = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (status, body, _) = joined.expect("task");
            if status == 409 {
                assert!(
                    body["error"] == "recently-reset" || body["error"] == "in-progress",
                    "{body}"
                );
            }
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 409, 409, 409, 409, 409, 409, 409, 409, 409],
            "{mode:?}"
        );
        assert_eq!(cognito.reset_users(), ["diego-0000-uuid"], "{mode:?}");
    }
}

// ---- 4. abandoned claims ----------------------------------------------------------------------

#[tokio::test]
async fn a_claim_abandoned_by_a_crash_counts_as_a_possible_reset() {
    // Given an invocation that claimed erin 20 s ago and died before its result
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    table.put_raw(user_item("erin-0000-uuid", "claimed", 20, -5));
    let app = guarded(&cognito, &table);
    // Then no second code inside the window, and the answer says the reset is unconfirmed
    let (status, body, _) = send(&app, request("erin@example.com", None)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("reset-unconfirmed")),
        "{body}"
    );
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
}

// ---- 5. the guard's own failures --------------------------------------------------------------

#[tokio::test]
async fn a_throttled_guard_is_503_guard_unavailable_and_nobody_is_reset() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Throttled);
    let app = guarded(&cognito, &table);
    for key in [Some("k"), None] {
        let (status, body, _) = send(&app, request("diego@example.com", key)).await;
        assert_eq!(
            (status, body["error"].clone()),
            (503, json!("guard-unavailable")),
            "{key:?}"
        );
    }
    let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
    assert_eq!(sqs(&app, event).await, ["m0"]);
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
}

// ---- 6. dry run -------------------------------------------------------------------------------

#[tokio::test]
async fn dry_run_reads_the_guard_and_writes_nothing() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    table.put_raw(user_item("diego-0000-uuid", "reset", 10, -1));
    let app = guarded_app(&cognito, &table, COOLDOWN, true);
    let (status, body, _) = send(&app, request("diego@example.com", Some("k"))).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("recently-reset"))
    );
    let (status, body, _) = send(&app, request("erin@example.com", Some("k2"))).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (200, json!("WOULD_RESET"))
    );
    assert_eq!(table.writes(), 0);
    assert_eq!(table.items().len(), 1);
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
}

// ---- deadlines ----------------------------------------------------------------------------------

/// A DynamoDB endpoint that never answers.
#[derive(Debug, Clone)]
struct Hanging;

impl aws_smithy_runtime_api::client::http::HttpConnector for Hanging {
    fn call(
        &self,
        _request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(std::future::pending())
    }
}

#[tokio::test]
async fn a_hanging_guard_is_cut_at_the_deadline_margin_and_the_record_is_retry_deadline() {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_runtime_api::client::http::http_client_fn(|_, _| {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(Hanging)
    });
    let settings = crate::dynamodb::settings(COOLDOWN);
    let builder = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::for_tests())
        .http_client(http);
    let client = aws_sdk_dynamodb::Client::from_conf(
        cognito_reset::aws::guard::configure(builder, settings.client).build(),
    );
    let cognito = Cognito::with_users(demo_users());
    let config = config(&[("POLICY", DEMO_POLICY)]);
    let margin = config.deadline_margin;
    let directory = cognito_reset::aws::cognito::Directory::sdk(
        cognito.client(),
        config.cognito,
        margin,
        config.rates,
    );
    let guard = cognito_reset::aws::guard::Guard::dynamodb(client, settings, false, margin);
    let policy = config.fixed_policy().expect("a fixed policy");
    let app = std::sync::Arc::new(cognito_reset::pipeline::App::new(
        config,
        directory,
        Some(guard),
        policy,
        None,
    ));
    // Given 2.6 s left and the default 2 s margin: 0.6 s for the guard's calls
    let started = std::time::Instant::now();
    let deadline = cognito_reset::deadline::Deadline(
        (started + std::time::Duration::from_millis(2600)).into(),
    );
    let response = dispatch(&app, request("diego@example.com", Some("k")), "r", deadline)
        .await
        .expect("a response");
    // Then the answer comes well before the deadline, as RETRY deadline, nobody reset: the
    // key's take (which may have landed) is given back within a reset's own stage (until 1 s,
    // half the margin, is left: at 1.6 s), before the record stage's end (2.1 s)
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2100),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = http_parts(&response);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("deadline")),
        "{body}"
    );
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
}
