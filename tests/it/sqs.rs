//! SQS sources: partial batch responses, FIFO groups, SNS envelopes, the queue as caller.

use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
use aws_sdk_cognitoidentityprovider::types::error::TooManyRequestsException;
use cognito_reset::deadline::Deadline;
use cognito_reset::sources::dispatch;

use crate::helpers::*;

const FIFO: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets.fifo";

#[tokio::test]
async fn standard_batch_acknowledges_rejections_and_resets_the_allowed() {
    // Given erin (allowed), admin (denied), ghost (unknown), nemo (no verified email), garbage
    let cognito = Cognito::with_users(demo_users());
    let response = dispatch(
        &demo_app(&cognito),
        event("sqs-standard.json"),
        "r",
        far_deadline(),
    )
    .await
    .expect("response");
    // then nothing is handed back for retry, and only erin is reset
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
}

#[tokio::test]
async fn fifo_and_sns_samples_reset_their_users() {
    let cognito = Cognito::with_users(demo_users());
    let app = demo_app(&cognito);
    let response = dispatch(&app, event("sqs-fifo.json"), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let response = dispatch(&app, event("sns-in-sqs.json"), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let mut reset = cognito.reset_users();
    reset.sort();
    // dora (disabled) is rejected, not reset.
    assert_eq!(
        reset,
        ["diego-0000-uuid", "erin-0000-uuid", "erin-0000-uuid"]
    );
}

#[tokio::test]
async fn the_caller_is_the_queue_never_the_body() {
    let cognito = Cognito::with_users(demo_users());
    let other_queue = "arn:aws:sqs:us-west-2:123456789012:someone-elses-queue";
    let event = sqs_event(other_queue, &[(reset_body("erin@example.com"), None)]);
    let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
        .await
        .expect("response");
    // Rejected (no rule for that queue): acknowledged, not retried, and Cognito never called.
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(cognito.calls(), 0);
}

/// The demo users plus tina, whose resets are always throttled (RETRY).
fn demo_users_and_throttled_tina() -> Vec<TestUser> {
    let mut tina = user("tina", &["staff"]);
    tina.reset_error = Some(throttled);
    let mut users = demo_users();
    users.push(tina);
    users
}

fn throttled() -> AdminResetUserPasswordError {
    AdminResetUserPasswordError::TooManyRequestsException(
        TooManyRequestsException::builder().build(),
    )
}

#[tokio::test]
async fn fifo_group_halts_after_a_retry_and_other_groups_go_on() {
    // Given a user whose reset is throttled (tina) at the head of group A
    let cognito = Cognito::with_users(demo_users_and_throttled_tina());
    let event = sqs_event(
        FIFO,
        &[
            (reset_body("tina@example.com"), Some("A")),
            (reset_body("diego@example.com"), Some("B")),
            (reset_body("erin@example.com"), Some("A")),
            (reset_body("diego@example.com"), Some("B")),
            (reset_body("ghost@example.com"), Some("A")),
        ],
    );
    let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
        .await
        .expect("response");
    // then tina and everything after her in group A come back, unprocessed; group B goes on
    assert_eq!(failed_ids(&response), ["m0", "m2", "m4"]);
    assert_eq!(
        cognito.reset_users(),
        ["diego-0000-uuid", "diego-0000-uuid"]
    );
    // erin and ghost were never looked up: 1 lookup for tina + 2 for diego.
    assert_eq!(cognito.get_user.num_calls(), 3);
}

#[tokio::test]
async fn standard_queue_does_not_halt_after_a_retry() {
    let cognito = Cognito::with_users(demo_users_and_throttled_tina());
    let event = sqs_event(
        QUEUE,
        &[
            (reset_body("tina@example.com"), None),
            (reset_body("erin@example.com"), None),
        ],
    );
    let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), ["m0"]);
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
}

#[tokio::test]
async fn every_record_failing_is_still_a_normal_response() {
    let cognito = Cognito::with_users(demo_users()).get_user_fails(|| {
        aws_sdk_cognitoidentityprovider::operation::admin_get_user::AdminGetUserError::InternalErrorException(
            aws_sdk_cognitoidentityprovider::types::error::InternalErrorException::builder().build(),
        )
    });
    let event = sqs_event(
        QUEUE,
        &[
            (reset_body("erin@example.com"), None),
            (reset_body("diego@example.com"), None),
        ],
    );
    let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
        .await
        .expect("a response, not an error");
    let mut failed = failed_ids(&response);
    failed.sort();
    assert_eq!(failed, ["m0", "m1"]);
}

#[tokio::test]
async fn records_are_not_started_near_the_deadline() {
    let cognito = Cognito::with_users(demo_users());
    // 1 s left, default margin 2 s: nothing may start.
    let deadline = Deadline((Instant::now() + Duration::from_secs(1)).into());
    let event = sqs_event(
        QUEUE,
        &[
            (reset_body("erin@example.com"), None),
            (reset_body("diego@example.com"), None),
        ],
    );
    let response = dispatch(&demo_app(&cognito), event, "r", deadline)
        .await
        .expect("response");
    let mut failed = failed_ids(&response);
    failed.sort();
    assert_eq!(failed, ["m0", "m1"]);
    assert_eq!(cognito.calls(), 0);
    // and an HTTP request near the deadline is answered 503 `deadline`.
    let response = dispatch(&demo_app(&cognito), event_http(), "r", deadline)
        .await
        .expect("response");
    let (status, body) = http_parts(&response);
    assert_eq!((status, body["error"].as_str()), (503, Some("deadline")));
}

fn event_http() -> serde_json::Value {
    event("http-api-v2.json")
}
