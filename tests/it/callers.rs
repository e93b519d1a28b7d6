//! Caller identities come only from the verifier that owns their namespace (issue 9, item 2):
//! `jwt:` from a JWT or Cognito user pool authorizer, `principal:` from a Lambda authorizer's
//! `principalId`, ARNs from IAM auth; never from a Lambda authorizer's free-form context.

use std::sync::Arc;

use cognito_reset::pipeline::App;
use cognito_reset::sources::dispatch;
use serde_json::{Value, json};

use crate::helpers::*;

const JWT_SUB: &str = "jwt:sub:7d8ca528-4931-4254-9273-ea5ee853f271";
const JWT_CLIENT: &str = "jwt:client:3vp1ml3vh2dq5p0a6ghj1j4o2c";
const IAM_ROLE: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice";
const PRINCIPAL: &str = "principal:portal-user-42";

/// A policy with one rule admitting exactly `callers` to the demo pool, for any user.
fn app_admitting(cognito: &Cognito, callers: &[&str]) -> Arc<App> {
    let policy = json!({
        "version": 1,
        "rules": [{"name": "only-these", "callers": callers, "userPools": [POOL], "users": ["*"]}]
    });
    app(config(&[("POLICY", &policy.to_string())]), cognito.client())
}

async fn send(app: &Arc<App>, event: Value) -> (u64, Value) {
    let response = dispatch(app, event, "req-1", far_deadline())
        .await
        .expect("an HTTP response");
    http_parts(&response)
}

#[tokio::test]
async fn lambda_authorizer_context_cannot_pass_for_jwt_or_iam_callers() {
    // Given a policy admitting only the JWT subject, client and IAM role that the spoofing
    // Lambda authorizer copied into its context
    let cognito = Cognito::with_users(demo_users());
    let app = app_admitting(&cognito, &[JWT_SUB, JWT_CLIENT, IAM_ROLE]);
    // when the request arrives through that Lambda authorizer
    let (status, body) = send(&app, event("http-api-v2-lambda-authorizer-spoof.json")).await;
    // then it is refused as a caller without a rule, before any Cognito call
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "no-rule-for-caller");
    assert_eq!(cognito.calls(), 0);
    assert!(cognito.reset_users().is_empty());
}

#[tokio::test]
async fn lambda_authorizer_principal_is_the_caller() {
    for sample in [
        "http-api-v2-lambda-authorizer.json",
        "http-api-v2-lambda-authorizer-spoof.json",
    ] {
        let cognito = Cognito::with_users(demo_users());
        let app = app_admitting(&cognito, &[PRINCIPAL]);
        let (status, body) = send(&app, event(sample)).await;
        assert_eq!(status, 200, "{sample}: {body}");
        assert_eq!(body["outcome"], "RESET", "{sample}");
        assert_eq!(cognito.reset_users(), ["diego-0000-uuid"], "{sample}");
    }
}

#[tokio::test]
async fn jwt_callers_come_from_the_http_api_jwt_authorizer_and_the_rest_cognito_authorizer() {
    for (sample, user) in [
        ("http-api-v2-jwt.json", "erin-0000-uuid"),
        ("rest-v1-cognito-authorizer.json", "erin-0000-uuid"),
    ] {
        for caller in [JWT_SUB, JWT_CLIENT] {
            let cognito = Cognito::with_users(demo_users());
            let app = app_admitting(&cognito, &[caller]);
            let (status, body) = send(&app, event(sample)).await;
            assert_eq!(status, 200, "{sample} as {caller}: {body}");
            assert_eq!(cognito.reset_users(), [user], "{sample} as {caller}");
        }
    }
}

#[tokio::test]
async fn a_verified_jwt_caller_is_not_a_lambda_principal() {
    // The JWT samples carry no principalId: a `principal:` rule does not admit them.
    for sample in ["http-api-v2-jwt.json", "rest-v1-cognito-authorizer.json"] {
        let cognito = Cognito::with_users(demo_users());
        let app = app_admitting(&cognito, &["principal:*"]);
        let (status, body) = send(&app, event(sample)).await;
        assert_eq!(status, 403, "{sample}: {body}");
        assert_eq!(body["error"], "no-rule-for-caller", "{sample}");
        assert_eq!(cognito.calls(), 0, "{sample}");
    }
}

#[tokio::test]
async fn rest_lambda_authorizer_context_named_claims_is_not_a_jwt() {
    // Given a REST API event whose Lambda authorizer returned principalId and a `claims` context
    let event = event("rest-v1-lambda-authorizer-spoof.json");
    // when the policy admits only the JWT identities
    let cognito = Cognito::with_users(demo_users());
    let app = app_admitting(&cognito, &[JWT_SUB, JWT_CLIENT]);
    let (status, body) = send(&app, event.clone()).await;
    // then the request is refused without calling Cognito
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "no-rule-for-caller");
    assert_eq!(cognito.calls(), 0);
    // and the same event is admitted by its real identity, the principal
    let cognito = Cognito::with_users(demo_users());
    let (status, body) = send(&app_admitting(&cognito, &[PRINCIPAL]), event).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn authorizer_samples_get_their_documented_answer_under_the_demo_policy() {
    // events/README.md: none of these callers is in policy/demo.json.
    for sample in [
        "http-api-v2-lambda-authorizer.json",
        "http-api-v2-lambda-authorizer-spoof.json",
        "rest-v1-cognito-authorizer.json",
        "rest-v1-lambda-authorizer-spoof.json",
    ] {
        let cognito = Cognito::with_users(demo_users());
        let (status, body) = send(&demo_app(&cognito), event(sample)).await;
        assert_eq!(status, 403, "{sample}: {body}");
        assert_eq!(body["error"], "no-rule-for-caller", "{sample}");
        assert_eq!(cognito.calls(), 0, "{sample}");
    }
}
