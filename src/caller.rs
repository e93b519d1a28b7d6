//! Who is asking, derived only from what AWS itself put in the event.
//!
//! Identities come from the request context that API Gateway, Lambda function URLs and SQS fill
//! in after authenticating the caller; headers and body fields never grant an identity.
//!
//! | source | identities |
//! |---|---|
//! | IAM (SigV4) auth | the principal ARN (`requestContext.identity.userArn` on REST APIs, `requestContext.authorizer.iam.userArn` on HTTP APIs and function URLs) |
//! | HTTP API JWT authorizer | `jwt:sub:<sub>` and `jwt:client:<client_id>` from `requestContext.authorizer.jwt.claims` |
//! | REST API Cognito user pool authorizer | the same, from `requestContext.authorizer.claims` |
//! | Lambda authorizer | `principal:<principalId>` (`requestContext.authorizer.principalId` on REST APIs, `requestContext.authorizer.lambda.principalId` on HTTP APIs) |
//! | SQS | the queue ARN (`eventSourceARN`) |
//!
//! Each namespace comes only from the verifier that owns it: nothing else a Lambda authorizer
//! returns (its free-form context, even a key named `claims`) becomes an identity, so a Lambda
//! authorizer can never mint a `jwt:` identity. A request with none of these is
//! [`Caller::Anonymous`].

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayRequestAuthorizer, ApiGatewayV2httpRequest,
};
use serde_json::Value;

use crate::policy::Caller;

/// Collects identities, skipping empty values and duplicates, preserving order.
#[derive(Default)]
struct Identities(Vec<String>);

impl Identities {
    fn push(&mut self, identity: String) {
        if !identity.is_empty() && !self.0.contains(&identity) {
            self.0.push(identity);
        }
    }

    fn push_prefixed(&mut self, prefix: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.push(format!("{prefix}{value}"));
        }
    }

    fn push_jwt_claims(&mut self, sub: Option<&str>, client_id: Option<&str>) {
        self.push_prefixed("jwt:sub:", sub);
        self.push_prefixed("jwt:client:", client_id);
    }

    fn into_caller(self) -> Caller {
        if self.0.is_empty() {
            Caller::Anonymous
        } else {
            Caller::Identified(self.0)
        }
    }
}

/// The principal ARN of IAM (SigV4) auth on an HTTP API or function URL.
fn from_iam(ids: &mut Identities, authorizer: &ApiGatewayRequestAuthorizer) {
    if let Some(iam) = &authorizer.iam {
        ids.push_prefixed("", iam.user_arn.as_deref());
    }
}

/// Claims verified by API Gateway itself: an HTTP API JWT authorizer (`authorizer.jwt.claims`).
fn from_jwt_authorizer(ids: &mut Identities, authorizer: &ApiGatewayRequestAuthorizer) {
    if let Some(jwt) = &authorizer.jwt {
        ids.push_jwt_claims(
            jwt.claims.get("sub").map(String::as_str),
            jwt.claims.get("client_id").map(String::as_str),
        );
    }
}

/// The caller of an API Gateway REST API (payload v1) event.
///
/// On payload v1 `requestContext.authorizer` is one flat object, filled by whichever authorizer
/// ran:
/// - a Cognito user pool authorizer (or an HTTP API JWT authorizer on payload 1.0) puts the
///   verified token's claims in `claims`: `jwt:sub:` and `jwt:client:`;
/// - a Lambda authorizer puts its `principalId` next to its context's keys: `principal:`.
///
/// A Lambda authorizer's output always carries `principalId`, so when it is present (and not
/// `null`) the object came from a Lambda authorizer and nothing else in it is read: a context key
/// named `claims` never mints a `jwt:` identity. (REST API authorizer contexts cannot hold
/// objects at all; this holds for payload 1.0 events from any source.)
pub fn from_rest(event: &ApiGatewayProxyRequest) -> Caller {
    let mut ids = Identities::default();
    ids.push_prefixed("", event.request_context.identity.user_arn.as_deref());
    let fields = &event.request_context.authorizer.fields;
    match fields.get("principalId") {
        Some(principal) if !principal.is_null() => {
            ids.push_prefixed("principal:", principal.as_str())
        }
        _ => {
            if let Some(Value::Object(claims)) = fields.get("claims") {
                ids.push_jwt_claims(
                    claims.get("sub").and_then(Value::as_str),
                    claims.get("client_id").and_then(Value::as_str),
                );
            }
        }
    }
    ids.into_caller()
}

/// The caller of an HTTP API (payload v2) or Lambda function URL event.
///
/// IAM auth gives `authorizer.iam.userArn`, a JWT authorizer `authorizer.jwt.claims`. A Lambda
/// authorizer's output arrives as `authorizer.lambda` (aws_lambda_events' `fields`): a
/// free-form context the authorizer chose, of which only `principalId` is read.
pub fn from_http_v2(event: &ApiGatewayV2httpRequest) -> Caller {
    let mut ids = Identities::default();
    if let Some(authorizer) = &event.request_context.authorizer {
        from_iam(&mut ids, authorizer);
        from_jwt_authorizer(&mut ids, authorizer);
        ids.push_prefixed(
            "principal:",
            authorizer.fields.get("principalId").and_then(Value::as_str),
        );
    }
    ids.into_caller()
}

/// The caller of an SQS record: its queue.
pub fn from_queue(event_source_arn: Option<&str>) -> Caller {
    let mut ids = Identities::default();
    ids.push_prefixed("", event_source_arn);
    ids.into_caller()
}

/// Who may read a queued request's kept answer with `GET /requests/{id}`: the principal that
/// sent the message (SQS's `SenderId`, an IAM user's id or `<role id>:<session name>`), with an
/// assumed role's session name left out, so any session of the sending role may read it. The
/// same principal over HTTP is [`principal_reader`] of API Gateway's caller id. `iam-id:` is no
/// identity's prefix (ARNs, `jwt:`, `principal:`), so no caller's own answers are under it.
pub fn sender_reader(sender_id: Option<&str>) -> Option<String> {
    let id = sender_id?.split(':').next()?.trim();
    (!id.is_empty()).then(|| format!("iam-id:{id}"))
}

/// The reader an HTTP caller is for answers kept by [`sender_reader`]: its IAM principal id
/// (`requestContext.identity.caller` on REST APIs, `authorizer.iam.callerId` on HTTP APIs and
/// function URLs), which only IAM (SigV4) auth fills in.
pub fn principal_reader(caller_id: Option<&str>) -> Option<String> {
    sender_reader(caller_id)
}

/// The identities as one string for the audit log.
pub fn describe(caller: &Caller) -> String {
    match caller {
        Caller::Anonymous => "anonymous".to_owned(),
        Caller::Identified(ids) => ids.join(","),
    }
}

/// The identities a rule's budget is counted for: as [`describe`], with the session name of an
/// assumed-role ARN left out (`arn:aws:sts::123456789012:assumed-role/portal/alice` counts as
/// `…:assumed-role/portal`), so that a role cannot escape its budget by naming new sessions.
pub fn budget_identity(caller: &Caller) -> String {
    match caller {
        Caller::Anonymous => "anonymous".to_owned(),
        Caller::Identified(ids) => {
            let mut folded: Vec<&str> = ids.iter().map(|id| without_session(id)).collect();
            folded.dedup();
            folded.join(",")
        }
    }
}

/// An assumed-role ARN without its session name; any other identity as it is.
fn without_session(id: &str) -> &str {
    match id.split_once(":assumed-role/") {
        Some((_, rest)) if rest.contains('/') => match id.rfind('/') {
            Some(cut) => &id[..cut],
            None => id,
        },
        _ => id,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn v2(json: &str) -> ApiGatewayV2httpRequest {
        serde_json::from_str(json).unwrap()
    }

    fn v1(json: &str) -> ApiGatewayProxyRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn http_api_iam_caller_is_the_principal_arn() {
        let event = v2(include_str!("../events/http-api-v2.json"));
        assert_eq!(
            from_http_v2(&event),
            Caller::Identified(vec![
                "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice".into()
            ])
        );
    }

    #[test]
    fn function_url_iam_caller_is_the_principal_arn() {
        let event = v2(include_str!("../events/function-url.json"));
        assert!(
            matches!(from_http_v2(&event), Caller::Identified(ids) if ids[0].contains("helpdesk-portal"))
        );
    }

    #[test]
    fn rest_iam_caller_is_the_principal_arn() {
        let event = v1(include_str!("../events/rest-v1.json"));
        assert_eq!(
            from_rest(&event),
            Caller::Identified(vec![
                "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice".into()
            ])
        );
    }

    #[test]
    fn jwt_caller_is_sub_and_client() {
        let event = v2(include_str!("../events/http-api-v2-jwt.json"));
        assert_eq!(
            from_http_v2(&event),
            Caller::Identified(vec![
                "jwt:sub:7d8ca528-4931-4254-9273-ea5ee853f271".into(),
                "jwt:client:3vp1ml3vh2dq5p0a6ghj1j4o2c".into(),
            ])
        );
    }

    fn rest_with_authorizer(authorizer: Value) -> ApiGatewayProxyRequest {
        let mut event = v1(include_str!("../events/rest-v1.json"));
        event.request_context.identity.user_arn = None;
        event.request_context.authorizer.fields =
            serde_json::from_value::<HashMap<String, Value>>(authorizer).unwrap();
        event
    }

    #[test]
    fn rest_cognito_authorizer_claims_give_jwt_identities() {
        let event = v1(include_str!("../events/rest-v1-cognito-authorizer.json"));
        assert_eq!(
            from_rest(&event),
            Caller::Identified(vec![
                "jwt:sub:7d8ca528-4931-4254-9273-ea5ee853f271".into(),
                "jwt:client:3vp1ml3vh2dq5p0a6ghj1j4o2c".into(),
            ])
        );
    }

    #[test]
    fn rest_lambda_authorizer_gives_only_its_principal() {
        // A REST Lambda authorizer's context keys sit next to its principalId; a key named
        // `claims` is context, not verified claims.
        let event = rest_with_authorizer(serde_json::json!({
            "principalId": "portal-user-42",
            "integrationLatency": 12,
            "claims": {"sub": "abc", "client_id": "client1"},
            "sub": "abc",
            "userArn": "arn:aws:iam::123456789012:root"
        }));
        assert_eq!(
            from_rest(&event),
            Caller::Identified(vec!["principal:portal-user-42".into()])
        );
    }

    #[test]
    fn rest_cognito_claims_with_a_null_principal_are_still_claims() {
        let event = rest_with_authorizer(serde_json::json!({
            "principalId": null,
            "claims": {"sub": "abc", "client_id": "client1"}
        }));
        assert_eq!(
            from_rest(&event),
            Caller::Identified(vec!["jwt:sub:abc".into(), "jwt:client:client1".into()])
        );
    }

    #[test]
    fn rest_lambda_principal_that_is_not_a_string_gives_nothing_else() {
        let event = rest_with_authorizer(serde_json::json!({
            "principalId": 42,
            "claims": {"sub": "abc"}
        }));
        assert_eq!(from_rest(&event), Caller::Anonymous);
    }

    #[test]
    fn rest_claims_that_are_not_an_object_of_strings_give_nothing() {
        for claims in [
            serde_json::json!("sub=abc"),
            serde_json::json!({"sub": 42, "client_id": ["c"]}),
            serde_json::json!({"sub": ""}),
        ] {
            let event = rest_with_authorizer(serde_json::json!({ "claims": claims }));
            assert_eq!(from_rest(&event), Caller::Anonymous, "{claims}");
        }
    }

    #[test]
    fn http_api_lambda_authorizer_gives_only_its_principal() {
        let event = v2(include_str!("../events/http-api-v2-lambda-authorizer.json"));
        assert_eq!(
            from_http_v2(&event),
            Caller::Identified(vec!["principal:portal-user-42".into()])
        );
    }

    #[test]
    fn http_api_lambda_authorizer_context_cannot_mint_a_jwt_identity() {
        // The spoof of issue 9: a Lambda authorizer's context holding JWT-looking claims.
        let event = v2(include_str!(
            "../events/http-api-v2-lambda-authorizer-spoof.json"
        ));
        let caller = from_http_v2(&event);
        assert_eq!(
            caller,
            Caller::Identified(vec!["principal:portal-user-42".into()])
        );
    }

    #[test]
    fn http_api_lambda_authorizer_without_principal_is_anonymous() {
        let mut event = v2(include_str!(
            "../events/http-api-v2-lambda-authorizer-spoof.json"
        ));
        let authorizer = event.request_context.authorizer.as_mut().unwrap();
        authorizer.fields.remove("principalId");
        authorizer.fields.insert(
            "iam".into(),
            serde_json::json!({"userArn": "arn:aws:iam::123456789012:root"}),
        );
        authorizer
            .fields
            .insert("jwt".into(), serde_json::json!({"claims": {"sub": "abc"}}));
        assert_eq!(from_http_v2(&event), Caller::Anonymous);
    }

    #[test]
    fn http_api_principal_that_is_not_a_string_gives_nothing() {
        let mut event = v2(include_str!("../events/http-api-v2-lambda-authorizer.json"));
        let authorizer = event.request_context.authorizer.as_mut().unwrap();
        authorizer
            .fields
            .insert("principalId".into(), serde_json::json!({"id": "x"}));
        assert_eq!(from_http_v2(&event), Caller::Anonymous);
    }

    #[test]
    fn no_authorizer_is_anonymous_and_headers_grant_nothing() {
        let mut event = v2(include_str!("../events/http-api-v2.json"));
        event.request_context.authorizer = None;
        event.headers.insert(
            "x-amzn-principal",
            "arn:aws:iam::123456789012:root".parse().unwrap(),
        );
        assert_eq!(from_http_v2(&event), Caller::Anonymous);
    }

    #[test]
    fn queue_caller_is_the_queue_arn() {
        assert_eq!(
            from_queue(Some("arn:aws:sqs:us-west-2:123456789012:q")),
            Caller::Identified(vec!["arn:aws:sqs:us-west-2:123456789012:q".into()])
        );
        assert_eq!(from_queue(None), Caller::Anonymous);
        assert_eq!(from_queue(Some("")), Caller::Anonymous);
    }

    #[test]
    fn a_budget_is_per_role_whatever_the_session_name() {
        let session = |name: &str| {
            Caller::Identified(vec![format!(
                "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/{name}"
            )])
        };
        assert_eq!(
            budget_identity(&session("alice")),
            budget_identity(&session("bob"))
        );
        assert_eq!(
            budget_identity(&session("alice")),
            "arn:aws:sts::123456789012:assumed-role/helpdesk-portal"
        );
        let queue = Caller::Identified(vec!["arn:aws:sqs:us-west-2:1:q".into()]);
        assert_eq!(budget_identity(&queue), "arn:aws:sqs:us-west-2:1:q");
        let jwt = Caller::Identified(vec!["jwt:sub:abc".into(), "jwt:client:portal".into()]);
        assert_eq!(budget_identity(&jwt), "jwt:sub:abc,jwt:client:portal");
    }

    #[test]
    fn a_sender_reads_as_its_role_whatever_the_session_and_only_in_its_own_namespace() {
        let portal = sender_reader(Some("AROAEXAMPLEPORTAL:alice"));
        assert_eq!(portal.as_deref(), Some("iam-id:AROAEXAMPLEPORTAL"));
        assert_eq!(portal, principal_reader(Some("AROAEXAMPLEPORTAL:bob")));
        assert_eq!(
            sender_reader(Some("AIDAEXAMPLEUSER")).as_deref(),
            Some("iam-id:AIDAEXAMPLEUSER")
        );
        assert_ne!(portal, principal_reader(Some("AROAOTHERROLE:alice")));
        for nothing in [None, Some(""), Some(":alice"), Some(" ")] {
            assert_eq!(sender_reader(nothing), None, "{nothing:?}");
        }
    }
}
