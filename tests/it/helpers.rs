//! Shared set-up: a policy, a fake user directory behind aws-smithy-mocks, and the app.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::operation::admin_create_user::AdminCreateUserOutput;
use aws_sdk_cognitoidentityprovider::operation::admin_get_user::{
    AdminGetUserError, AdminGetUserOutput,
};
use aws_sdk_cognitoidentityprovider::operation::admin_list_groups_for_user::{
    AdminListGroupsForUserError, AdminListGroupsForUserOutput,
};
use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::{
    AdminResetUserPasswordError, AdminResetUserPasswordOutput,
};
use aws_sdk_cognitoidentityprovider::operation::admin_user_global_sign_out::{
    AdminUserGlobalSignOutError, AdminUserGlobalSignOutOutput,
};
use aws_sdk_cognitoidentityprovider::types::error::{
    InvalidParameterException, UserNotFoundException,
};
use aws_sdk_cognitoidentityprovider::types::{
    AttributeType, GroupType, MessageActionType, UserStatusType,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::cognito::{self as directory, Directory};
use cognito_reset::aws::guard::Guard;
use cognito_reset::config::Config;
use cognito_reset::deadline::Deadline;
use cognito_reset::pipeline::App;
use serde_json::Value;

pub const POOL: &str = "us-west-2_1f950f4f389b723d0775ea6ef7e4b3c47b3100fa6981c";
pub const QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets";

/// The demo policy shipped in the repo (the sample events are written against it).
pub const DEMO_POLICY: &str = include_str!("../../policy/demo.json");

/// A user in the fake directory.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub email: String,
    pub sub: String,
    pub enabled: bool,
    pub groups: Vec<String>,
    /// What `AdminResetUserPassword` answers for this user, when not success.
    pub reset_error: Option<fn() -> AdminResetUserPasswordError>,
    /// Cognito's `UserStatus` (`CONFIRMED` unless a test says otherwise).
    pub status: UserStatusType,
}

pub fn user(local: &str, groups: &[&str]) -> TestUser {
    TestUser {
        username: format!("{local}-0000-uuid"),
        email: format!("{local}@example.com"),
        sub: format!("{local}-0000-uuid"),
        enabled: true,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        reset_error: None,
        status: UserStatusType::Confirmed,
    }
}

/// A user invited by `AdminCreateUser` who never signed in (`FORCE_CHANGE_PASSWORD`).
pub fn invited(local: &str) -> TestUser {
    TestUser {
        status: UserStatusType::ForceChangePassword,
        ..user(local, &["staff"])
    }
}

/// Cognito's answer for a user with no verified email or phone.
pub fn no_verified_contact() -> AdminResetUserPasswordError {
    AdminResetUserPasswordError::InvalidParameterException(
        InvalidParameterException::builder()
            .message("Cannot reset password for the user as there is no registered/verified email or phone_number")
            .build(),
    )
}

/// The demo world of `make demo`: see events/README.md.
pub fn demo_users() -> Vec<TestUser> {
    let mut dora = user("dora", &["staff"]);
    dora.enabled = false;
    let mut nemo = user("nemo", &["staff"]);
    nemo.reset_error = Some(no_verified_contact);
    vec![
        user("diego", &["staff"]),
        user("erin", &["staff"]),
        user("admin", &["staff"]),
        user("mallory", &["staff", "admins"]),
        user("frank", &["staff", "contractors"]),
        dora,
        nemo,
    ]
}

/// Finds a user the way Cognito does for a pool with email as username attribute and
/// case-insensitive usernames: by canonical username, email or sub, ignoring case.
fn find<'a>(users: &'a [TestUser], name: &str) -> Option<&'a TestUser> {
    users.iter().find(|u| {
        [&u.username, &u.email, &u.sub]
            .iter()
            .any(|id| id.eq_ignore_ascii_case(name))
    })
}

/// One `AdminResetUserPassword` call: canonical username and ClientMetadata.
type ResetCall = (String, Option<HashMap<String, String>>);

/// Mock rules for the three Cognito operations over a user table.
pub struct Cognito {
    pub get_user: Rule,
    pub list_groups: Rule,
    pub reset: Rule,
    /// `AdminCreateUser` (RESEND only: anything else fails the test).
    pub resend: Rule,
    /// `AdminUserGlobalSignOut`.
    pub sign_out: Rule,
    /// Canonical usernames reset so far, with the ClientMetadata passed, in call order.
    resets: Arc<Mutex<Vec<ResetCall>>>,
}

impl Cognito {
    /// Cognito with these users; resets succeed unless `reset` is replaced.
    pub fn with_users(users: Vec<TestUser>) -> Cognito {
        let users = Arc::new(users);
        let for_get = Arc::clone(&users);
        let get_user =
            mock!(Client::admin_get_user).then_compute_response(move |input| {
                match find(&for_get, input.username().unwrap_or_default()) {
                    Some(u) => MockResponse::Output(
                        AdminGetUserOutput::builder()
                            .username(&u.username)
                            .user_attributes(attr("email", &u.email))
                            .user_attributes(attr("email_verified", "true"))
                            .user_attributes(attr("sub", &u.sub))
                            .enabled(u.enabled)
                            .user_status(u.status.clone())
                            .build()
                            .expect("valid output"),
                    ),
                    None => MockResponse::Error(AdminGetUserError::UserNotFoundException(
                        UserNotFoundException::builder()
                            .message("User does not exist.")
                            .build(),
                    )),
                }
            });
        let for_groups = Arc::clone(&users);
        let list_groups = mock!(Client::admin_list_groups_for_user).then_compute_response(
            move |input| match find(&for_groups, input.username().unwrap_or_default()) {
                Some(u) => MockResponse::Output(
                    AdminListGroupsForUserOutput::builder()
                        .set_groups(Some(
                            u.groups
                                .iter()
                                .map(|g| GroupType::builder().group_name(g).build())
                                .collect(),
                        ))
                        .build(),
                ),
                None => MockResponse::Error(AdminListGroupsForUserError::UserNotFoundException(
                    UserNotFoundException::builder().build(),
                )),
            },
        );
        let for_reset = Arc::clone(&users);
        let resets = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&resets);
        let reset = mock!(Client::admin_reset_user_password).then_compute_response(move |input| {
            match find(&for_reset, input.username().unwrap_or_default()) {
                Some(TestUser {
                    reset_error: Some(error),
                    ..
                }) => MockResponse::Error(error()),
                Some(u) if input.username() == Some(u.username.as_str()) => {
                    log.lock()
                        .expect("log")
                        .push((u.username.clone(), input.client_metadata().cloned()));
                    MockResponse::Output(AdminResetUserPasswordOutput::builder().build())
                }
                // The service must always reset by canonical username.
                Some(_) => panic!("AdminResetUserPassword called with a non-canonical username"),
                None => MockResponse::Error(AdminResetUserPasswordError::UserNotFoundException(
                    UserNotFoundException::builder().build(),
                )),
            }
        });
        let resend = mock!(Client::admin_create_user).then_compute_response(|input| {
            assert_eq!(
                input.message_action(),
                Some(&MessageActionType::Resend),
                "AdminCreateUser is only ever called to RESEND"
            );
            MockResponse::Output(AdminCreateUserOutput::builder().build())
        });
        let sign_out = mock!(Client::admin_user_global_sign_out)
            .then_output(|| AdminUserGlobalSignOutOutput::builder().build());
        Cognito {
            get_user,
            list_groups,
            reset,
            resend,
            sign_out,
            resets,
        }
    }

    /// Every `AdminUserGlobalSignOut` fails with `error`.
    pub fn sign_out_fails(mut self, error: fn() -> AdminUserGlobalSignOutError) -> Cognito {
        self.sign_out = mock!(Client::admin_user_global_sign_out)
            .then_compute_response(move |_| MockResponse::Error(error()));
        self
    }

    /// Canonical usernames reset so far, in call order.
    pub fn reset_users(&self) -> Vec<String> {
        self.resets
            .lock()
            .expect("log")
            .iter()
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// The ClientMetadata passed with each reset.
    pub fn reset_metadata(&self) -> Vec<Option<HashMap<String, String>>> {
        self.resets
            .lock()
            .expect("log")
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Every `AdminResetUserPassword` fails with `error`.
    pub fn reset_fails(mut self, error: fn() -> AdminResetUserPasswordError) -> Cognito {
        self.reset = mock!(Client::admin_reset_user_password)
            .then_compute_response(move |_| MockResponse::Error(error()));
        self
    }

    /// Every `AdminListGroupsForUser` fails with `error`.
    pub fn list_groups_fails(mut self, error: fn() -> AdminListGroupsForUserError) -> Cognito {
        self.list_groups = mock!(Client::admin_list_groups_for_user)
            .then_compute_response(move |_| MockResponse::Error(error()));
        self
    }

    /// Every `AdminGetUser` fails with `error`.
    pub fn get_user_fails(mut self, error: fn() -> AdminGetUserError) -> Cognito {
        self.get_user = mock!(Client::admin_get_user)
            .then_compute_response(move |_| MockResponse::Error(error()));
        self
    }

    /// Total calls made to Cognito.
    pub fn calls(&self) -> usize {
        self.get_user.num_calls()
            + self.list_groups.num_calls()
            + self.reset.num_calls()
            + self.resend.num_calls()
            + self.sign_out.num_calls()
    }

    /// A client over these rules, configured like the real one (no SDK retries: the directory
    /// retries, `COGNITO_MAX_ATTEMPTS` times).
    pub fn client(&self) -> Client {
        self.client_with(|builder| builder)
    }

    /// The client with the function's `AwsCalls` interceptor, as `src/main.rs` gives every
    /// client: each call of a sampled invocation a span (the benchmark's traced cases; the
    /// tests here use `client`).
    #[allow(dead_code)]
    pub fn traced_client(&self) -> Client {
        self.client_with(|builder| builder.interceptor(cognito_reset::aws::trace::AwsCalls))
    }

    fn client_with(
        &self,
        extra: impl Fn(
            aws_sdk_cognitoidentityprovider::config::Builder,
        ) -> aws_sdk_cognitoidentityprovider::config::Builder,
    ) -> Client {
        let settings = ClientSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 1,
        };
        mock_client!(
            aws_sdk_cognitoidentityprovider,
            RuleMode::MatchAny,
            [
                &self.get_user,
                &self.list_groups,
                &self.reset,
                &self.resend,
                &self.sign_out
            ],
            |builder| extra(directory::configure(builder, settings))
        )
    }
}

pub fn attr(name: &str, value: &str) -> AttributeType {
    AttributeType::builder()
        .name(name)
        .value(value)
        .build()
        .expect("valid attribute")
}

/// Configuration from settings (`POLICY` is required among them). Cognito calls are not paced
/// unless a test sets `COGNITO_RESET_RPS` or `COGNITO_READ_RPS`.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // No pacing, and one attempt per Cognito call, unless a test asks for more.
    for (name, value) in [
        ("COGNITO_RESET_RPS", "unlimited"),
        ("COGNITO_READ_RPS", "unlimited"),
        ("COGNITO_RESOURCE_READ_RPS", "unlimited"),
        ("COGNITO_CREATION_RPS", "unlimited"),
        ("COGNITO_UPDATE_RPS", "unlimited"),
        ("COGNITO_MAX_ATTEMPTS", "1"),
    ] {
        if !vars.iter().any(|(k, _)| k == name) {
            vars.push((name.to_owned(), value.to_owned()));
        }
    }
    // A budget is counted in the guard's table, and the function does not start without one
    // (the demo policy has a budget): name the table, as every deployment with a budget does.
    // The app's guard is still the test's choice (`app` has none, `guarded_app` the fake table).
    let has_budget = vars.iter().any(|(k, v)| {
        k == "POLICY" && cognito_reset::policy::Policy::from_json(v).is_ok_and(|p| p.has_budget())
    });
    if has_budget && !vars.iter().any(|(k, _)| k == "GUARD_TABLE") {
        vars.push(("GUARD_TABLE".to_owned(), crate::dynamodb::TABLE.to_owned()));
    }
    Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("valid test configuration")
}

pub fn app(config: Config, client: Client) -> Arc<App> {
    let policy = config.fixed_policy().expect("a fixed test policy");
    app_with_policy(config, client, policy)
}

/// The app over `client` with the policy `store` (e.g. a live one over a scripted parameter).
pub fn app_with_policy(
    config: Config,
    client: Client,
    store: cognito_reset::policy_source::PolicyStore,
) -> Arc<App> {
    let directory = Directory::sdk(client, config.cognito, config.deadline_margin, config.rates);
    Arc::new(App::new(config, directory, None, store, None))
}

/// The demo policy over the demo users, with the guard on over `table`.
pub fn guarded_app(
    cognito: &Cognito,
    table: &crate::dynamodb::Table,
    cooldown_secs: u64,
    dry_run: bool,
) -> Arc<App> {
    guarded_app_with_policy(cognito, table, DEMO_POLICY, cooldown_secs, dry_run)
}

/// `policy` over the demo users, with the guard on over `table`.
pub fn guarded_app_with_policy(
    cognito: &Cognito,
    table: &crate::dynamodb::Table,
    policy: &str,
    cooldown_secs: u64,
    dry_run: bool,
) -> Arc<App> {
    let dry = if dry_run { "true" } else { "false" };
    let config = config(&[
        ("POLICY", policy),
        ("DRY_RUN", dry),
        ("GUARD_TABLE", crate::dynamodb::TABLE),
    ]);
    let guard = Guard::dynamodb(
        table.client(),
        crate::dynamodb::settings(cooldown_secs),
        dry_run,
        config.deadline_margin,
    );
    let directory = Directory::sdk(
        cognito.client(),
        config.cognito,
        config.deadline_margin,
        config.rates,
    );
    let policy = config.fixed_policy().expect("a fixed test policy");
    Arc::new(App::new(config, directory, Some(guard), policy, None))
}

/// The demo policy over the demo users.
pub fn demo_app(cognito: &Cognito) -> Arc<App> {
    app(config(&[("POLICY", DEMO_POLICY)]), cognito.client())
}

pub fn far_deadline() -> Deadline {
    Deadline(Instant::now() + Duration::from_secs(60))
}

pub fn event(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/events/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("events/{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{path}: {e}"))
}

/// An HTTP API event from a sample, with its body replaced.
pub fn http_event_with_body(body: &Value) -> Value {
    let mut event = event("http-api-v2.json");
    event["body"] = Value::String(body.to_string());
    event
}

/// The status and the parsed JSON body of an HTTP response.
pub fn http_parts(response: &Value) -> (u64, Value) {
    let status = response["statusCode"].as_u64().expect("statusCode");
    let body = serde_json::from_str(response["body"].as_str().expect("body")).expect("JSON body");
    (status, body)
}

/// Sends an HTTP event (request id `req-1`): status, parsed body and the whole response.
pub async fn send(app: &Arc<App>, event: Value) -> (u64, Value, Value) {
    let response = cognito_reset::sources::dispatch(app, event, "req-1", far_deadline())
        .await
        .expect("an HTTP response");
    let (status, body) = http_parts(&response);
    (status, body, response)
}

/// The message ids listed in an SQS batch response.
pub fn failed_ids(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures")
        .iter()
        .map(|f| {
            f["itemIdentifier"]
                .as_str()
                .expect("itemIdentifier")
                .to_owned()
        })
        .collect()
}

/// An SQS event of one record per body, from `queue`.
pub fn sqs_event(queue: &str, bodies: &[(String, Option<&str>)]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, (body, group))| {
            let mut attributes = serde_json::json!({"ApproximateReceiveCount": "1"});
            if let Some(group) = group {
                attributes["MessageGroupId"] = Value::from(*group);
            }
            serde_json::json!({
                "messageId": format!("m{i}"),
                "receiptHandle": format!("h{i}"),
                "body": body,
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue,
                "awsRegion": "us-west-2"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

pub fn reset_body(username: &str) -> String {
    serde_json::json!({"UserPoolId": POOL, "Username": username}).to_string()
}

/// One call a fake endpoint received: when, on which host, which operation.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub host: String,
    pub operation: String,
    pub username: String,
}

/// Counts concurrent calls: `enter` on start, the guard leaves on drop. Keeps a log of calls.
#[derive(Default, Debug)]
pub struct InFlight {
    now: AtomicUsize,
    pub max: AtomicUsize,
    pub total: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl InFlight {
    /// Logs a call as it arrives.
    pub fn log(&self, host: &str, operation: &str, username: &str) {
        self.calls.lock().expect("log").push(Call {
            at: Instant::now(),
            host: host.to_owned(),
            operation: operation.to_owned(),
            username: username.to_owned(),
        });
    }

    /// The calls received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("log").clone()
    }

    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }
}

pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}
