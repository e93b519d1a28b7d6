//! Cognito failures: every row of the outcome table, SDK retries, timeouts, concurrency.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cognitoidentityprovider::error::ErrorMetadata;
use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::{
    AdminResetUserPasswordError as E, AdminResetUserPasswordOutput,
};
use aws_sdk_cognitoidentityprovider::types::error::*;
use aws_sdk_cognitoidentityprovider::{Client, Config};
use aws_smithy_mocks::mock;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::cognito as directory;
use cognito_reset::deadline::Deadline;
use cognito_reset::sources::dispatch;
use serde_json::Value;

use crate::helpers::*;

/// Cognito's message for a pool past its default sender's daily email limit (as quoted in issue 25).
pub(crate) const DAILY_EMAIL_LIMIT: &str = "Exceeded daily email limit for the operation or the account. If a higher limit is required, please configure your user pool to use your own Amazon SES configuration for sending email.";
/// Cognito's message for a user past its limit of reset attempts.
pub(crate) const ATTEMPT_LIMIT: &str = "Attempt limit exceeded, please try after some time.";

/// Every Cognito failure of `AdminResetUserPassword`, with the HTTP status and code it must
/// produce and whether an SQS record with it is handed back for retry.
/// (name, error, HTTP status, code, retried over SQS)
type Row = (&'static str, fn() -> E, u64, &'static str, bool);

fn table() -> Vec<Row> {
    vec![
        (
            "UserNotFound",
            || E::UserNotFoundException(UserNotFoundException::builder().build()),
            404,
            "user-not-found",
            false,
        ),
        (
            "ResourceNotFound",
            || E::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
            404,
            "pool-not-found",
            false,
        ),
        (
            "NotAuthorized",
            || E::NotAuthorizedException(NotAuthorizedException::builder().build()),
            409,
            "not-resettable",
            false,
        ),
        (
            "InvalidParameter",
            || E::InvalidParameterException(InvalidParameterException::builder().build()),
            422,
            "cannot-reset",
            false,
        ),
        (
            "TooManyRequests",
            || E::TooManyRequestsException(TooManyRequestsException::builder().build()),
            429,
            "throttled",
            true,
        ),
        (
            "LimitExceeded",
            || E::LimitExceededException(LimitExceededException::builder().build()),
            429,
            "throttled",
            true,
        ),
        (
            "LimitExceeded: the daily email limit",
            || {
                E::LimitExceededException(
                    LimitExceededException::builder()
                        .message(DAILY_EMAIL_LIMIT)
                        .build(),
                )
            },
            503,
            "delivery-limit",
            false,
        ),
        (
            "LimitExceeded: the attempt limit",
            || {
                E::LimitExceededException(
                    LimitExceededException::builder()
                        .message(ATTEMPT_LIMIT)
                        .build(),
                )
            },
            429,
            "attempt-limit",
            false,
        ),
        (
            "InternalError",
            || E::InternalErrorException(InternalErrorException::builder().build()),
            502,
            "upstream-error",
            true,
        ),
        // The pool's custom-message trigger runs before anything is sent: its refusal and its
        // unreadable answer prove nothing was sent, and are final.
        (
            "InvalidLambdaResponse",
            || E::InvalidLambdaResponseException(InvalidLambdaResponseException::builder().build()),
            502,
            "trigger-invalid-response",
            false,
        ),
        // A trigger that could not be run to its end may have sent the code: ambiguous, final.
        (
            "UnexpectedLambda",
            || E::UnexpectedLambdaException(UnexpectedLambdaException::builder().build()),
            502,
            "reset-unconfirmed",
            false,
        ),
        (
            "UserLambdaValidation",
            || E::UserLambdaValidationException(UserLambdaValidationException::builder().build()),
            422,
            "trigger-refused",
            false,
        ),
        (
            "unknown modeled code",
            || {
                E::generic(
                    ErrorMetadata::builder()
                        .code("BrandNewException")
                        .message("internal detail")
                        .build(),
                )
            },
            502,
            "upstream-error",
            true,
        ),
        (
            "InvalidSmsRoleAccessPolicy",
            || {
                E::InvalidSmsRoleAccessPolicyException(
                    InvalidSmsRoleAccessPolicyException::builder().build(),
                )
            },
            502,
            "misconfigured",
            true,
        ),
        (
            "InvalidSmsRoleTrustRelationship",
            || {
                E::InvalidSmsRoleTrustRelationshipException(
                    InvalidSmsRoleTrustRelationshipException::builder().build(),
                )
            },
            502,
            "misconfigured",
            true,
        ),
        (
            "InvalidEmailRoleAccessPolicy",
            || {
                E::InvalidEmailRoleAccessPolicyException(
                    InvalidEmailRoleAccessPolicyException::builder().build(),
                )
            },
            502,
            "misconfigured",
            true,
        ),
        (
            "AccessDenied",
            || {
                E::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .message("User: arn:aws:sts::1:x is not authorized")
                        .build(),
                )
            },
            502,
            "misconfigured",
            true,
        ),
        (
            "bad credentials",
            || {
                E::generic(
                    ErrorMetadata::builder()
                        .code("UnrecognizedClientException")
                        .build(),
                )
            },
            502,
            "misconfigured",
            true,
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn every_cognito_error_maps_to_its_row_over_http_and_sqs() {
    for (name, error, status, code, retry) in table() {
        // HTTP: the status, the code, and no internal error text in the body.
        let cognito = Cognito::with_users(demo_users()).reset_fails(error);
        let response = dispatch(
            &demo_app(&cognito),
            event("http-api-v2.json"),
            "r",
            far_deadline(),
        )
        .await
        .expect("response");
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        let text = response["body"].as_str().unwrap_or_default();
        assert!(
            !text.contains("internal detail") && !text.contains("arn:aws:sts::1"),
            "{name}: {text}"
        );
        assert_eq!(
            response["headers"].get("retry-after").is_some(),
            status == 429 || code == "delivery-limit",
            "{name}"
        );

        // SQS: retried exactly when the table says so.
        let cognito = Cognito::with_users(demo_users()).reset_fails(error);
        let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
        let response = dispatch(&demo_app(&cognito), event, "r", far_deadline())
            .await
            .expect("response");
        let expected: Vec<String> = if retry { vec!["m0".into()] } else { vec![] };
        assert_eq!(failed_ids(&response), expected, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn lookup_errors_are_classified_too() {
    use aws_sdk_cognitoidentityprovider::operation::admin_get_user::AdminGetUserError as G;
    type Case = (fn() -> G, u64, &'static str);
    let cases: Vec<Case> = vec![
        (
            || G::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
            404,
            "pool-not-found",
        ),
        (
            || G::TooManyRequestsException(TooManyRequestsException::builder().build()),
            429,
            "throttled",
        ),
        (
            || G::InternalErrorException(InternalErrorException::builder().build()),
            502,
            "upstream-error",
        ),
        (
            || {
                G::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .build(),
                )
            },
            502,
            "misconfigured",
        ),
    ];
    for (error, status, code) in cases {
        let cognito = Cognito::with_users(demo_users()).get_user_fails(error);
        let response = dispatch(
            &demo_app(&cognito),
            event("http-api-v2.json"),
            "r",
            far_deadline(),
        )
        .await
        .expect("response");
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert_eq!(cognito.reset.num_calls(), 0);
    }
}

/// An `AdminResetUserPassword` rule that first answers with Cognito's wire error `code` (so the
/// SDK's own deserializer and retry classifiers see exactly what Cognito would send), then OK.
pub(crate) fn reset_fails_once_on_the_wire(code: &str) -> aws_smithy_mocks::Rule {
    let body = serde_json::json!({"__type": code, "message": "slow down"}).to_string();
    mock!(Client::admin_reset_user_password)
        .sequence()
        .http_status(400, Some(body))
        .output(|| AdminResetUserPasswordOutput::builder().build())
        .build()
}

#[tokio::test(start_paused = true)]
async fn limit_exceeded_is_never_retried() {
    let mut cognito = Cognito::with_users(demo_users());
    cognito.reset = reset_fails_once_on_the_wire("LimitExceededException");
    let app = app(
        config(&[("POLICY", DEMO_POLICY), ("COGNITO_MAX_ATTEMPTS", "3")]),
        cognito.client(),
    );
    let response = dispatch(&app, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    let (status, body) = http_parts(&response);
    assert_eq!((status, body["error"].as_str()), (429, Some("throttled")));
    assert_eq!(
        cognito.reset.num_calls(),
        1,
        "LimitExceededException must not be retried"
    );
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_is_retried_within_the_attempt_bound() {
    let mut cognito = Cognito::with_users(demo_users());
    cognito.reset = reset_fails_once_on_the_wire("TooManyRequestsException");
    let app = app(
        config(&[("POLICY", DEMO_POLICY), ("COGNITO_MAX_ATTEMPTS", "3")]),
        cognito.client(),
    );
    let response = dispatch(&app, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(
        http_parts(&response).0,
        200,
        "{response} calls={}",
        cognito.reset.num_calls()
    );
    assert_eq!(cognito.reset.num_calls(), 2);
}

/// A Cognito endpoint that answers every call after `delay`, counting calls in flight.
#[derive(Debug)]
pub(crate) struct SlowCognito {
    pub(crate) delay: Duration,
    pub(crate) in_flight: Arc<InFlight>,
    /// Only this operation is slow (the others answer at once); `None`: every one.
    pub(crate) only: Option<&'static str>,
}

impl HttpConnector for SlowCognito {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let input: Value = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let username = input["Username"].as_str().unwrap_or_default().to_owned();
        let host = request
            .uri()
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        self.in_flight.log(&host, &operation, &username);
        let delay = match self.only {
            Some(only) if only != operation => Duration::ZERO,
            _ => self.delay,
        };
        let in_flight = Arc::clone(&self.in_flight);
        HttpConnectorFuture::new(async move {
            let _guard = in_flight.enter();
            tokio::time::sleep(delay).await;
            let body = if target.ends_with(".AdminGetUser") {
                serde_json::json!({"Username": username, "Enabled": true, "UserStatus": "CONFIRMED",
                    "UserAttributes": [{"Name": "email", "Value": username}]})
                .to_string()
            } else {
                "{}".to_owned()
            };
            let mut response =
                HttpResponse::new(200.try_into().expect("status"), SdkBody::from(body));
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            Ok(response)
        })
    }
}

/// A real SDK client (no mocks) over a connector, configured like the function's.
pub(crate) fn client_over(
    connector: impl HttpConnector + Clone + 'static,
    settings: ClientSettings,
) -> Client {
    let http = http_client_fn(move |_, _| SharedHttpConnector::new(connector.clone()));
    let builder = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::for_tests())
        .http_client(http);
    Client::from_conf(directory::configure(builder, settings).build())
}

impl Clone for SlowCognito {
    fn clone(&self) -> Self {
        SlowCognito {
            delay: self.delay,
            in_flight: Arc::clone(&self.in_flight),
            only: self.only,
        }
    }
}

pub(crate) const ANYONE: &str = r#"{"version":1,"rules":[{"name":"queue","callers":["arn:aws:sqs:*"],"userPools":["*"],"users":["*"]}]}"#;

/// An app over a slow Cognito that lets any queue reset anyone, and the in-flight counter.
fn slow_app(
    delay: Duration,
    max_concurrency: &str,
) -> (Arc<cognito_reset::pipeline::App>, Arc<InFlight>) {
    slow_app_with(delay, &[("MAX_CONCURRENCY", max_concurrency)])
}

/// [`slow_app`] with more settings.
fn slow_app_with(
    delay: Duration,
    settings_vars: &[(&str, &str)],
) -> (Arc<cognito_reset::pipeline::App>, Arc<InFlight>) {
    let in_flight = Arc::new(InFlight::default());
    let settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let slow = SlowCognito {
        delay,
        in_flight: Arc::clone(&in_flight),
        only: None,
    };
    let mut vars = vec![("POLICY", ANYONE)];
    vars.extend_from_slice(settings_vars);
    (app(config(&vars), client_over(slow, settings)), in_flight)
}

/// SQS bodies resetting `user0@example.com`, `user1@example.com`, ...
pub(crate) fn bodies(count: usize) -> Vec<(String, Option<&'static str>)> {
    (0..count)
        .map(|i| (reset_body(&format!("user{i}@example.com")), None))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn concurrency_never_exceeds_max_concurrency() {
    let (app, in_flight) = slow_app(Duration::from_millis(25), "3");
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(12)), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(
        in_flight.total.load(Ordering::SeqCst),
        24,
        "one lookup and one reset per record"
    );
    let max = in_flight.max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} calls in flight with MAX_CONCURRENCY=3");
    assert!(
        max >= 2,
        "records should run concurrently, saw at most {max} in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn no_record_runs_past_the_deadline_and_every_record_is_accounted_for() {
    // One record at a time, each two 300 ms calls; 2.8 s left with a 2 s margin, so 800 ms of
    // work fit: the first record finishes, the second is cut short inside its first call, the
    // third is not started.
    let (app, in_flight) = slow_app(Duration::from_millis(300), "1");
    let started = Instant::now();
    let deadline = Deadline(started + Duration::from_millis(2800));
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(3)), "r", deadline)
        .await
        .expect("response");
    // The answer comes before deadline − margin (plus scheduling slack), far from the deadline.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    assert_eq!(failed_ids(&response), ["m1", "m2"]);
    assert_eq!(
        in_flight.total.load(Ordering::SeqCst),
        3,
        "the first record's two calls and the second's cut-short lookup"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cognito_call_slower_than_the_timeout_is_unavailable() {
    let in_flight = Arc::new(InFlight::default());
    let settings = ClientSettings {
        timeout: Duration::from_millis(100),
        max_attempts: 1,
    };
    let client = client_over(
        SlowCognito {
            delay: Duration::from_secs(3),
            in_flight,
            only: None,
        },
        settings,
    );
    let app = app(config(&[("POLICY", DEMO_POLICY)]), client);
    let response = dispatch(&app, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    let (status, body) = http_parts(&response);
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
}

#[derive(Debug, Clone)]
struct Refused;

impl HttpConnector for Refused {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Err(ConnectorError::io("connection refused".into())))
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_cognito_hands_every_record_back() {
    let settings = ClientSettings {
        timeout: Duration::from_secs(1),
        max_attempts: 1,
    };
    let app = app(
        config(&[("POLICY", DEMO_POLICY)]),
        client_over(Refused, settings),
    );
    let response = dispatch(&app, event("http-api-v2.json"), "r", far_deadline())
        .await
        .expect("response");
    let (status, body) = http_parts(&response);
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    let bodies: Vec<(String, Option<&str>)> = ["erin", "admin", "ghost", "nemo"]
        .iter()
        .map(|u| (reset_body(&format!("{u}@example.com")), None))
        .collect();
    let response = dispatch(&app, sqs_event(QUEUE, &bodies), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), ["m0", "m1", "m2", "m3"]);
}

// ---- scale: regions and pacing ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_pool_in_another_region_is_called_through_that_regions_client() {
    // Given a function in us-west-2 and requests for pools in eu-west-1 and us-west-2
    let (app, in_flight) = slow_app(Duration::from_millis(1), "2");
    let bodies: Vec<(String, Option<&str>)> = ["eu-west-1_aaaaaaaaa", POOL]
        .iter()
        .map(|pool| {
            let body = serde_json::json!({"UserPoolId": pool, "Username": "u@example.com"});
            (body.to_string(), None)
        })
        .collect();
    let response = dispatch(&app, sqs_event(QUEUE, &bodies), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    // Then each pool's calls went to its own region's endpoint
    let mut hosts: Vec<String> = in_flight.calls().into_iter().map(|c| c.host).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        hosts,
        [
            "cognito-idp.eu-west-1.amazonaws.com",
            "cognito-idp.us-west-2.amazonaws.com"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pool_id_naming_no_aws_region_is_rejected_without_a_call() {
    let (app, in_flight) = slow_app(Duration::from_millis(1), "2");
    let body =
        serde_json::json!({"UserPoolId": "mars-east-1_aaaaaaaaa", "Username": "u@example.com"});
    let response = dispatch(&app, http_event_with_body(&body), "r", far_deadline())
        .await
        .expect("response");
    let (status, body) = http_parts(&response);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid-request"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UserPoolId"),
        "{body}"
    );
    assert_eq!(in_flight.total.load(Ordering::SeqCst), 0);
}

/// The most calls of `operation` that started in any one-second window.
pub(crate) fn most_in_one_second(calls: &[Call], operation: &str) -> usize {
    let times: Vec<Instant> = calls
        .iter()
        .filter(|c| c.operation == operation)
        .map(|c| c.at)
        .collect();
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn the_limiter_never_lets_more_than_the_rate_through_in_any_second() {
    // Given 30 queued resets, 10 at a time, paced at 20 reads and 10 resets a second
    let (app, in_flight) = slow_app_with(
        Duration::from_millis(5),
        &[
            ("MAX_CONCURRENCY", "10"),
            ("COGNITO_READ_RPS", "20"),
            ("COGNITO_RESET_RPS", "10"),
        ],
    );
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(30)), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    // Then every record went through, and no one-second window saw more than the rate
    let calls = in_flight.calls();
    assert_eq!(calls.len(), 60);
    assert!(most_in_one_second(&calls, "AdminGetUser") <= 20);
    assert!(most_in_one_second(&calls, "AdminResetUserPassword") <= 10);
    // (and the pacing is real: 30 resets at 10/s cannot start in under 2.9 s)
    let resets: Vec<Instant> = calls
        .iter()
        .filter(|c| c.operation == "AdminResetUserPassword")
        .map(|c| c.at)
        .collect();
    let span = resets[resets.len() - 1] - resets[0];
    assert!(span >= Duration::from_millis(2_850), "{span:?}");
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_would_come_after_the_deadline_is_retry_deadline_at_once() {
    // Given one read a second and 2.6 s left with a 2 s margin: only the first record's turn fits
    let (app, in_flight) = slow_app_with(
        Duration::from_millis(1),
        &[("MAX_CONCURRENCY", "3"), ("COGNITO_READ_RPS", "1")],
    );
    let started = Instant::now();
    let deadline = Deadline(started + Duration::from_millis(2600));
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(3)), "r", deadline)
        .await
        .expect("response");
    // Then the other two are handed back at once (no waiting into the deadline)
    let mut failed = failed_ids(&response);
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        in_flight.total.load(Ordering::SeqCst),
        2,
        "one lookup, one reset"
    );
}

// ---- rows that need the wire: unmodeled codes, unreadable answers ---------------------------------

/// An `AdminResetUserPassword` rule that always answers with this HTTP status and body.
fn reset_answers_on_the_wire(status: u16, body: &str) -> aws_smithy_mocks::Rule {
    let body = body.to_owned();
    mock!(Client::admin_reset_user_password)
        .sequence()
        .http_status(status, Some(body))
        .build()
}

#[tokio::test(start_paused = true)]
async fn unmodeled_throttling_and_unavailability_codes_and_unreadable_answers_have_their_rows() {
    // (wire status, wire body, HTTP status, code, handed back from SQS)
    let cases = [
        // Throttling proves nothing happened: retried.
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            429,
            "throttled",
            true,
        ),
        // A 5xx or an unreadable answer to a reset may follow a reset that happened: final,
        // never sent again by itself.
        (
            503,
            r#"{"__type":"ServiceUnavailable","message":"try later"}"#,
            502,
            "reset-unconfirmed",
            false,
        ),
        (200, "this is not JSON {", 502, "reset-unconfirmed", false),
    ];
    for (wire_status, wire_body, status, code, retried) in cases {
        let mut cognito = Cognito::with_users(demo_users());
        cognito.reset = reset_answers_on_the_wire(wire_status, wire_body);
        let http_app = app(config(&[("POLICY", DEMO_POLICY)]), cognito.client());
        let response = dispatch(&http_app, event("http-api-v2.json"), "r", far_deadline())
            .await
            .expect("response");
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{wire_body}"
        );
        assert!(
            !response["body"]
                .as_str()
                .unwrap_or_default()
                .contains("Rate exceeded")
        );
        // and from SQS only the throttled one is handed back for another try
        let mut cognito = Cognito::with_users(demo_users());
        cognito.reset = reset_answers_on_the_wire(wire_status, wire_body);
        let sqs_app = app(config(&[("POLICY", DEMO_POLICY)]), cognito.client());
        let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
        let response = dispatch(&sqs_app, event, "r", far_deadline())
            .await
            .expect("response");
        let expected: Vec<&str> = if retried { vec!["m0"] } else { vec![] };
        assert_eq!(failed_ids(&response), expected, "{wire_body}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_group_lookup_failure_has_its_row_and_nobody_is_reset() {
    use aws_sdk_cognitoidentityprovider::operation::admin_list_groups_for_user::AdminListGroupsForUserError as L;
    type Case = (fn() -> L, u64, &'static str);
    let cases: Vec<Case> = vec![
        (
            || L::UserNotFoundException(UserNotFoundException::builder().build()),
            404,
            "user-not-found",
        ),
        (
            || L::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
            404,
            "pool-not-found",
        ),
        (
            || L::NotAuthorizedException(NotAuthorizedException::builder().build()),
            409,
            "not-resettable",
        ),
        (
            || L::InvalidParameterException(InvalidParameterException::builder().build()),
            422,
            "cannot-reset",
        ),
        (
            || L::TooManyRequestsException(TooManyRequestsException::builder().build()),
            429,
            "throttled",
        ),
        (
            || L::InternalErrorException(InternalErrorException::builder().build()),
            502,
            "upstream-error",
        ),
        (
            || {
                L::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .build(),
                )
            },
            502,
            "misconfigured",
        ),
        (
            || L::generic(ErrorMetadata::builder().code("SomethingNew").build()),
            502,
            "upstream-error",
        ),
    ];
    for (error, status, code) in cases {
        let cognito = Cognito::with_users(demo_users()).list_groups_fails(error);
        let response = dispatch(
            &demo_app(&cognito),
            event("http-api-v2.json"),
            "r",
            far_deadline(),
        )
        .await
        .expect("response");
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert_eq!(cognito.reset.num_calls(), 0, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn fifo_groups_reach_cognito_in_message_order() {
    // Given two message groups, interleaved in the batch, on a Cognito slow enough to overlap
    let (app, in_flight) = slow_app(Duration::from_millis(20), "10");
    let fifo = "arn:aws:sqs:us-west-2:123456789012:password-resets.fifo";
    let records: Vec<(String, Option<&str>)> = (0..6)
        .map(|i| {
            let group = if i % 2 == 0 { "a" } else { "b" };
            (reset_body(&format!("user{i}@example.com")), Some(group))
        })
        .collect();
    let response = dispatch(&app, sqs_event(fifo, &records), "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    // Then, as Cognito saw them, each group's resets came in message order...
    let resets: Vec<String> = in_flight
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AdminResetUserPassword")
        .map(|c| c.username)
        .collect();
    let order = |group: &[usize]| -> Vec<usize> {
        group
            .iter()
            .map(|i| {
                resets
                    .iter()
                    .position(|u| *u == format!("user{i}@example.com"))
                    .expect("reset")
            })
            .collect()
    };
    let (a, b) = (order(&[0, 2, 4]), order(&[1, 3, 5]));
    assert!(
        a.windows(2).all(|w| w[0] < w[1]),
        "group a out of order: {resets:?}"
    );
    assert!(
        b.windows(2).all(|w| w[0] < w[1]),
        "group b out of order: {resets:?}"
    );
    // ...and a group's next record started only after the previous one's reset answered
    assert_eq!(
        in_flight.max.load(Ordering::SeqCst),
        2,
        "the two groups ran side by side"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cognito_call_slower_than_the_time_left_is_cut_at_the_deadline_margin() {
    // Given one Cognito call taking 1.5 s, 2.8 s left and the default 2 s margin: 0.8 s of budget
    let (app, in_flight) = slow_app(Duration::from_millis(1500), "1");
    let started = Instant::now();
    let deadline = Deadline(started + Duration::from_millis(2800));
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(1)), "r", deadline)
        .await
        .expect("response");
    // Then the call is abandoned when the budget runs out, and the record is handed back
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1200),
        "answered after {took:?}"
    );
    assert_eq!(failed_ids(&response), ["m0"]);
    assert_eq!(in_flight.total.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reset_whose_answer_is_lost_keeps_the_claim_so_nobody_sends_a_second_code() {
    use crate::dynamodb::{Mode, Table, s, settings};
    // Given a guard, and a reset call that times out (Cognito may have sent the code)
    let in_flight = Arc::new(InFlight::default());
    let slow = SlowCognito {
        delay: Duration::from_secs(2),
        in_flight: Arc::clone(&in_flight),
        only: Some("AdminResetUserPassword"),
    };
    let client_settings = ClientSettings {
        timeout: Duration::from_millis(150),
        max_attempts: 1,
    };
    let table = Table::new(Mode::Normal);
    let config = config(&[("POLICY", ANYONE)]);
    let directory = cognito_reset::aws::cognito::Directory::sdk(
        client_over(slow, client_settings),
        client_settings,
        config.deadline_margin,
        config.rates,
    );
    let guard = cognito_reset::aws::guard::Guard::dynamodb(
        table.client(),
        settings(300),
        false,
        config.deadline_margin,
    );
    let policy = config.fixed_policy().expect("fixed");
    let app = Arc::new(cognito_reset::pipeline::App::new(
        config,
        directory,
        Some(guard),
        policy,
        None,
    ));
    let request = || sqs_event(QUEUE, &bodies(1));
    let response = dispatch(&app, request(), "r", far_deadline())
        .await
        .expect("response");
    // Then the record is handed back (RETRY reset-unresolved: the user was CONFIRMED, so its
    // redelivery, once the call can no longer be in flight, reads the user's status), and the
    // claim stays, marked unconfirmed
    assert_eq!(failed_ids(&response), ["m0"]);
    let item = table
        .user_item(POOL, "user0@example.com")
        .expect("the claim is kept");
    assert_eq!(item["state"], s("unconfirmed"));
    // and another request for the user, while the first one's invocation may still run (its
    // lease), makes no second reset call: it is acknowledged as reset-unconfirmed
    let mut again = request();
    again["Records"][0]["messageId"] = serde_json::json!("m1");
    let response = dispatch(&app, again, "r", far_deadline())
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let resets = in_flight
        .calls()
        .iter()
        .filter(|c| c.operation == "AdminResetUserPassword")
        .count();
    assert_eq!(resets, 1);
}

#[tokio::test(start_paused = true)]
async fn a_reset_started_just_before_the_margin_may_finish_inside_it() {
    // Given a reset taking 300 ms, started with 2.1 s left and the default 2 s margin
    let in_flight = Arc::new(InFlight::default());
    let slow = SlowCognito {
        delay: Duration::from_millis(300),
        in_flight: Arc::clone(&in_flight),
        only: Some("AdminResetUserPassword"),
    };
    let client_settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let app = app(
        config(&[("POLICY", ANYONE)]),
        client_over(slow, client_settings),
    );
    let deadline = Deadline(Instant::now() + Duration::from_millis(2100));
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(1)), "r", deadline)
        .await
        .expect("response");
    // Then it is not cut short after Cognito may have sent the code: it finishes, and is not
    // handed back (a retry would send a second code)
    assert_eq!(failed_ids(&response), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn every_cognito_call_uses_the_clients_one_connector_whatever_time_is_left() {
    // Given a client that records the connector settings of every call, and a deadline close
    // enough that each call's budget is shorter than the 5 s attempt timeout (and different)
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let in_flight = Arc::new(InFlight::default());
    let slow = SlowCognito {
        delay: Duration::from_millis(5),
        in_flight: Arc::clone(&in_flight),
        only: None,
    };
    let record = Arc::clone(&seen);
    let http = http_client_fn(move |settings, _| {
        record.lock().expect("log").push(settings.connect_timeout());
        SharedHttpConnector::new(slow.clone())
    });
    let settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let builder = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::for_tests())
        .http_client(http);
    let client = Client::from_conf(directory::configure(builder, settings).build());
    let app = app(
        config(&[("POLICY", ANYONE), ("MAX_CONCURRENCY", "1")]),
        client,
    );
    let deadline = Deadline(Instant::now() + Duration::from_millis(4_000));
    // When records run one after the other
    let response = dispatch(&app, sqs_event(QUEUE, &bodies(5)), "r", deadline)
        .await
        .expect("response");
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    // Then every call asked for the connector of the client's own connect timeout: the SDK
    // keeps one connector (TLS set-up, open connections) per connect timeout, so none was
    // built for a single call
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 10, "two calls a record");
    assert!(
        seen.iter().all(|t| *t == Some(Duration::from_secs(5))),
        "{seen:?}"
    );
}

/// A Cognito that answers every call at once, for pacing tests.
#[derive(Debug)]
struct Instant0;

impl cognito_reset::aws::cognito::CognitoApi for Instant0 {
    fn get_user<'a>(
        &'a self,
        _pool: &'a cognito_reset::request::UserPoolId,
        username: &'a str,
        _timeout: Duration,
    ) -> cognito_reset::aws::BoxFuture<
        'a,
        Result<cognito_reset::aws::cognito::UserRecord, cognito_reset::failure::CognitoError>,
    > {
        Box::pin(async move {
            Ok(cognito_reset::aws::cognito::UserRecord {
                username: username.to_owned(),
                email: None,
                preferred_username: None,
                sub: None,
                enabled: true,
                status: None,
            })
        })
    }

    fn list_groups<'a>(
        &'a self,
        _pool: &'a cognito_reset::request::UserPoolId,
        _username: &'a str,
        _next_token: Option<String>,
        _timeout: Duration,
    ) -> cognito_reset::aws::BoxFuture<
        'a,
        Result<cognito_reset::aws::cognito::GroupsPage, cognito_reset::failure::CognitoError>,
    > {
        Box::pin(async { Ok(cognito_reset::aws::cognito::GroupsPage::default()) })
    }

    fn reset_password<'a>(
        &'a self,
        _pool: &'a cognito_reset::request::UserPoolId,
        _username: &'a str,
        _client_metadata: &'a cognito_reset::request::ClientMetadata,
        _timeout: Duration,
    ) -> cognito_reset::aws::BoxFuture<
        'a,
        Result<Option<String>, cognito_reset::failure::CognitoError>,
    > {
        Box::pin(async { Ok(None) })
    }

    fn resend_invitation<'a>(
        &'a self,
        _pool: &'a cognito_reset::request::UserPoolId,
        _username: &'a str,
        _client_metadata: &'a cognito_reset::request::ClientMetadata,
        _timeout: Duration,
    ) -> cognito_reset::aws::BoxFuture<
        'a,
        Result<Option<String>, cognito_reset::failure::CognitoError>,
    > {
        Box::pin(async { Ok(None) })
    }

    fn global_sign_out<'a>(
        &'a self,
        _pool: &'a cognito_reset::request::UserPoolId,
        _username: &'a str,
        _timeout: Duration,
    ) -> cognito_reset::aws::BoxFuture<
        'a,
        Result<Option<String>, cognito_reset::failure::CognitoError>,
    > {
        Box::pin(async { Ok(None) })
    }
}

#[tokio::test(start_paused = true)]
async fn group_lookups_are_paced_in_their_own_quota_category() {
    use cognito_reset::aws::cognito::Directory;
    use cognito_reset::limiter::{Priority, Rates};
    use cognito_reset::request::{UserPoolId, Username};
    // Given UserRead at 100/s and UserResourceRead (AdminListGroupsForUser) at 2/s
    let directory = Directory::new(
        Arc::new(Instant0),
        ClientSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 1,
        },
        Duration::from_secs(2),
        Rates {
            read: Some(100.0),
            resource_read: Some(2.0),
            account_recovery: Some(100.0),
            user_creation: Some(100.0),
            user_update: Some(100.0),
        },
    );
    let pool = UserPoolId::parse(POOL).expect("pool");
    let user = Username::parse("diego@example.com").expect("username");
    let deadline = Deadline(tokio::time::Instant::now() + Duration::from_secs(60));

    // When three group lookups run, then three user lookups
    let t0 = tokio::time::Instant::now();
    for _ in 0..3 {
        directory
            .list_groups(&pool, "diego", Priority::Batch, deadline)
            .await
            .expect("groups");
    }
    let groups = t0.elapsed();
    let t1 = tokio::time::Instant::now();
    for _ in 0..3 {
        directory
            .get_user(&pool, &user, Priority::Batch, deadline)
            .await
            .expect("user");
    }
    let users = t1.elapsed();

    // Then the group lookups are spaced at 2/s (1.02 s / 2 apart) and the user lookups are not
    // held back by them
    assert_eq!(groups, Duration::from_millis(1020));
    assert_eq!(users, Duration::from_micros(21_000));
}

#[tokio::test(start_paused = true)]
async fn resent_invitations_and_sign_outs_are_paced_in_their_own_quota_categories() {
    use cognito_reset::aws::cognito::Directory;
    use cognito_reset::limiter::{Priority, Rates};
    use cognito_reset::request::{ClientMetadata, UserPoolId};
    // Given UserCreation (AdminCreateUser) at 2/s, UserUpdate (AdminUserGlobalSignOut) at 4/s,
    // and the account-recovery category (resets) at 100/s
    let directory = Directory::new(
        Arc::new(Instant0),
        ClientSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 1,
        },
        Duration::from_secs(2),
        Rates {
            read: Some(100.0),
            resource_read: Some(100.0),
            account_recovery: Some(100.0),
            user_creation: Some(2.0),
            user_update: Some(4.0),
        },
    );
    let pool = UserPoolId::parse(POOL).expect("pool");
    let metadata = ClientMetadata::default();
    let deadline = Deadline(tokio::time::Instant::now() + Duration::from_secs(60));

    // When three invitations are resent, three users signed out, then three users reset
    let t0 = tokio::time::Instant::now();
    for _ in 0..3 {
        directory
            .resend_invitation(&pool, "ivy", &metadata, Priority::Batch, deadline)
            .await
            .expect("resent");
    }
    let resends = t0.elapsed();
    let t1 = tokio::time::Instant::now();
    for _ in 0..3 {
        directory
            .global_sign_out(&pool, "diego", Priority::Batch, deadline)
            .await
            .expect("signed out");
    }
    let sign_outs = t1.elapsed();
    let t2 = tokio::time::Instant::now();
    for _ in 0..3 {
        directory
            .reset_password(&pool, "diego", &metadata, Priority::Batch, deadline)
            .await
            .expect("reset");
    }
    let resets = t2.elapsed();

    // Then each is spaced at its own category's rate (the spacing is 1.02 / rate), and the
    // resets are not held back by either
    assert_eq!(resends, Duration::from_millis(1020));
    assert_eq!(sign_outs, Duration::from_micros(510_000));
    assert!(resets < Duration::from_millis(30), "{resets:?}");
}

// ---- Cognito's limits, told apart by their message (issue 25) ----------------------------------

/// An `AdminResetUserPassword` rule that answers every call with this HTTP status and body.
fn reset_always_answers(status: u16, body: &str) -> aws_smithy_mocks::Rule {
    mock!(Client::admin_reset_user_password)
        .sequence()
        .http_status(status, Some(body.to_owned()))
        .repeatedly()
        .build()
}

/// The wire body of a Cognito error `code` with `message`.
fn wire_error(code: &str, message: &str) -> String {
    serde_json::json!({"__type": code, "message": message}).to_string()
}

#[tokio::test(start_paused = true)]
async fn cognitos_limits_are_told_apart_by_their_message_and_never_slow_the_pacing() {
    // (wire code, wire message, HTTP status, code, Retry-After, handed back from SQS, pacing cut)
    let cases = [
        (
            "LimitExceededException",
            DAILY_EMAIL_LIMIT,
            503,
            "delivery-limit",
            Some("3600"),
            false,
            false,
        ),
        (
            "LimitExceededException",
            "Exceeded daily SMS limit for the account.",
            503,
            "delivery-limit",
            Some("3600"),
            false,
            false,
        ),
        (
            "LimitExceededException",
            ATTEMPT_LIMIT,
            429,
            "attempt-limit",
            Some("900"),
            false,
            false,
        ),
        // An unknown message keeps today's handling: throttled, handed back, never retried
        // inside the invocation (a retry would only burn the user's attempts).
        (
            "LimitExceededException",
            "Some limit we have never seen.",
            429,
            "throttled",
            Some("1"),
            true,
            false,
        ),
        // Control: the account's request quota does cut the pacing rate.
        (
            "TooManyRequestsException",
            "Rate exceeded",
            429,
            "throttled",
            Some("1"),
            true,
            true,
        ),
    ];
    for (wire_code, message, status, code, retry_after, handed_back, cut) in cases {
        // Given Cognito answering every reset with this error, and 3 attempts allowed
        let mut cognito = Cognito::with_users(demo_users());
        cognito.reset = reset_always_answers(400, &wire_error(wire_code, message));
        let http_app = app(
            config(&[
                ("POLICY", DEMO_POLICY),
                ("COGNITO_MAX_ATTEMPTS", "3"),
                ("COGNITO_RESET_RPS", "6"),
            ]),
            cognito.client(),
        );
        // When the helpdesk asks over HTTP
        let response = dispatch(&http_app, event("http-api-v2.json"), "r", far_deadline())
            .await
            .expect("response");
        // Then the status, the code and Retry-After say which limit it is
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{message}"
        );
        assert_eq!(
            response["headers"]["retry-after"].as_str(),
            retry_after,
            "{message}"
        );
        // and a limit is sent once only (the throttle control is retried)
        let expected_calls = if wire_code == "TooManyRequestsException" {
            3
        } else {
            1
        };
        assert_eq!(cognito.reset.num_calls(), expected_calls, "{message}");
        // and only the account's quota slows the pacing
        let factor = http_app.directory.limiters().factor(
            "us-west-2",
            cognito_reset::limiter::Category::UserAccountRecovery,
        );
        assert_eq!(factor < 1.0, cut, "{message}: factor {factor}");

        // Over SQS: a limit is acknowledged (its outcome event is final), throttling handed back
        let mut cognito = Cognito::with_users(demo_users());
        cognito.reset = reset_always_answers(400, &wire_error(wire_code, message));
        let sqs_app = app(config(&[("POLICY", DEMO_POLICY)]), cognito.client());
        let event = sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);
        let response = dispatch(&sqs_app, event, "r", far_deadline())
            .await
            .expect("response");
        let expected: Vec<&str> = if handed_back { vec!["m0"] } else { vec![] };
        assert_eq!(failed_ids(&response), expected, "{message}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_trigger_that_could_not_run_to_its_end_is_an_ambiguous_reset() {
    // The wire form of each Lambda-trigger failure (HTTP 400, as Cognito sends them).
    let cases = [
        ("UserLambdaValidationException", 422, "trigger-refused"),
        (
            "InvalidLambdaResponseException",
            502,
            "trigger-invalid-response",
        ),
        ("UnexpectedLambdaException", 502, "reset-unconfirmed"),
    ];
    for (wire_code, status, code) in cases {
        let mut cognito = Cognito::with_users(demo_users());
        cognito.reset = reset_always_answers(400, &wire_error(wire_code, "CustomMessage failed"));
        let http_app = app(
            config(&[("POLICY", DEMO_POLICY), ("COGNITO_MAX_ATTEMPTS", "3")]),
            cognito.client(),
        );
        let response = dispatch(&http_app, event("http-api-v2.json"), "r", far_deadline())
            .await
            .expect("response");
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{wire_code}"
        );
        assert_eq!(
            cognito.reset.num_calls(),
            1,
            "{wire_code}: never sent twice"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_limits_are_not_kept_under_an_idempotency_key() {
    // Given the guard, and the pool past its daily email limit for the first request
    let table = crate::dynamodb::Table::new(crate::dynamodb::Mode::Normal);
    let mut cognito = Cognito::with_users(demo_users());
    let body = wire_error("LimitExceededException", DAILY_EMAIL_LIMIT);
    cognito.reset = mock!(Client::admin_reset_user_password)
        .sequence()
        .http_status(400, Some(body))
        .output(|| AdminResetUserPasswordOutput::builder().build())
        .build();
    let app = guarded_app(&cognito, &table, 300, false);
    let keyed = || {
        let mut e = event("http-api-v2.json");
        e["headers"]["idempotency-key"] = Value::from("limit-1");
        e
    };
    let first = dispatch(&app, keyed(), "r1", far_deadline())
        .await
        .expect("response");
    assert_eq!(http_parts(&first).1["error"], "delivery-limit");
    // When the same key asks again once the pool can send
    let again = dispatch(&app, keyed(), "r2", far_deadline())
        .await
        .expect("response");
    // Then it is reset (not a replay of the refusal), and the user was not held meanwhile
    let (status, body) = http_parts(&again);
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("RESET")),
        "{body}"
    );
    assert_eq!(body.get("replayed"), None, "{body}");
    assert_eq!(cognito.reset.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_user_of_an_external_provider_is_refused_before_the_guard_and_any_reset() {
    // Given a user who signs in through an external identity provider, and the guard on
    let mut users = demo_users();
    let mut xavier = user("xavier", &["staff"]);
    xavier.status = aws_sdk_cognitoidentityprovider::types::UserStatusType::ExternalProvider;
    users.push(xavier);
    let cognito = Cognito::with_users(users);
    let table = crate::dynamodb::Table::new(crate::dynamodb::Mode::Normal);
    let app = guarded_app(&cognito, &table, 300, false);
    // When the helpdesk asks to reset them
    let body = serde_json::json!({"UserPoolId": POOL, "Username": "xavier@example.com"});
    let response = dispatch(&app, http_event_with_body(&body), "r", far_deadline())
        .await
        .expect("response");
    // Then 409 external-user, no reset call, and nothing claimed in the guard's table
    let (status, body) = http_parts(&response);
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("external-user")),
        "{body}"
    );
    assert_eq!(cognito.reset.num_calls() + cognito.resend.num_calls(), 0);
    // (only its answer is kept, under the request id, for GET /requests/{id})
    let items = table.items();
    assert!(
        items.keys().all(|pk| pk.starts_with("answer#")),
        "{:?}",
        items.keys()
    );
}
