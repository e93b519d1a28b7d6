//! Issue 17: invited users (`invited`), "sign out everywhere" (`signOut`, request `SignOut`) and
//! a reset budget per caller (`budget`), through the real pipeline over the fake Cognito and
//! the in-process guard table.

use std::sync::Arc;

use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
use aws_sdk_cognitoidentityprovider::operation::admin_user_global_sign_out::AdminUserGlobalSignOutError;
use aws_sdk_cognitoidentityprovider::types::UserStatusType;
use aws_sdk_cognitoidentityprovider::types::error::{
    InternalErrorException, TooManyRequestsException,
};
use cognito_reset::pipeline::App;
use cognito_reset::sources::dispatch;
use serde_json::{Value, json};

use crate::dynamodb::{Mode, Table};
use crate::helpers::*;

const PORTAL: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*";

/// One rule for the portal and the queue, over every user, with `options` added.
pub fn policy(options: &str) -> String {
    format!(
        r#"{{"version":1,"rules":[{{"name":"helpdesk","callers":["{PORTAL}","{QUEUE}"],"userPools":["{POOL}"],"users":["*"]{options}}}]}}"#
    )
}

fn unguarded(cognito: &Cognito, options: &str) -> Arc<App> {
    app(config(&[("POLICY", &policy(options))]), cognito.client())
}

fn guarded(cognito: &Cognito, table: &Table, options: &str, dry_run: bool) -> Arc<App> {
    guarded_app_with_policy(cognito, table, &policy(options), 300, dry_run)
}

/// The portal's HTTP request for `username`, with `extra` fields.
pub fn request(username: &str, extra: Value) -> Value {
    let mut body = json!({"UserPoolId": POOL, "Username": username});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    http_event_with_body(&body)
}

pub fn users() -> Vec<TestUser> {
    let mut ursula = user("ursula", &["staff"]);
    ursula.status = UserStatusType::Unconfirmed;
    let mut users = demo_users();
    users.extend([invited("ivy"), ursula]);
    users.extend((0..20).map(|i| user(&format!("u{i}"), &["staff"])));
    users
}

pub fn throttled_sign_out() -> AdminUserGlobalSignOutError {
    AdminUserGlobalSignOutError::TooManyRequestsException(
        TooManyRequestsException::builder().build(),
    )
}

fn broken_sign_out() -> AdminUserGlobalSignOutError {
    AdminUserGlobalSignOutError::InternalErrorException(InternalErrorException::builder().build())
}

// ---- invited and unconfirmed users -------------------------------------------------------------

#[tokio::test]
async fn an_invited_user_is_refused_by_default_without_a_cognito_write() {
    let cognito = Cognito::with_users(users());
    let (status, body, _) = send(
        &unguarded(&cognito, ""),
        request("ivy@example.com", json!({})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "invitation-pending");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("never signed in"),
        "{body}"
    );
    assert_eq!(cognito.reset.num_calls() + cognito.resend.num_calls(), 0);
}

#[tokio::test]
async fn an_invited_user_under_resend_gets_the_invitation_again_and_no_sign_out() {
    // Given a rule that resends invitations and always signs out
    let cognito = Cognito::with_users(users());
    let app = unguarded(&cognito, r#","invited":"resend","signOut":"always""#);
    // when the portal asks for the invited user
    let (status, body, _) = send(
        &app,
        request(
            "ivy@example.com",
            json!({"ClientMetadata": {"ticket": "INC-7"}}),
        ),
    )
    .await;
    // then the invitation is resent (not a password reset), and nobody is signed out: the
    // user never signed in
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "RESET");
    assert_eq!(body["action"], "resend-invitation");
    assert_eq!(body.get("signedOut"), None, "{body}");
    assert_eq!(cognito.resend.num_calls(), 1);
    assert_eq!(cognito.reset.num_calls(), 0);
    assert_eq!(cognito.sign_out.num_calls(), 0);
}

#[tokio::test]
async fn an_unconfirmed_user_is_refused_whatever_the_rule() {
    for options in ["", r#","invited":"resend""#] {
        let cognito = Cognito::with_users(users());
        let (status, body, _) = send(
            &unguarded(&cognito, options),
            request("ursula@example.com", json!({})),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (409, &json!("user-unconfirmed")),
            "{options}"
        );
        assert_eq!(cognito.reset.num_calls() + cognito.resend.num_calls(), 0);
    }
}

// ---- sign-out -------------------------------------------------------------------------------

#[tokio::test]
async fn a_sign_out_the_rule_does_not_allow_is_refused_before_any_write() {
    for field in ["SignOut", "signOut"] {
        let cognito = Cognito::with_users(users());
        let (status, body, _) = send(
            &unguarded(&cognito, ""),
            request("diego@example.com", json!({ field: true })),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "sign-out-not-allowed");
        assert_eq!(cognito.reset.num_calls() + cognito.sign_out.num_calls(), 0);
    }
}

#[tokio::test]
async fn each_sign_out_rule_value_signs_out_when_it_should() {
    // (rule's signOut, request's SignOut) -> signed out?
    for (rule, asked, expected) in [
        ("allowed", true, Some(true)),
        ("allowed", false, None),
        ("always", false, Some(true)),
        ("always", true, Some(true)),
        ("never", false, None),
    ] {
        let cognito = Cognito::with_users(users());
        let app = unguarded(&cognito, &format!(r#","signOut":"{rule}""#));
        let (status, body, _) = send(
            &app,
            request("diego@example.com", json!({"SignOut": asked})),
        )
        .await;
        assert_eq!(status, 200, "{rule} {asked}: {body}");
        assert_eq!(body["action"], "reset-password");
        assert_eq!(
            body.get("signedOut").and_then(Value::as_bool),
            expected,
            "{rule} {asked}"
        );
        assert_eq!(cognito.reset.num_calls(), 1);
        assert_eq!(
            cognito.sign_out.num_calls(),
            usize::from(expected.is_some()),
            "{rule} {asked}"
        );
    }
}

#[tokio::test]
async fn a_failed_sign_out_over_http_leaves_the_reset_standing_and_says_so() {
    for (error, code) in [
        (throttled_sign_out as fn() -> _, "throttled"),
        (broken_sign_out, "upstream-error"),
    ] {
        let cognito = Cognito::with_users(users()).sign_out_fails(error);
        let table = Table::new(Mode::Normal);
        let app = guarded(&cognito, &table, r#","signOut":"always""#, false);
        let (status, body, _) = send(&app, request("diego@example.com", json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "RESET");
        assert_eq!(body["signedOut"], false);
        assert_eq!(body["signOutError"], code);
        // one reset, never a second one
        assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
    }
}

async fn sqs(app: &Arc<App>, body: String) -> Vec<String> {
    let event = sqs_event(QUEUE, &[(body, None)]);
    let response = dispatch(app, event, "r", far_deadline())
        .await
        .expect("an SQS response");
    failed_ids(&response)
}

#[tokio::test]
async fn an_sqs_sign_out_that_may_pass_is_handed_back_and_its_redelivery_only_signs_out() {
    // Given a rule that always signs out, and a sign-out that is throttled once
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users()).sign_out_fails(throttled_sign_out);
    let app = guarded(&cognito, &table, r#","signOut":"always""#, false);
    // when the queue delivers a request
    let failed = sqs(&app, reset_body("erin@example.com")).await;
    // then the user is reset, and the record is handed back for its sign-out
    assert_eq!(failed, ["m0"]);
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
    let item = table
        .user_item(POOL, "erin-0000-uuid")
        .expect("a user item");
    assert_eq!(
        item.get("signOutPending")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("m0")
    );
    // when the same message comes back and Cognito signs out this time
    let healed = Cognito::with_users(users());
    let app = guarded(&healed, &table, r#","signOut":"always""#, false);
    let failed = sqs(&app, reset_body("erin@example.com")).await;
    // then only the sign-out was sent, and the record is done
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(healed.reset.num_calls(), 0);
    assert_eq!(healed.sign_out.num_calls(), 1);
}

#[tokio::test]
async fn an_sqs_sign_out_that_cannot_pass_or_has_no_guard_is_not_handed_back() {
    // A sign-out failure that may pass, without a guard to remember the reset: a redelivery
    // would reset again, so the record is done.
    let cognito = Cognito::with_users(users()).sign_out_fails(throttled_sign_out);
    let app = unguarded(&cognito, r#","signOut":"always""#);
    assert!(sqs(&app, reset_body("erin@example.com")).await.is_empty());
    assert_eq!(cognito.reset.num_calls(), 1);
    // Another message for the same user later, with the guard: the cooldown, not a sign-out.
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users()).sign_out_fails(broken_sign_out);
    let app = guarded(&cognito, &table, r#","signOut":"always""#, false);
    // upstream-error is RETRY class: handed back; a different message id is not this record
    assert_eq!(sqs(&app, reset_body("erin@example.com")).await, ["m0"]);
    let other = sqs_event(QUEUE, &[(reset_body("diego@example.com"), None)]);
    let _ = dispatch(&app, other, "r", far_deadline()).await;
    assert_eq!(cognito.reset.num_calls(), 2);
}

// ---- budgets ----------------------------------------------------------------------------------

const BUDGET_3: &str = r#","budget":{"resets":3,"perSeconds":3600}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_requests_get_exactly_the_budget() {
    // Given a budget of 3 resets an hour for the portal
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users());
    let app = guarded(&cognito, &table, BUDGET_3, false);
    // when 20 requests for 20 users arrive at once
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = Arc::clone(&app);
        tasks.spawn(async move {
            let event = request(&format!("u{i}@example.com"), json!({}));
            send(&app, event).await
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (status, body, response) = done.expect("task");
        if status == 429 {
            assert_eq!(body["error"], "caller-budget-exhausted");
            let retry_after: u64 = response["headers"]["retry-after"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=7200).contains(&retry_after), "{retry_after}");
        }
        statuses.push(status);
    }
    // then exactly 3 were reset, and the 17 others refused without a Cognito write
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        17,
        "{statuses:?}"
    );
    assert_eq!(cognito.reset.num_calls(), 3);
}

#[tokio::test]
async fn refusals_and_replays_do_not_spend_the_budget() {
    let one = r#","budget":{"resets":1,"perSeconds":3600}"#;
    let table = Table::new(Mode::Normal);
    let mut nemo = user("nemo", &["staff"]);
    nemo.reset_error = Some(no_verified_contact);
    let mut directory = users();
    directory.push(nemo);
    let cognito = Cognito::with_users(directory);
    let app = guarded(&cognito, &table, one, false);
    // A request the rule refuses (sign-out), one Cognito refuses (no verified contact) and one
    // for an unknown user...
    let (status, ..) = send(&app, request("u1@example.com", json!({"SignOut": true}))).await;
    assert_eq!(status, 403);
    let (status, body, _) = send(&app, request("nemo@example.com", json!({}))).await;
    assert_eq!((status, &body["error"]), (422, &json!("cannot-reset")));
    let (status, ..) = send(&app, request("nobody@example.com", json!({}))).await;
    assert_eq!(status, 404);
    // ...leave the budget whole: one reset passes, and its replay too
    let mut keyed = request("u2@example.com", json!({}));
    keyed["headers"]["idempotency-key"] = json!("k-1");
    let (status, body, _) = send(&app, keyed.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send(&app, keyed).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(true)), "{body}");
    // and the next reset is over it
    let (status, body, response) = send(&app, request("u3@example.com", json!({}))).await;
    assert_eq!(
        (status, &body["error"]),
        (429, &json!("caller-budget-exhausted"))
    );
    assert!(response["headers"]["retry-after"].is_string(), "{response}");
    assert_eq!(cognito.reset_users(), ["u2-0000-uuid"]);
}

#[tokio::test]
async fn a_refusal_for_the_budget_is_not_replayed_under_its_idempotency_key() {
    // The budget passes later, like a cooldown: a retry with the same key must run again.
    let one = r#","budget":{"resets":1,"perSeconds":3600}"#;
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users());
    let app = guarded(&cognito, &table, one, false);
    let (status, ..) = send(&app, request("u1@example.com", json!({}))).await;
    assert_eq!(status, 200);
    let mut keyed = request("u2@example.com", json!({}));
    keyed["headers"]["idempotency-key"] = json!("k-budget");
    let (status, body, _) = send(&app, keyed.clone()).await;
    assert_eq!(
        (status, &body["error"]),
        (429, &json!("caller-budget-exhausted"))
    );
    // The budget's item gone (its window over), the same key is a fresh request, not a replay.
    table
        .store
        .lock()
        .expect("store")
        .retain(|pk, _| !pk.starts_with("budget#"));
    let (status, body, _) = send(&app, keyed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.get("replayed"), None, "{body}");
}

#[tokio::test]
async fn a_budget_is_per_caller_identity() {
    let one = r#","budget":{"resets":1,"perSeconds":3600}"#;
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users());
    let app = guarded(&cognito, &table, one, false);
    let (status, ..) = send(&app, request("u1@example.com", json!({}))).await;
    assert_eq!(status, 200);
    // The queue is another caller: its own budget.
    assert!(sqs(&app, reset_body("u2@example.com")).await.is_empty());
    assert_eq!(cognito.reset.num_calls(), 2);
    // The portal's second reset is over its budget, from another session of the same role too.
    let mut bob = request("u3@example.com", json!({}));
    bob["requestContext"]["authorizer"]["iam"]["userArn"] =
        json!("arn:aws:sts::123456789012:assumed-role/helpdesk-portal/bob");
    let (status, body, _) = send(&app, bob).await;
    assert_eq!(
        (status, &body["error"]),
        (429, &json!("caller-budget-exhausted"))
    );
    assert_eq!(cognito.reset.num_calls(), 2);
}

#[tokio::test]
async fn retry_after_is_the_time_until_the_budget_admits_one_more() {
    // A budget of 2 per 600 s, both spent in the current window: the next window still holds
    // them as `before`, so one more is admitted when the window after it begins.
    let budget = r#","budget":{"resets":2,"perSeconds":600}"#;
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users());
    let app = guarded(&cognito, &table, budget, false);
    for i in 0..2 {
        let (status, ..) = send(&app, request(&format!("u{i}@example.com"), json!({}))).await;
        assert_eq!(status, 200);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let (status, _, response) = send(&app, request("u5@example.com", json!({}))).await;
    assert_eq!(status, 429);
    let retry_after: f64 = response["headers"]["retry-after"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    let window = (now / 600.0).floor();
    let expected = (window + 2.0) * 600.0 - now;
    assert!(
        (retry_after - expected).abs() <= 1.5,
        "Retry-After {retry_after}, expected {expected:.1}"
    );
}

#[tokio::test]
async fn a_dry_run_reads_the_budget_and_does_not_spend_it() {
    let one = r#","budget":{"resets":1,"perSeconds":3600}"#;
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users());
    // Dry run, twice: WOULD_RESET with the action, nothing written.
    let app = guarded(
        &cognito,
        &table,
        &format!(r#"{one},"invited":"resend""#),
        true,
    );
    for name in ["u1@example.com", "ivy@example.com"] {
        let (status, body, _) = send(&app, request(name, json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "WOULD_RESET");
    }
    let (_, body, _) = send(&app, request("ivy@example.com", json!({}))).await;
    assert_eq!(body["action"], "resend-invitation");
    assert_eq!(table.writes(), 0);
    // Spend it for real, then the dry run says it is exhausted.
    let real = guarded(&cognito, &table, one, false);
    let (status, ..) = send(&real, request("u2@example.com", json!({}))).await;
    assert_eq!(status, 200);
    let (status, body, _) = send(&app, request("u3@example.com", json!({}))).await;
    assert_eq!(
        (status, &body["error"]),
        (429, &json!("caller-budget-exhausted"))
    );
    assert_eq!(cognito.reset.num_calls(), 1);
}

#[test]
fn a_policy_with_a_budget_and_no_guard_table_does_not_start() {
    let vars = [("POLICY".to_owned(), policy(BUDGET_3))];
    let error = cognito_reset::config::Config::from_lookup(|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect_err("no guard table");
    let text = error.to_string();
    assert!(text.contains("rules[0].budget"), "{text}");
    assert!(text.contains("GUARD_TABLE"), "{text}");
}

#[tokio::test]
async fn a_cognito_throttle_gives_the_budget_spend_back() {
    fn throttled() -> AdminResetUserPasswordError {
        AdminResetUserPasswordError::TooManyRequestsException(
            TooManyRequestsException::builder().build(),
        )
    }
    let one = r#","budget":{"resets":1,"perSeconds":3600}"#;
    let table = Table::new(Mode::Normal);
    let cognito = Cognito::with_users(users()).reset_fails(throttled);
    let app = guarded(&cognito, &table, one, false);
    let (status, body, _) = send(&app, request("u1@example.com", json!({}))).await;
    assert_eq!((status, &body["error"]), (429, &json!("throttled")));
    // Nothing was sent: the budget still admits one.
    let cognito = Cognito::with_users(users());
    let app = guarded(&cognito, &table, one, false);
    let (status, body, _) = send(&app, request("u1@example.com", json!({}))).await;
    assert_eq!(status, 200, "{body}");
}

// ---- retry policy of the new operations ------------------------------------------------------

/// A rule for `AdminCreateUser` that answers `status` with `body` first, then succeeds.
fn resend_answers_first(status: u16, body: &str) -> aws_smithy_mocks::Rule {
    aws_smithy_mocks::mock!(aws_sdk_cognitoidentityprovider::Client::admin_create_user)
        .sequence()
        .http_status(status, Some(body.to_owned()))
        .output(|| {
            aws_sdk_cognitoidentityprovider::operation::admin_create_user::AdminCreateUserOutput::builder()
                .build()
        })
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_resent_invitation_is_retried_like_a_reset() {
    // (wire status, body, HTTP status, code, AdminCreateUser calls)
    let cases = [
        // Throttling proves nothing was sent: sent again, and it passes.
        (
            400,
            r#"{"__type":"TooManyRequestsException","message":"slow down"}"#,
            200,
            None,
            2,
        ),
        // A 5xx may follow an invitation that went out: final, never sent again by itself.
        (
            500,
            r#"{"__type":"InternalErrorException","message":"oops"}"#,
            502,
            Some("reset-unconfirmed"),
            1,
        ),
        (200, "this is not JSON {", 502, Some("reset-unconfirmed"), 1),
    ];
    for (wire, body, status, code, calls) in cases {
        let mut cognito = Cognito::with_users(users());
        cognito.resend = resend_answers_first(wire, body);
        let app = app(
            config(&[
                ("POLICY", &policy(r#","invited":"resend""#)),
                ("COGNITO_MAX_ATTEMPTS", "3"),
            ]),
            cognito.client(),
        );
        let (got, answer, _) = send(&app, request("ivy@example.com", json!({}))).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, code),
            "{body}: {answer}"
        );
        assert_eq!(cognito.resend.num_calls(), calls, "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_sign_out_is_retried_like_a_lookup() {
    // AdminUserGlobalSignOut is idempotent: a 5xx is sent again, and the reset is not.
    let mut cognito = Cognito::with_users(users());
    cognito.sign_out =
        aws_smithy_mocks::mock!(aws_sdk_cognitoidentityprovider::Client::admin_user_global_sign_out)
            .sequence()
            .http_status(
                500,
                Some(r#"{"__type":"InternalErrorException","message":"oops"}"#.to_owned()),
            )
            .output(|| {
                aws_sdk_cognitoidentityprovider::operation::admin_user_global_sign_out::AdminUserGlobalSignOutOutput::builder()
                    .build()
            })
            .build();
    let app = app(
        config(&[
            ("POLICY", &policy(r#","signOut":"always""#)),
            ("COGNITO_MAX_ATTEMPTS", "3"),
        ]),
        cognito.client(),
    );
    let (status, body, _) = send(&app, request("diego@example.com", json!({}))).await;
    assert_eq!((status, &body["signedOut"]), (200, &json!(true)), "{body}");
    assert_eq!(cognito.sign_out.num_calls(), 2);
    assert_eq!(cognito.reset.num_calls(), 1);
}
