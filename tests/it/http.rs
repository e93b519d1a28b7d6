//! HTTP sources: one request, batches, caller identities, user resolution, dry run.

use cognito_reset::sources::dispatch;
use serde_json::json;

use crate::helpers::*;

const PORTAL_POLICY: &str = r#"{"version":1,"rules":[{"name":"portal","callers":["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],"userPools":["us-west-2_*"],"users":["*"]}]}"#;

#[tokio::test]
async fn allowed_request_resets_the_canonical_user_and_answers_200() {
    // Given the demo policy and users, when the portal asks to reset diego by email
    let cognito = Cognito::with_users(demo_users());
    let (status, body, response) = send(&demo_app(&cognito), event("http-api-v2.json")).await;
    // then diego is reset once, by canonical username, with the ClientMetadata passed on
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"outcome": "RESET", "userPoolId": POOL, "username": "diego-0000-uuid", "action": "reset-password", "requestId": "req-1"})
    );
    assert_eq!(response["headers"]["content-type"], "application/json");
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
    let metadata = cognito.reset_metadata()[0]
        .clone()
        .expect("metadata passed");
    assert_eq!(metadata["ticket"], "INC-1234");
}

#[tokio::test]
async fn caller_without_a_rule_is_refused_without_calling_cognito() {
    let cognito = Cognito::with_users(demo_users());
    // The JWT caller of this sample is not in the demo policy.
    let (status, body, _) = send(&demo_app(&cognito), event("http-api-v2-jwt.json")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "no-rule-for-caller");
    assert_eq!(cognito.calls(), 0, "no Cognito call may be made");
}

#[tokio::test]
async fn anonymous_caller_is_refused_without_calling_cognito() {
    let cognito = Cognito::with_users(demo_users());
    let mut event = event("http-api-v2.json");
    event["requestContext"]
        .as_object_mut()
        .expect("requestContext")
        .remove("authorizer");
    // A header claiming an identity grants nothing.
    event["headers"]["x-caller"] =
        json!("arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice");
    let (status, body, _) = send(&demo_app(&cognito), event).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("no-rule-for-caller"))
    );
    assert_eq!(cognito.calls(), 0);
}

#[tokio::test]
async fn pool_without_a_rule_is_refused_without_calling_cognito() {
    let cognito = Cognito::with_users(demo_users());
    let other = "us-west-2_2f998a3be4a521a9ccaf1f58b65d71c475bcf4bd57df8";
    let event = http_event_with_body(&json!({"UserPoolId": other, "Username": "olga@example.com"}));
    let (status, body, _) = send(&demo_app(&cognito), event).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("pool-not-allowed"))
    );
    assert_eq!(cognito.calls(), 0);
}

#[tokio::test]
async fn alias_case_variant_and_sub_are_judged_as_the_canonical_user() {
    let cognito = Cognito::with_users(demo_users());
    let app = demo_app(&cognito);
    // admin@example.com is denied by name: every way of naming that user must be denied.
    for name in [
        "admin@example.com",
        "ADMIN@Example.COM",
        "admin-0000-uuid",
        "ADMIN-0000-UUID",
    ] {
        let (status, body, _) = send(
            &app,
            http_event_with_body(&json!({"UserPoolId": POOL, "Username": name})),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("denied-user")),
            "{name}"
        );
    }
    // and an allowed user named by a case variant is reset under the canonical name.
    let (status, body, _) = send(
        &app,
        http_event_with_body(&json!({"UserPoolId": POOL, "Username": "DIEGO@example.com"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["username"], "diego-0000-uuid");
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
}

#[tokio::test]
async fn batch_answers_207_with_each_item_as_if_sent_alone() {
    let cognito = Cognito::with_users(demo_users());
    let (status, body, _) = send(&demo_app(&cognito), event("http-api-v2-batch.json")).await;
    assert_eq!(status, 207);
    let results = body["results"].as_array().expect("results");
    let got: Vec<(u64, u64, &str)> = results
        .iter()
        .map(|r| {
            let code = r["outcome"].as_str().or(r["error"].as_str()).unwrap_or("?");
            (
                r["index"].as_u64().unwrap_or(99),
                r["status"].as_u64().unwrap_or(0),
                code,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, 200, "RESET"),
            (1, 403, "denied-user"),
            (2, 403, "denied-group"),
            (3, 403, "user-not-allowed"),
            // ghost does not exist, and no rule of this caller could admit a user without
            // groups: told exactly what an existing, not-admitted user is told
            (4, 403, "user-not-allowed"),
            (5, 409, "user-disabled"),
            (6, 422, "cannot-reset"),
            (7, 403, "pool-not-allowed"),
        ]
    );
    assert_eq!(results[0]["username"], "diego-0000-uuid");
    assert_eq!(
        cognito.reset_users(),
        ["diego-0000-uuid"],
        "only the allowed user is reset"
    );
}

#[tokio::test]
async fn dry_run_answers_would_reset_without_resetting() {
    let cognito = Cognito::with_users(demo_users());
    let app = app(
        config(&[("POLICY", DEMO_POLICY), ("DRY_RUN", "true")]),
        cognito.client(),
    );
    let (status, body, _) = send(&app, event("http-api-v2.json")).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("WOULD_RESET"))
    );
    assert_eq!(cognito.reset.num_calls(), 0);
    // Denials are still denials in dry run.
    let (status, _, _) = send(
        &app,
        http_event_with_body(&json!({"UserPoolId": POOL, "Username": "admin@example.com"})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn default_pool_is_used_when_the_request_names_none() {
    let cognito = Cognito::with_users(demo_users());
    let app = app(
        config(&[("POLICY", DEMO_POLICY), ("DEFAULT_USER_POOL_ID", POOL)]),
        cognito.client(),
    );
    let (status, body, _) = send(
        &app,
        http_event_with_body(&json!({"username": "diego@example.com"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["userPoolId"], POOL);
}

#[tokio::test]
async fn missing_pool_without_default_is_invalid() {
    let cognito = Cognito::with_users(demo_users());
    let (status, body, _) = send(
        &demo_app(&cognito),
        http_event_with_body(&json!({"Username": "diego@example.com"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid-request"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("UserPoolId"),
        "{body}"
    );
    assert_eq!(cognito.calls(), 0);
}

#[tokio::test]
async fn every_http_integration_shape_is_answered_in_its_own_format() {
    for (sample, expected_status) in [
        ("rest-v1.json", 200),
        ("function-url.json", 200),
        ("http-api-v2-base64.json", 200),
        // ALB carries no caller identity: anonymous, and the demo policy admits no anonymous caller.
        ("alb.json", 403),
    ] {
        let cognito = Cognito::with_users(demo_users());
        let (status, body, response) = send(&demo_app(&cognito), event(sample)).await;
        assert_eq!(status, expected_status, "{sample}: {body}");
        if sample == "alb.json" {
            assert_eq!(response["statusDescription"], "403 Forbidden");
            assert_eq!(body["error"], "no-rule-for-caller");
        } else {
            assert_eq!(body["username"], "diego-0000-uuid", "{sample}");
        }
    }
}

#[tokio::test]
async fn alb_with_multi_value_headers_gets_multi_value_headers_back() {
    let cognito = Cognito::with_users(demo_users());
    let mut event = event("alb.json");
    event["multiValueHeaders"] = json!({"content-type": ["application/json"]});
    let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(
        response["multiValueHeaders"]["content-type"],
        json!(["application/json"])
    );
    assert!(response.get("headers").is_none());
}

#[tokio::test]
async fn policy_with_any_user_allows_a_portal_reset() {
    let cognito = Cognito::with_users(demo_users());
    let app = app(config(&[("POLICY", PORTAL_POLICY)]), cognito.client());
    let (status, _, _) = send(&app, event("http-api-v2.json")).await;
    assert_eq!(status, 200);
    // No group in the policy: groups are never fetched.
    assert_eq!(cognito.list_groups.num_calls(), 0);
}
