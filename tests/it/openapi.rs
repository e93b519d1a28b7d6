//! Answers of every status in openapi.yaml, from the handler itself (issue 9, item 8).
//!
//! The HTTP sample events and Cognito failures, including those moto cannot produce
//! (throttling, internal errors, misconfiguration, an unreachable Cognito, a deadline), go through
//! `cognito_reset::sources::dispatch` with a fake Cognito; the answers are written to
//! `target/tmp/openapi-answers.json`, which `make openapi-check` validates against openapi.yaml
//! (tests/openapi/openapi_check.py). This test checks that every documented status is there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError as E;
use aws_sdk_cognitoidentityprovider::types::error::{
    InternalErrorException, InvalidLambdaResponseException, InvalidParameterException,
    InvalidSmsRoleAccessPolicyException, LimitExceededException, NotAuthorizedException,
    ResourceNotFoundException, TooManyRequestsException, UserLambdaValidationException,
};
use aws_sdk_cognitoidentityprovider::{Client, Config};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::cognito as directory;
use cognito_reset::deadline::Deadline;
use cognito_reset::pipeline::App;
use cognito_reset::sources::dispatch;
use serde_json::{Map, Value, json};

use crate::helpers::*;

/// Every status openapi.yaml documents for POST /reset.
const DOCUMENTED: [u64; 13] = [
    200, 207, 400, 403, 404, 405, 409, 413, 415, 422, 429, 502, 503,
];

/// A Cognito failure of `AdminResetUserPassword`, named.
type Failure = (&'static str, fn() -> E);

/// Where `make openapi-check` reads the answers.
fn answers_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi-answers.json")
}

/// A Cognito that refuses every connection.
#[derive(Debug, Clone)]
struct Unreachable;

impl HttpConnector for Unreachable {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Err(ConnectorError::io("connection refused".into())))
    }
}

fn unreachable_app() -> Arc<App> {
    let settings = ClientSettings {
        timeout: Duration::from_secs(1),
        max_attempts: 1,
    };
    let http = http_client_fn(|_, _| SharedHttpConnector::new(Unreachable));
    let builder = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::for_tests())
        .http_client(http);
    let client = Client::from_conf(directory::configure(builder, settings).build());
    app(config(&[("POLICY", DEMO_POLICY)]), client)
}

/// The answer as the checker reads it: status, single-valued headers, body text.
fn recorded(name: &str, answer: &Value) -> Value {
    let mut headers = Map::new();
    if let Some(single) = answer["headers"].as_object() {
        headers.extend(single.clone());
    }
    if let Some(multi) = answer["multiValueHeaders"].as_object() {
        for (name, values) in multi {
            headers.insert(name.clone(), values[0].clone());
        }
    }
    json!({"name": name, "statusCode": answer["statusCode"], "headers": headers, "body": answer["body"]})
}

async fn answer(app: &Arc<App>, event: Value, deadline: Deadline) -> Value {
    dispatch(app, event, "req-openapi", deadline)
        .await
        .expect("an HTTP answer")
}

fn http_samples() -> Vec<String> {
    let root = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    for (dir, prefix) in [
        (root.clone(), ""),
        (format!("{root}/malformed"), "malformed/"),
    ] {
        for entry in std::fs::read_dir(&dir).expect("events dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.ends_with(".json") {
                let name = format!("{prefix}{name}");
                let sample = event(&name);
                if sample.get("Records").is_none() && sample.get("requestContext").is_some() {
                    names.push(name);
                }
            }
        }
    }
    names.sort();
    names
}

#[tokio::test]
async fn answers_of_every_documented_status_are_recorded_for_the_openapi_check() {
    let mut answers = Vec::new();
    // The sample events, with the demo users.
    for name in http_samples() {
        let cognito = Cognito::with_users(demo_users());
        let got = answer(&demo_app(&cognito), event(&name), far_deadline()).await;
        answers.push(recorded(&name, &got));
    }
    // Cognito failures moto does not produce, alone and in a batch.
    let failures: [Failure; 10] = [
        // Issue 25: Cognito's limits, and the pool's trigger refusals.
        ("delivery-limit", || {
            E::LimitExceededException(
                LimitExceededException::builder()
                    .message(crate::cognito::DAILY_EMAIL_LIMIT)
                    .build(),
            )
        }),
        ("attempt-limit", || {
            E::LimitExceededException(
                LimitExceededException::builder()
                    .message(crate::cognito::ATTEMPT_LIMIT)
                    .build(),
            )
        }),
        ("trigger-refused", || {
            E::UserLambdaValidationException(UserLambdaValidationException::builder().build())
        }),
        ("trigger-invalid-response", || {
            E::InvalidLambdaResponseException(InvalidLambdaResponseException::builder().build())
        }),
        ("throttled", || {
            E::TooManyRequestsException(TooManyRequestsException::builder().build())
        }),
        ("internal-error", || {
            E::InternalErrorException(InternalErrorException::builder().build())
        }),
        ("sms-role", || {
            E::InvalidSmsRoleAccessPolicyException(
                InvalidSmsRoleAccessPolicyException::builder().build(),
            )
        }),
        ("no-verified-contact", || {
            E::InvalidParameterException(InvalidParameterException::builder().build())
        }),
        ("not-authorized", || {
            E::NotAuthorizedException(NotAuthorizedException::builder().build())
        }),
        ("no-such-pool", || {
            E::ResourceNotFoundException(ResourceNotFoundException::builder().build())
        }),
    ];
    for (what, error) in failures {
        for sample in ["http-api-v2.json", "http-api-v2-batch.json"] {
            let cognito = Cognito::with_users(demo_users()).reset_fails(error);
            let got = answer(&demo_app(&cognito), event(sample), far_deadline()).await;
            answers.push(recorded(&format!("{sample} ({what})"), &got));
        }
    }
    // Cognito unreachable; the deadline already passed.
    for sample in ["http-api-v2.json", "http-api-v2-batch.json"] {
        let got = answer(&unreachable_app(), event(sample), far_deadline()).await;
        answers.push(recorded(&format!("{sample} (unreachable)"), &got));
        let cognito = Cognito::with_users(demo_users());
        let got = answer(
            &demo_app(&cognito),
            event(sample),
            Deadline(Instant::now().into()),
        )
        .await;
        answers.push(recorded(&format!("{sample} (deadline)"), &got));
    }

    // Issue 17: invited and unconfirmed users, sign-outs, a caller's budget.
    {
        use crate::helpdesk::{policy, request, throttled_sign_out, users};
        let with = |options: &str, cognito: &Cognito| {
            crate::helpers::app(
                crate::helpers::config(&[("POLICY", &policy(options))]),
                cognito.client(),
            )
        };
        let options = r#","invited":"resend","signOut":"allowed""#;
        let cognito = Cognito::with_users(users());
        for (what, body) in [
            ("invitation resent", request("ivy@example.com", json!({}))),
            (
                "signed out",
                request("diego@example.com", json!({"SignOut": true})),
            ),
        ] {
            let got = answer(&with(options, &cognito), body, far_deadline()).await;
            answers.push(recorded(what, &got));
        }
        let cognito = Cognito::with_users(users()).sign_out_fails(throttled_sign_out);
        let body = request("diego@example.com", json!({"SignOut": true}));
        let got = answer(&with(options, &cognito), body, far_deadline()).await;
        answers.push(recorded("sign-out failed", &got));
        let cognito = Cognito::with_users(users());
        for (what, body) in [
            ("invitation-pending", request("ivy@example.com", json!({}))),
            ("user-unconfirmed", request("ursula@example.com", json!({}))),
            (
                "sign-out-not-allowed",
                request("diego@example.com", json!({"signOut": true})),
            ),
        ] {
            let got = answer(&with("", &cognito), body, far_deadline()).await;
            answers.push(recorded(what, &got));
        }
        // Issue 25: a user of an external identity provider.
        let mut xavier = user("xavier", &["staff"]);
        xavier.status = aws_sdk_cognitoidentityprovider::types::UserStatusType::ExternalProvider;
        let mut with_external = users();
        with_external.push(xavier);
        let external = Cognito::with_users(with_external);
        let body = request("xavier@example.com", json!({}));
        let got = answer(&with("", &external), body, far_deadline()).await;
        answers.push(recorded("external-user", &got));
        // A budget of 1 and a batch of 3: one 200 and two 429.
        let table = crate::dynamodb::Table::new(crate::dynamodb::Mode::Normal);
        let app = crate::helpers::guarded_app_with_policy(
            &cognito,
            &table,
            &policy(r#","budget":{"resets":1,"perSeconds":3600}"#),
            300,
            false,
        );
        let batch = http_event_with_body(&json!([
            {"UserPoolId": POOL, "Username": "u1@example.com"},
            {"UserPoolId": POOL, "Username": "u2@example.com"},
        ]));
        let got = answer(&app, batch, far_deadline()).await;
        answers.push(recorded("budget exhausted (batch)", &got));
        let got = answer(&app, request("u3@example.com", json!({})), far_deadline()).await;
        answers.push(recorded("budget exhausted", &got));
    }

    // Issue 27: tickets (a rule that requires an INC ticket).
    {
        use crate::helpdesk::{policy, request, users};
        let cognito = Cognito::with_users(users());
        let app = crate::helpers::app(
            crate::helpers::config(&[(
                "POLICY",
                &policy(r#","ticket":{"required":true,"pattern":"INC[0-9]{7}"}"#),
            )]),
            cognito.client(),
        );
        for (what, extra) in [
            ("ticket-required", json!({})),
            ("ticket-invalid", json!({"Ticket": "INC-42"})),
            ("ticket accepted", json!({"ticket": "INC0012345"})),
        ] {
            let got = answer(&app, request("diego@example.com", extra), far_deadline()).await;
            answers.push(recorded(what, &got));
        }
    }

    let statuses: BTreeSet<u64> = answers
        .iter()
        .filter_map(|a| a["statusCode"].as_u64())
        .collect();
    assert_eq!(
        statuses,
        DOCUMENTED.into_iter().collect(),
        "every documented status, and no other"
    );
    let text = serde_json::to_string_pretty(&answers).expect("JSON");
    std::fs::write(answers_file(), text).expect("write the answers");
}
