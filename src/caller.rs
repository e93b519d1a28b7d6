//! Who is asking, derived only from what AWS itself put in the event.
//!
//! Identities come from the request context that API Gateway, Lambda function URLs and SQS fill
//! in after authenticating the caller; headers and body fields never grant an identity.
//!
//! | source | identities |
//! |---|---|
//! | IAM (SigV4) auth | the principal ARN (`requestContext.identity.userArn` on REST APIs, `requestContext.authorizer.iam.userArn` on HTTP APIs and function URLs) |
//! | JWT / Cognito authorizer | `jwt:sub:<sub>` and `jwt:client:<client_id>` from the verified claims |
//! | Lambda authorizer | `principal:<principalId>` |
//! | SQS | the queue ARN (`eventSourceARN`) |
//!
//! A request with none of these is [`Caller::Anonymous`].

use std::collections::HashMap;

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

fn string_field<'a>(fields: &'a HashMap<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

/// Identities carried by an API Gateway authorizer object (JWT, IAM or Lambda).
fn from_authorizer(ids: &mut Identities, authorizer: &ApiGatewayRequestAuthorizer) {
    if let Some(iam) = &authorizer.iam {
        ids.push_prefixed("", iam.user_arn.as_deref());
    }
    if let Some(jwt) = &authorizer.jwt {
        ids.push_jwt_claims(
            jwt.claims.get("sub").map(String::as_str),
            jwt.claims.get("client_id").map(String::as_str),
        );
    }
    // REST APIs put Cognito authorizer claims and Lambda authorizer output in these fields;
    // HTTP APIs put a Lambda authorizer's context here.
    if let Some(Value::Object(claims)) = authorizer.fields.get("claims") {
        ids.push_jwt_claims(
            claims.get("sub").and_then(Value::as_str),
            claims.get("client_id").and_then(Value::as_str),
        );
    }
    ids.push_prefixed(
        "principal:",
        string_field(&authorizer.fields, "principalId"),
    );
}

/// The caller of an API Gateway REST API (payload v1) or ALB-compatible v1 event.
pub fn from_rest(event: &ApiGatewayProxyRequest) -> Caller {
    let mut ids = Identities::default();
    ids.push_prefixed("", event.request_context.identity.user_arn.as_deref());
    from_authorizer(&mut ids, &event.request_context.authorizer);
    ids.into_caller()
}

/// The caller of an HTTP API (payload v2) or Lambda function URL event.
pub fn from_http_v2(event: &ApiGatewayV2httpRequest) -> Caller {
    let mut ids = Identities::default();
    if let Some(authorizer) = &event.request_context.authorizer {
        from_authorizer(&mut ids, authorizer);
    }
    ids.into_caller()
}

/// The caller of an SQS record: its queue.
pub fn from_queue(event_source_arn: Option<&str>) -> Caller {
    let mut ids = Identities::default();
    ids.push_prefixed("", event_source_arn);
    ids.into_caller()
}

/// The identities as one string for the audit log.
pub fn describe(caller: &Caller) -> String {
    match caller {
        Caller::Anonymous => "anonymous".to_owned(),
        Caller::Identified(ids) => ids.join(","),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn rest_lambda_and_cognito_authorizers_give_identities() {
        let mut event = v1(include_str!("../events/rest-v1.json"));
        event.request_context.identity.user_arn = None;
        event.request_context.authorizer.fields = HashMap::from([
            ("principalId".to_owned(), Value::from("portal-user-42")),
            (
                "claims".to_owned(),
                serde_json::json!({"sub": "abc", "client_id": "client1"}),
            ),
        ]);
        assert_eq!(
            from_rest(&event),
            Caller::Identified(vec![
                "jwt:sub:abc".into(),
                "jwt:client:client1".into(),
                "principal:portal-user-42".into()
            ])
        );
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
}
