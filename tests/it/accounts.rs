//! Pools in other accounts (`POOL_ROLES`), through the whole handler over a fake AWS endpoint:
//! STS answers `AssumeRole` (by a script), Cognito answers every call and tells which access key
//! signed it, and a settable clock stands for the SDK's time (credential expiry, signing).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Region};
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::TimeSource;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::date_time::{DateTime, Format};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::accounts::RoleSessions;
use cognito_reset::aws::bucket::{BucketStore, DynamoBucket};
use cognito_reset::aws::cognito::{self as directory, CognitoSdk, Directory};
use cognito_reset::aws::guard::Guard;
use cognito_reset::limiter::{Category, Limiters, Rates, Scope};
use cognito_reset::pipeline::App;
use cognito_reset::sources::dispatch;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::dynamodb::{Mode, TABLE, Table, settings};
use crate::helpers::*;

const FUNCTION_ACCOUNT: &str = "111122223333";
const OTHER_ACCOUNT: &str = "222233334444";
const OWN_POOL: &str = "us-west-2_ownPool1";
const OTHER_POOL: &str = "us-west-2_otherPool1";
const ROLE: &str = "arn:aws:iam::222233334444:role/cognito-reset-target";
const EXTERNAL_ID: &str = "helpdesk-ext-7f3a";
const FUNCTION_KEY: &str = "AKIDFUNCTION";
const ASSUMED_KEY: &str = "ASIAASSUMED";
const ANY_CALLER: &str =
    r#"{"version":1,"rules":[{"name":"any","callers":["*"],"userPools":["*"],"users":["*"]}]}"#;

/// The SDK's clock, set by the test.
#[derive(Debug, Clone)]
struct Clock(Arc<Mutex<SystemTime>>);

impl Clock {
    fn new() -> Clock {
        Clock(Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_770_000),
        )))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl TimeSource for Clock {
    fn now(&self) -> SystemTime {
        *self.0.lock().expect("clock")
    }
}

/// What STS answers to one `AssumeRole`.
#[derive(Debug, Clone, Copy)]
enum Sts {
    /// Credentials valid for an hour from the clock's now.
    Grants,
    /// An error answer.
    Fails(u16, &'static str),
    /// The connection is refused.
    Refused,
}

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Seen {
    /// `AssumeRole`, or the Cognito operation.
    operation: String,
    /// The access key that signed it.
    key: String,
    /// STS's form parameters, or Cognito's `UserPoolId`.
    params: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct FakeAws {
    clock: Clock,
    sts: Arc<Mutex<VecDeque<Sts>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Time that passes while Cognito answers the next `AdminGetUser`.
    lookup_takes: Arc<Mutex<Option<Duration>>>,
}

impl FakeAws {
    fn new(clock: &Clock) -> FakeAws {
        FakeAws {
            clock: clock.clone(),
            sts: Arc::default(),
            seen: Arc::default(),
            lookup_takes: Arc::default(),
        }
    }

    /// STS answers these, in order, then grants.
    fn sts_answers(&self, answers: &[Sts]) {
        self.sts.lock().expect("sts").extend(answers);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn assume_roles(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.operation == "AssumeRole")
            .collect()
    }

    fn cognito_calls(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.operation != "AssumeRole")
            .collect()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response(status: u16, content_type: &str, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(status.try_into().expect("status"), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", content_type.to_owned());
    response
}

impl HttpConnector for FakeAws {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let key = request
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let target = request.headers().get("x-amz-target").map(str::to_owned);
        let Some(target) = target else {
            // STS (awsQuery): a form.
            let params: HashMap<String, String> = body
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect();
            self.seen.lock().expect("seen").push(Seen {
                operation: params.get("Action").cloned().unwrap_or_default(),
                key,
                params,
            });
            let answer = self.sts.lock().expect("sts").pop_front();
            let now = self.clock.now();
            return HttpConnectorFuture::ready(match answer.unwrap_or(Sts::Grants) {
                Sts::Grants => {
                    let expiration = DateTime::from(now + Duration::from_secs(3600))
                        .fmt(Format::DateTime)
                        .expect("a date");
                    Ok(response(
                        200,
                        "text/xml",
                        format!(
                            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
                             <AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:cognito-reset</AssumedRoleId>\
                             <Arn>arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/cognito-reset-target/cognito-reset</Arn></AssumedRoleUser>\
                             <Credentials><AccessKeyId>{ASSUMED_KEY}</AccessKeyId><SecretAccessKey>assumedsecret</SecretAccessKey>\
                             <SessionToken>assumedtoken</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
                             </AssumeRoleResult><ResponseMetadata><RequestId>sts-1</RequestId></ResponseMetadata></AssumeRoleResponse>"
                        ),
                    ))
                }
                Sts::Fails(status, code) => Ok(response(
                    status,
                    "text/xml",
                    format!(
                        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                         <Code>{code}</Code><Message>no</Message></Error><RequestId>sts-2</RequestId></ErrorResponse>"
                    ),
                )),
                Sts::Refused => Err(ConnectorError::io("connection refused".into())),
            });
        };
        let input: Value = serde_json::from_str(&body).unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        let pool = input["UserPoolId"].as_str().unwrap_or_default().to_owned();
        self.seen.lock().expect("seen").push(Seen {
            operation: operation.clone(),
            key,
            params: HashMap::from([("UserPoolId".to_owned(), pool)]),
        });
        let body = match operation.as_str() {
            "AdminGetUser" => {
                if let Some(by) = self.lookup_takes.lock().expect("lookup").take() {
                    self.clock.advance(by);
                }
                let username = input["Username"].as_str().unwrap_or_default();
                json!({"Username": username, "Enabled": true, "UserStatus": "CONFIRMED",
                    "UserAttributes": [{"Name": "email", "Value": username}]})
                .to_string()
            }
            "AdminListGroupsForUser" => json!({"Groups": []}).to_string(),
            _ => "{}".to_owned(),
        };
        HttpConnectorFuture::ready(Ok(response(200, "application/x-amz-json-1.1", body)))
    }
}

/// The function's configuration over the fake endpoint, with its own (test) credentials.
fn sdk_config(aws: &FakeAws, clock: &Clock) -> SdkConfig {
    let connector = aws.clone();
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            FUNCTION_KEY,
            "functionsecret",
            None,
            None,
            "test",
        )))
        .http_client(http_client_fn(move |_, _| {
            SharedHttpConnector::new(connector.clone())
        }))
        .time_source(clock.clone())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .build()
}

const ONE_ATTEMPT: ClientSettings = ClientSettings {
    timeout: Duration::from_secs(2),
    max_attempts: 1,
};

/// The app as `main` wires it, over the fake endpoint; `POOL_ROLES` maps [`OTHER_POOL`].
fn wired(aws: &FakeAws, clock: &Clock, vars: &[(&str, &str)], guard: Option<&Table>) -> Arc<App> {
    let roles = json!({OTHER_POOL: {"roleArn": ROLE, "externalId": EXTERNAL_ID}}).to_string();
    let mut all = vec![
        ("POLICY", ANY_CALLER),
        ("FUNCTION_ACCOUNT_ID", FUNCTION_ACCOUNT),
        ("POOL_ROLES", roles.as_str()),
    ];
    if guard.is_some() {
        all.push(("GUARD_TABLE", TABLE));
    }
    all.extend_from_slice(vars);
    let config = config(&all);
    let sdk = sdk_config(aws, clock);
    let client = aws_sdk_cognitoidentityprovider::Client::from_conf(
        directory::configure((&sdk).into(), config.cognito).build(),
    );
    let sessions = Arc::new(RoleSessions::new(&sdk, ONE_ATTEMPT));
    let limiters = config.limiters(guard.map(|table| {
        Arc::new(DynamoBucket::new(
            table.client(),
            TABLE,
            Duration::from_secs(5),
        )) as Arc<dyn BucketStore>
    }));
    let directory = Directory::over(
        CognitoSdk::new(client).with_roles(config.accounts.roles.clone(), sessions),
        config.cognito,
        config.deadline_margin,
        config.rates,
    )
    .with_limiters(limiters)
    .with_accounts(config.accounts.clone());
    let guard = guard
        .map(|table| Guard::dynamodb(table.client(), settings(0), false, config.deadline_margin));
    let policy = config.fixed_policy().expect("fixed");
    Arc::new(App::new(config, directory, guard, policy, None))
}

/// A DEBUG or TRACE line of a target the function's log filter caps at INFO (the SDK's request
/// and response bodies): never written by the function.
fn capped_payload_line(line: &str) -> bool {
    (line.starts_with("TRACE") || line.starts_with("DEBUG"))
        && cognito_reset::logging::PAYLOAD_TARGETS
            .iter()
            .any(|target| {
                line.contains(&format!(" {target}::")) || line.contains(&format!(" {target}:"))
            })
}

fn body(pool: &str, user: &str) -> String {
    json!({"UserPoolId": pool, "Username": format!("{user}@example.com")}).to_string()
}

async fn reset_batch(app: &Arc<App>, bodies: Vec<String>) -> Vec<String> {
    let bodies: Vec<(String, Option<&str>)> = bodies.into_iter().map(|b| (b, None)).collect();
    let response = dispatch(app, sqs_event(QUEUE, &bodies), "r", far_deadline())
        .await
        .expect("response");
    failed_ids(&response)
}

#[tokio::test]
async fn many_resets_in_another_account_assume_its_role_once_with_the_external_id() {
    // Given a pool of POOL_ROLES and one of the function's own account
    let clock = Clock::new();
    let aws = FakeAws::new(&clock);
    let app = wired(&aws, &clock, &[], None);
    let (_capture, logs) = crate::logs::capture();
    // When four resets in the other account's pool and one in the own pool run, in two batches
    let first: Vec<String> = (0..3).map(|i| body(OTHER_POOL, &format!("u{i}"))).collect();
    assert_eq!(reset_batch(&app, first).await, Vec::<String>::new());
    let second = vec![body(OTHER_POOL, "u3"), body(OWN_POOL, "mine")];
    assert_eq!(reset_batch(&app, second).await, Vec::<String>::new());

    // Then the role was assumed once, by the function's own credentials, as `cognito-reset`,
    // with the external id
    let assumed = aws.assume_roles();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    let params = &assumed[0].params;
    assert_eq!(assumed[0].key, FUNCTION_KEY);
    assert_eq!(params["RoleArn"], ROLE);
    assert_eq!(params["RoleSessionName"], "cognito-reset");
    assert_eq!(params["ExternalId"], EXTERNAL_ID);
    // And every call to the other account's pool was signed with the role's credentials, the
    // own pool's with the function's
    let calls = aws.cognito_calls();
    let resets = |pool: &str, key: &str| {
        calls
            .iter()
            .filter(|c| {
                c.operation == "AdminResetUserPassword"
                    && c.params["UserPoolId"] == pool
                    && c.key == key
            })
            .count()
    };
    assert_eq!(resets(OTHER_POOL, ASSUMED_KEY), 4);
    assert_eq!(resets(OWN_POOL, FUNCTION_KEY), 1);
    assert!(
        calls
            .iter()
            .all(|c| (c.params["UserPoolId"] == OTHER_POOL) == (c.key == ASSUMED_KEY)),
        "{calls:?}"
    );
    // And the audit lines carry each pool's account; the external id is never logged (at any
    // level)
    let text = logs.text();
    let audit: Vec<&str> = text.lines().filter(|l| l.contains("record done")).collect();
    assert_eq!(audit.len(), 5);
    assert_eq!(
        audit
            .iter()
            .filter(|l| l.contains(&format!("pool_account=\"{OTHER_ACCOUNT}\"")))
            .count(),
        4,
        "{audit:?}"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|l| l.contains(&format!("pool_account=\"{FUNCTION_ACCOUNT}\"")))
            .count(),
        1
    );
    // (The SDK's own payload lines, which the function's filter caps at INFO, aside: see
    // `logging::PAYLOAD_TARGETS`.)
    for line in text.lines().filter(|l| !capped_payload_line(l)) {
        for secret in [EXTERNAL_ID, "assumedsecret", "assumedtoken"] {
            assert!(!line.contains(secret), "{secret} logged: {line}");
        }
    }
}

#[tokio::test]
async fn assumed_credentials_are_renewed_before_they_expire_and_not_before() {
    // Given a role assumed by a first reset (credentials for an hour)
    let clock = Clock::new();
    let aws = FakeAws::new(&clock);
    let app = wired(&aws, &clock, &[], None);
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "a")])
            .await
            .is_empty()
    );
    assert_eq!(aws.assume_roles().len(), 1);
    // When 50 minutes pass: the credentials are still used
    clock.advance(Duration::from_secs(50 * 60));
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "b")])
            .await
            .is_empty()
    );
    assert_eq!(aws.assume_roles().len(), 1);
    // When 58 minutes have passed (2 left: inside the SDK's refresh window, 5 minutes before
    // expiry less a jitter of up to half of it): renewed once, and the next resets use the new
    // credentials
    clock.advance(Duration::from_secs(8 * 60));
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "c")])
            .await
            .is_empty()
    );
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "d")])
            .await
            .is_empty()
    );
    assert_eq!(aws.assume_roles().len(), 2);
    // When the renewed credentials are as old: renewed again
    clock.advance(Duration::from_secs(58 * 60));
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "e")])
            .await
            .is_empty()
    );
    assert_eq!(aws.assume_roles().len(), 3);
    assert_eq!(
        aws.cognito_calls()
            .iter()
            .filter(|c| c.operation == "AdminResetUserPassword")
            .count(),
        5
    );
}

#[tokio::test]
async fn a_failed_assume_role_is_a_retry_of_its_class_and_nothing_reaches_cognito() {
    // Each way STS can fail, and what the caller is told: never a REJECTED, never a 4xx
    let cases: &[(Sts, &str, u64)] = &[
        (Sts::Fails(403, "AccessDenied"), "misconfigured", 502),
        (Sts::Fails(400, "ValidationError"), "misconfigured", 502),
        (
            Sts::Fails(403, "InvalidClientTokenId"),
            "misconfigured",
            502,
        ),
        (
            Sts::Fails(403, "RegionDisabledException"),
            "misconfigured",
            502,
        ),
        (Sts::Fails(400, "Throttling"), "throttled", 429),
        (Sts::Fails(503, "ServiceUnavailable"), "unavailable", 503),
        (Sts::Fails(500, "InternalFailure"), "unavailable", 503),
        (Sts::Refused, "unavailable", 503),
    ];
    for &(answer, code, status) in cases {
        let clock = Clock::new();
        let aws = FakeAws::new(&clock);
        // (COGNITO_MAX_ATTEMPTS=1: one lookup attempt, so one AssumeRole)
        let app = wired(&aws, &clock, &[], None);
        aws.sts_answers(&[answer]);
        let (_capture, logs) = crate::logs::capture();
        let event =
            http_event_with_body(&json!({"UserPoolId": OTHER_POOL, "Username": "a@example.com"}));
        let (got_status, got, _) = send(&app, event).await;
        assert_eq!(
            (got_status, got["error"].as_str()),
            (status, Some(code)),
            "{answer:?}: {got}"
        );
        assert_eq!(aws.assume_roles().len(), 1, "{answer:?}");
        assert!(
            aws.cognito_calls().is_empty(),
            "{answer:?}: Cognito was called"
        );
        // The audit line says it was the role (STS's code), for the operator's alarm
        let audit = logs.text();
        let line = audit
            .lines()
            .find(|l| l.contains("record done"))
            .expect("an audit line");
        assert!(line.contains("outcome=\"RETRY\""), "{line}");
        assert!(
            audit
                .lines()
                .filter(|l| !capped_payload_line(l))
                .all(|l| !l.contains(EXTERNAL_ID))
        );
        // And the next request, STS granting again, goes through
        let event =
            http_event_with_body(&json!({"UserPoolId": OTHER_POOL, "Username": "a@example.com"}));
        assert_eq!(send(&app, event).await.0, 200, "{answer:?}");
    }
}

#[tokio::test]
async fn a_reset_whose_role_cannot_be_assumed_was_not_sent_and_is_retried_not_unconfirmed() {
    // Given the role's credentials, assumed for a first reset, expire while the next record's
    // lookup runs, and STS throttles the renewal once
    let clock = Clock::new();
    let aws = FakeAws::new(&clock);
    let app = wired(&aws, &clock, &[("COGNITO_MAX_ATTEMPTS", "3")], None);
    assert!(
        reset_batch(&app, vec![body(OTHER_POOL, "a")])
            .await
            .is_empty()
    );
    *aws.lookup_takes.lock().expect("lookup") = Some(Duration::from_secs(3600));
    aws.sts_answers(&[Sts::Fails(400, "Throttling")]);
    // When the next request's reset needs the renewal
    let event =
        http_event_with_body(&json!({"UserPoolId": OTHER_POOL, "Username": "b@example.com"}));
    let (status, body, _) = send(&app, event).await;
    // Then the reset was sent again after the throttled AssumeRole (it proved nothing was
    // sent: not `reset-unconfirmed`), and went through once
    assert_eq!(status, 200, "{body}");
    assert_eq!(aws.assume_roles().len(), 3, "first, throttled, renewed");
    let resets: Vec<Seen> = aws
        .cognito_calls()
        .into_iter()
        .filter(|c| c.operation == "AdminResetUserPassword")
        .collect();
    assert_eq!(resets.len(), 2, "one per request: {resets:?}");
}

#[tokio::test(start_paused = true)]
async fn pacing_is_per_account_the_other_accounts_pool_has_its_own_quota_and_bucket() {
    // Given one reset a second per instance, and the fleet's buckets in the guard table
    let table = Table::new(Mode::Normal);
    let clock = Clock::new();
    let aws = FakeAws::new(&clock);
    let app = wired(
        &aws,
        &clock,
        &[
            ("COGNITO_RESET_QUOTA", "1"),
            ("MAX_INSTANCES", "1"),
            ("COGNITO_RESET_RPS", "1"),
        ],
        Some(&table),
    );
    // When one reset runs in each account's pool of the same region, at once
    let started = Instant::now();
    let bodies = vec![body(OWN_POOL, "mine"), body(OTHER_POOL, "theirs")];
    assert_eq!(reset_batch(&app, bodies).await, Vec::<String>::new());
    // Then neither waited for the other's turn (one region, two accounts: two quotas; one
    // account's second turn would come 1 s after its first, on tokio's paused clock)
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    // And each account has its own bucket in the function's table
    let items = table.items();
    for account in [FUNCTION_ACCOUNT, OTHER_ACCOUNT] {
        let pk = format!("bucket#{account}#us-west-2#UserAccountRecovery");
        assert!(items.contains_key(&pk), "no {pk} in {:?}", items.keys());
    }
}

#[tokio::test(start_paused = true)]
async fn a_limiter_gives_each_account_of_a_region_its_own_turns() {
    let limiters = Limiters::new(Rates {
        account_recovery: Some(1.0),
        ..Rates::OFF
    });
    let soon = Instant::now() + Duration::from_millis(100);
    let own = Scope {
        account: Some(FUNCTION_ACCOUNT),
        region: "us-west-2",
    };
    let other = Scope {
        account: Some(OTHER_ACCOUNT),
        region: "us-west-2",
    };
    let recovery = Category::UserAccountRecovery;
    let interactive = cognito_reset::limiter::Priority::Interactive;
    assert!(
        limiters
            .acquire(own, recovery, interactive, soon)
            .await
            .is_ok()
    );
    // The other account's first turn is now; the own account's second is a second away
    assert!(
        limiters
            .acquire(other, recovery, interactive, soon)
            .await
            .is_ok()
    );
    assert!(
        limiters
            .acquire(own, recovery, interactive, soon)
            .await
            .is_err()
    );
    // A throttle in one account cuts that account's rate only
    limiters.throttled(other, recovery);
    assert!(limiters.factor(other, recovery) < 1.0);
    assert_eq!(limiters.factor(own, recovery), 1.0);
}
