//! The live policy: loaded at start-up, refreshed at most once per interval, swapped in only
//! when valid; over a scripted parameter source and over SSM behind aws-smithy-mocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
use aws_sdk_ssm::types::error::ParameterNotFound;
use aws_sdk_ssm::types::{Parameter, ParameterType};
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::parameters::{self, SsmParameter};
use cognito_reset::policy::{Caller, Decision, DenyReason, Subject};
use cognito_reset::policy_source::{
    self, FetchError, FetchErrorKind, FetchFuture, ParameterSource, PolicySourceError, PolicyStore,
    PolicyText, Refresh, RefreshSettings,
};

use crate::helpers::{DEMO_POLICY, POOL, QUEUE};

const PARAMETER: &str = "/cognito-reset/policy";

/// The demo policy with erin denied too.
fn erin_denied() -> String {
    DEMO_POLICY.replace(
        r#""users": ["admin@example.com", "root@*"]"#,
        r#""users": ["admin@example.com", "root@*", "erin@example.com"]"#,
    )
}

/// Two errors: an unknown field and a rule without callers.
const INVALID: &str =
    r#"{"version": 1, "rules": [{"name": "x", "userPools": ["*"], "users": ["*"], "oops": 1}]}"#;

/// What the policy in force decides for erin, asked for by the ticket queue.
fn erin_decision(store: &PolicyStore) -> Decision {
    let caller = Caller::Identified(vec![QUEUE.to_owned()]);
    let erin = Subject {
        username: "erin-0000-uuid".to_owned(),
        email: Some("erin@example.com".to_owned()),
        ..Subject::default()
    };
    store.current().policy.decide(&caller, POOL, &erin)
}

/// One scripted answer of the fake parameter.
#[derive(Debug)]
enum Step {
    Version(&'static str, String),
    Fails(FetchErrorKind),
    Hangs,
}

/// A parameter that answers from a script and counts its reads.
#[derive(Debug, Default)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    reads: AtomicUsize,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Arc<Scripted> {
        Arc::new(Scripted {
            steps: Mutex::new(steps.into()),
            reads: AtomicUsize::new(0),
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// The store owns its source; the test keeps a handle to the script.
#[derive(Debug)]
struct Handle(Arc<Scripted>);

impl ParameterSource for Handle {
    fn describe(&self) -> String {
        format!("POLICY_PARAMETER={PARAMETER}")
    }

    fn fetch(&self) -> FetchFuture<'_> {
        self.0.reads.fetch_add(1, Ordering::SeqCst);
        let step = self.0.steps.lock().expect("script").pop_front();
        Box::pin(async move {
            match step {
                Some(Step::Version(version, text)) => Ok(PolicyText {
                    text,
                    version: version.to_owned(),
                }),
                Some(Step::Fails(kind)) => Err(FetchError::new(kind, "scripted failure")),
                Some(Step::Hangs) => std::future::pending().await,
                None => panic!("read more often than the test scripted"),
            }
        })
    }
}

fn settings(interval_secs: u64) -> RefreshSettings {
    RefreshSettings {
        interval: Duration::from_secs(interval_secs),
        timeout: Duration::from_millis(200),
        // The demo policy has a budget: a guarded function.
        guard_table: true,
    }
}

async fn store_over(steps: Vec<Step>, t0: Instant) -> (PolicyStore, Arc<Scripted>) {
    let script = Scripted::new(steps);
    let store = PolicyStore::load(Box::new(Handle(Arc::clone(&script))), settings(60), t0)
        .await
        .expect("the first version loads");
    (store, script)
}

#[tokio::test]
async fn a_valid_new_version_is_swapped_in_and_decides_from_then_on() {
    // Given version 1 in force
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("2", erin_denied()),
        ],
        t0,
    )
    .await;
    assert_eq!(store.current().version, "1");
    assert!(matches!(erin_decision(&store), Decision::Allow { .. }));

    // When version 2 is read after the interval
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;

    // Then it is in force, and says so
    assert!(
        matches!(&refresh, Refresh::Swapped { previous, version } if previous == "1" && version == "2"),
        "{refresh:?}"
    );
    assert_eq!(store.current().version, "2");
    assert_eq!(
        erin_decision(&store),
        Decision::Deny(DenyReason::DeniedUser)
    );
}

#[tokio::test]
async fn an_invalid_new_version_is_refused_with_every_error_and_the_last_good_stays() {
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("2", INVALID.to_owned()),
        ],
        t0,
    )
    .await;

    let refresh = store.refresh_if_due(t0 + Duration::from_secs(61)).await;

    let Refresh::Refused { kept, error } = refresh else {
        panic!("not refused: {refresh:?}");
    };
    assert_eq!(kept, "1");
    let PolicySourceError::Invalid {
        version, errors, ..
    } = &error
    else {
        panic!("not invalid: {error:?}");
    };
    assert_eq!(version, "2");
    assert!(errors.len() >= 2, "every error is reported: {errors}");
    let message = error.to_string();
    assert!(message.contains("POLICY_PARAMETER"), "{message}");
    assert!(message.contains("oops"), "{message}");
    assert!(message.contains("callers"), "{message}");
    assert_eq!(store.current().version, "1");
    assert!(matches!(erin_decision(&store), Decision::Allow { .. }));
}

#[tokio::test]
async fn a_refusal_is_logged_once_with_every_error_and_a_swap_once_with_its_version() {
    let (_guard, logs) = crate::logs::capture();
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("2", INVALID.to_owned()),
            Step::Version("3", erin_denied()),
        ],
        t0,
    )
    .await;

    let refused = store.refresh_if_due(t0 + Duration::from_secs(60)).await;
    let Refresh::Refused {
        error: PolicySourceError::Invalid { errors, .. },
        ..
    } = &refused
    else {
        panic!("not refused as invalid: {refused:?}");
    };
    let warnings = logs.lines_at("WARN");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = logs.text();
    assert!(warning.contains("policy update refused"));
    assert!(warning.contains("kept_version=1"), "{warning}");
    assert!(warning.contains("refused_version=\"2\""), "{warning}");
    assert!(
        warning.contains(&format!("error_count={}", errors.len())),
        "{warning}"
    );
    for error in errors {
        assert!(
            warning.contains(&error.to_string()),
            "{error} missing from {warning}"
        );
    }

    store.refresh_if_due(t0 + Duration::from_secs(120)).await;
    let infos: Vec<String> = logs
        .lines_at("INFO")
        .into_iter()
        .filter(|l| l.contains("new policy version in force"))
        .collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(
        infos[0].contains("previous_version=1") && infos[0].contains("version=3"),
        "{}",
        infos[0]
    );
}

#[tokio::test]
async fn an_unreadable_parameter_is_refused_and_the_last_good_stays() {
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Fails(FetchErrorKind::Misconfigured),
        ],
        t0,
    )
    .await;

    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;

    assert!(
        matches!(
            &refresh,
            Refresh::Refused { kept, error: PolicySourceError::Unreadable { source, .. } }
                if kept == "1" && source.kind == FetchErrorKind::Misconfigured
        ),
        "{refresh:?}"
    );
    assert_eq!(store.current().version, "1");
}

#[tokio::test]
async fn a_read_slower_than_the_timeout_is_abandoned_and_refused() {
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![Step::Version("1", DEMO_POLICY.to_owned()), Step::Hangs],
        t0,
    )
    .await;

    let started = Instant::now();
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    assert!(
        matches!(
            &refresh,
            Refresh::Refused { error: PolicySourceError::Unreadable { source, .. }, .. }
                if source.kind == FetchErrorKind::Unavailable
        ),
        "{refresh:?}"
    );
    assert_eq!(store.current().version, "1");
}

#[tokio::test]
async fn the_parameter_is_never_read_more_often_than_the_interval() {
    // Given a store loaded at t0 with a 60 s interval
    let t0 = Instant::now();
    let (store, script) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Fails(FetchErrorKind::Throttled),
            Step::Version("2", erin_denied()),
        ],
        t0,
    )
    .await;
    let at = |secs: u64| t0 + Duration::from_secs(secs);

    // Then calls before the interval read nothing
    for secs in [0, 1, 30, 59] {
        assert!(matches!(
            store.refresh_if_due(at(secs)).await,
            Refresh::NotDue
        ));
    }
    assert_eq!(script.reads(), 1, "only the start-up read");

    // A read at 60 s finds the same version
    assert!(matches!(
        store.refresh_if_due(at(60)).await,
        Refresh::Unchanged { version } if version == "1"
    ));
    // The next is due at 120 s, even after a failed read at 120 s (not retried at 121 s)
    assert!(matches!(
        store.refresh_if_due(at(119)).await,
        Refresh::NotDue
    ));
    assert!(matches!(
        store.refresh_if_due(at(120)).await,
        Refresh::Refused { .. }
    ));
    assert!(matches!(
        store.refresh_if_due(at(121)).await,
        Refresh::NotDue
    ));
    assert!(matches!(
        store.refresh_if_due(at(179)).await,
        Refresh::NotDue
    ));
    assert!(matches!(
        store.refresh_if_due(at(180)).await,
        Refresh::Swapped { .. }
    ));
    assert_eq!(script.reads(), 4);
}

#[tokio::test]
async fn concurrent_records_trigger_one_read_and_never_wait_for_it() {
    let t0 = Instant::now();
    let (store, script) = store_over(
        vec![Step::Version("1", DEMO_POLICY.to_owned()), Step::Hangs],
        t0,
    )
    .await;
    let store = Arc::new(store);
    let due = t0 + Duration::from_secs(60);

    // One record starts the (slow) read; the others go on at once without reading.
    let slow = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.refresh_if_due(due).await })
    };
    while script.reads() < 2 {
        tokio::task::yield_now().await;
    }
    for _ in 0..5 {
        let refresh = store.refresh_if_due(due).await;
        assert!(matches!(refresh, Refresh::NotDue), "{refresh:?}");
    }
    assert_eq!(
        store.current().version,
        "1",
        "records keep the policy in force"
    );
    assert!(matches!(slow.await.expect("task"), Refresh::Refused { .. }));
    assert_eq!(script.reads(), 2);
}

#[tokio::test]
async fn an_invalid_policy_at_start_up_stops_the_function_naming_the_variable() {
    let script = Scripted::new(vec![Step::Version("3", INVALID.to_owned())]);
    let error = PolicyStore::load(Box::new(Handle(script)), settings(60), Instant::now())
        .await
        .expect_err("invalid");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("POLICY_PARAMETER={PARAMETER}: version 3")),
        "{message}"
    );

    let script = Scripted::new(vec![Step::Fails(FetchErrorKind::NotFound)]);
    let error = PolicyStore::load(Box::new(Handle(script)), settings(60), Instant::now())
        .await
        .expect_err("unreadable");
    assert!(
        error.to_string().starts_with("POLICY_PARAMETER="),
        "{error}"
    );
    assert!(error.to_string().contains("ssm:GetParameter"), "{error}");
}

#[tokio::test]
async fn a_fixed_policy_is_versioned_by_its_content_and_never_read_again() {
    let policy = Arc::new(cognito_reset::policy::Policy::from_json(DEMO_POLICY).expect("valid"));
    let version = policy_source::content_version(DEMO_POLICY);
    let store = PolicyStore::fixed(policy, version.clone());
    assert!(version.starts_with("sha256:"));
    assert_eq!(store.current().version, version);
    let later = Instant::now() + Duration::from_secs(3600);
    assert!(matches!(store.refresh_if_due(later).await, Refresh::NotDue));
}

// --- SSM Parameter Store behind aws-smithy-mocks -------------------------------------------

fn ssm_output(version: i64, text: &str, kind: ParameterType) -> GetParameterOutput {
    GetParameterOutput::builder()
        .parameter(
            Parameter::builder()
                .name(PARAMETER)
                .r#type(kind)
                .value(text)
                .version(version)
                .build(),
        )
        .build()
}

fn ssm_client(rule: &aws_smithy_mocks::Rule) -> Client {
    let settings = ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [rule], |builder| {
        parameters::configure(builder, settings)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
    })
}

#[tokio::test]
async fn ssm_versions_are_read_with_decryption_and_reported() {
    // Given a SecureString parameter at version 7, then 8 with erin denied
    let answers = Arc::new(Mutex::new(VecDeque::from([
        ssm_output(7, DEMO_POLICY, ParameterType::SecureString),
        ssm_output(8, &erin_denied(), ParameterType::SecureString),
    ])));
    let rule = mock!(Client::get_parameter)
        .match_requests(|input| {
            input.name() == Some(PARAMETER) && input.with_decryption() == Some(true)
        })
        .then_compute_response(move |_| {
            MockResponse::Output(
                answers
                    .lock()
                    .expect("answers")
                    .pop_front()
                    .expect("scripted"),
            )
        });
    let source = SsmParameter::new(ssm_client(&rule), PARAMETER);
    let t0 = Instant::now();

    // When loaded, then refreshed
    let store = PolicyStore::load(Box::new(source), settings(60), t0)
        .await
        .expect("loads");
    assert_eq!(store.current().version, "7");
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;

    // Then the parameter's version numbers are the policy's versions
    assert!(
        matches!(&refresh, Refresh::Swapped { previous, version } if previous == "7" && version == "8"),
        "{refresh:?}"
    );
    assert_eq!(
        erin_decision(&store),
        Decision::Deny(DenyReason::DeniedUser)
    );
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn a_missing_ssm_parameter_stops_start_up_and_a_string_list_is_refused() {
    let missing = mock!(Client::get_parameter)
        .then_error(|| GetParameterError::ParameterNotFound(ParameterNotFound::builder().build()));
    let error = PolicyStore::load(
        Box::new(SsmParameter::new(ssm_client(&missing), PARAMETER)),
        settings(60),
        Instant::now(),
    )
    .await
    .expect_err("no parameter");
    assert!(matches!(
        &error,
        PolicySourceError::Unreadable { source, .. } if source.kind == FetchErrorKind::NotFound
    ));
    assert!(error.to_string().contains(PARAMETER), "{error}");

    let list = mock!(Client::get_parameter)
        .then_output(|| ssm_output(1, "a,b", ParameterType::StringList));
    let error = PolicyStore::load(
        Box::new(SsmParameter::new(ssm_client(&list), PARAMETER)),
        settings(60),
        Instant::now(),
    )
    .await
    .expect_err("a StringList");
    assert!(matches!(
        &error,
        PolicySourceError::Unreadable { source, .. } if source.kind == FetchErrorKind::Misconfigured
    ));
}

// ---- through the function: refreshed between invocations --------------------------------------

#[tokio::test]
async fn the_function_picks_up_a_new_version_between_invocations_and_refuses_an_invalid_one() {
    use crate::helpers::{
        Cognito, app_with_policy, config, demo_users, failed_ids, far_deadline, reset_body,
        sqs_event,
    };

    // Given the demo policy live from a parameter, re-read at every invocation
    let script = Scripted::new(vec![
        Step::Version("1", DEMO_POLICY.to_owned()),
        Step::Version("2", erin_denied()),
        Step::Version("3", INVALID.to_owned()),
    ]);
    let store = PolicyStore::load(
        Box::new(Handle(Arc::clone(&script))),
        settings(0),
        Instant::now(),
    )
    .await
    .expect("version 1 loads");
    let cognito = Cognito::with_users(demo_users());
    let app = app_with_policy(config(&[("POLICY", DEMO_POLICY)]), cognito.client(), store);
    let erin = || sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);

    // When version 2 (erin denied) is put: the next invocation reads it and refuses erin
    let (response, metrics) =
        cognito_reset::sources::invoke(&app, erin(), "r1", far_deadline()).await;
    assert_eq!(
        failed_ids(&response.expect("response")),
        Vec::<String>::new()
    );
    assert_eq!(
        cognito.reset_users(),
        Vec::<String>::new(),
        "erin is denied by version 2"
    );
    assert_eq!(app.policy.current().version, "2");
    let doc: serde_json::Value =
        serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON");
    assert_eq!(
        (
            doc["PolicyReloads"].as_u64(),
            doc["PolicyRefusals"].as_u64()
        ),
        (Some(1), Some(0))
    );

    // When version 3 is invalid: refused, version 2 still decides
    let (_, metrics) = cognito_reset::sources::invoke(&app, erin(), "r2", far_deadline()).await;
    assert_eq!(app.policy.current().version, "2");
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
    let doc: serde_json::Value =
        serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON");
    assert_eq!(
        (
            doc["PolicyReloads"].as_u64(),
            doc["PolicyRefusals"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(script.reads(), 3);
}

// --- issue 15: freshness by content, a bound on a stale policy, a refresh within the deadline ---

#[tokio::test]
async fn a_parameter_recreated_at_the_same_version_number_with_new_content_is_swapped_in() {
    // Given version 1 in force, then the parameter deleted and created again: version 1 again,
    // with erin denied (an emergency deny)
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("1", erin_denied()),
        ],
        t0,
    )
    .await;
    let before = store.current().content.clone();

    // When it is read after the interval
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;

    // Then the new content is in force, as on a cold start
    assert!(matches!(refresh, Refresh::Swapped { .. }), "{refresh:?}");
    assert_ne!(store.current().content, before);
    assert_eq!(store.current().version, "1");
    assert_eq!(
        erin_decision(&store),
        Decision::Deny(DenyReason::DeniedUser)
    );
}

#[tokio::test]
async fn the_same_content_under_a_new_version_number_is_kept_and_the_number_reported() {
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Version("2", DEMO_POLICY.to_owned()),
        ],
        t0,
    )
    .await;
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(60)).await;
    assert!(
        matches!(&refresh, Refresh::Unchanged { version } if version == "2"),
        "{refresh:?}"
    );
    assert_eq!(store.current().version, "2");
    assert_eq!(
        store.current().content,
        policy_source::content_version(DEMO_POLICY)
    );
}

#[tokio::test]
async fn the_policys_age_is_the_time_since_the_last_successful_read() {
    // Given a policy read at t0, then reads that fail
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![
            Step::Version("1", DEMO_POLICY.to_owned()),
            Step::Fails(FetchErrorKind::Misconfigured),
            Step::Version("2", INVALID.to_owned()),
            Step::Version("2", DEMO_POLICY.to_owned()),
        ],
        t0,
    )
    .await;
    assert_eq!(store.age(t0), Duration::ZERO);
    // An unreadable and an invalid version do not refresh it
    store.refresh_if_due(t0 + Duration::from_secs(60)).await;
    store.refresh_if_due(t0 + Duration::from_secs(120)).await;
    assert_eq!(
        store.age(t0 + Duration::from_secs(150)),
        Duration::from_secs(150)
    );
    // A good read (here the same content under a new number) does
    store.refresh_if_due(t0 + Duration::from_secs(180)).await;
    assert_eq!(
        store.age(t0 + Duration::from_secs(190)),
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn a_refresh_with_no_time_to_spare_reads_nothing() {
    let t0 = Instant::now();
    let (store, script) = store_over(vec![Step::Version("1", DEMO_POLICY.to_owned())], t0).await;
    let refresh = store
        .refresh_within(t0 + Duration::from_secs(60), Duration::ZERO)
        .await;
    assert!(matches!(refresh, Refresh::NotDue), "{refresh:?}");
    assert_eq!(script.reads(), 1, "only the start-up read");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_read_is_cut_at_the_time_the_invocation_can_spare() {
    let t0 = Instant::now();
    let (store, _) = store_over(
        vec![Step::Version("1", DEMO_POLICY.to_owned()), Step::Hangs],
        t0,
    )
    .await;
    let started = tokio::time::Instant::now();
    let refresh = store
        .refresh_within(t0 + Duration::from_secs(60), Duration::from_millis(50))
        .await;
    assert!(matches!(refresh, Refresh::Refused { .. }), "{refresh:?}");
    assert_eq!(started.elapsed(), Duration::from_millis(50));
}

#[tokio::test]
async fn records_are_refused_rather_than_decided_on_a_policy_older_than_the_max_age() {
    use crate::helpers::{
        Cognito, app_with_policy, config, demo_users, failed_ids, far_deadline, reset_body,
        sqs_event,
    };

    // Given a policy last read 300 s ago, POLICY_MAX_AGE_SECONDS=120, and the parameter now
    // unreadable (KMS or IAM broken)
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(300))
        .expect("the clock is past 300 s");
    let script = Scripted::new(vec![
        Step::Version("1", DEMO_POLICY.to_owned()),
        Step::Fails(FetchErrorKind::Misconfigured),
        Step::Version("1", DEMO_POLICY.to_owned()),
    ]);
    let store = PolicyStore::load(
        Box::new(Handle(Arc::clone(&script))),
        settings(60),
        long_ago,
    )
    .await
    .expect("version 1 loads");
    let cognito = Cognito::with_users(demo_users());
    let app = app_with_policy(
        config(&[
            ("POLICY_PARAMETER", PARAMETER),
            ("POLICY_REFRESH_SECONDS", "60"),
            ("POLICY_MAX_AGE_SECONDS", "120"),
        ]),
        cognito.client(),
        store,
    );
    let erin = || sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]);

    // When a record comes: the refresh fails, the policy is 300 s old
    let (response, metrics) =
        cognito_reset::sources::invoke(&app, erin(), "r1", far_deadline()).await;

    // Then it is handed back (RETRY policy-stale), and Cognito is not asked
    assert_eq!(failed_ids(&response.expect("response")), ["m0"]);
    assert_eq!(cognito.calls(), 0);
    let doc: serde_json::Value =
        serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON");
    assert_eq!(doc["Records.RETRY.policy-stale"].as_u64(), Some(1), "{doc}");
    assert_eq!(script.reads(), 2);
}

#[tokio::test]
async fn a_hanging_parameter_read_never_makes_the_records_miss_their_deadline() {
    use crate::helpers::{
        Cognito, app_with_policy, config, demo_users, failed_ids, reset_body, sqs_event,
    };
    use cognito_reset::deadline::Deadline;

    // Given a parameter due for a read that hangs (2 s read timeout), and an invocation with 3 s
    // left and the default 2 s margin
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(300))
        .expect("the clock is past 300 s");
    let script = Scripted::new(vec![
        Step::Version("1", DEMO_POLICY.to_owned()),
        Step::Hangs,
    ]);
    let store = PolicyStore::load(
        Box::new(Handle(Arc::clone(&script))),
        RefreshSettings {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            guard_table: true,
        },
        long_ago,
    )
    .await
    .expect("version 1 loads");
    let cognito = Cognito::with_users(demo_users());
    let app = app_with_policy(
        config(&[
            ("POLICY_PARAMETER", PARAMETER),
            ("POLICY_REFRESH_SECONDS", "60"),
        ]),
        cognito.client(),
        store,
    );
    let deadline = Deadline(tokio::time::Instant::now() + Duration::from_secs(3));

    // When a record comes
    let (response, _) = cognito_reset::sources::invoke(
        &app,
        sqs_event(QUEUE, &[(reset_body("erin@example.com"), None)]),
        "r1",
        deadline,
    )
    .await;

    // Then the read is left for a later invocation and erin is reset in this one
    assert_eq!(
        failed_ids(&response.expect("response")),
        Vec::<String>::new()
    );
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
    assert_eq!(script.reads(), 1, "only the start-up read");
}

/// A policy without budgets: what a function without `GUARD_TABLE` can run.
fn no_budget_policy() -> String {
    let mut policy: serde_json::Value = serde_json::from_str(DEMO_POLICY).expect("JSON");
    for rule in policy["rules"].as_array_mut().expect("rules") {
        rule.as_object_mut().expect("rule").remove("budget");
    }
    policy.to_string()
}

#[tokio::test]
async fn without_a_guard_table_a_budget_is_refused_at_start_up_and_on_refresh() {
    let t0 = Instant::now();
    let unguarded = RefreshSettings {
        guard_table: false,
        ..settings(60)
    };
    // At start-up: the function does not start, naming the rule's budget.
    let script = Scripted::new(vec![Step::Version("1", DEMO_POLICY.to_owned())]);
    let error = PolicyStore::load(Box::new(Handle(script)), unguarded, t0)
        .await
        .expect_err("a budget without a table");
    let message = error.to_string();
    assert!(message.contains("rules[2].budget"), "{message}");
    assert!(message.contains("GUARD_TABLE"), "{message}");
    // On refresh: a new version with a budget is refused like an invalid one; the last good stays.
    let script = Scripted::new(vec![
        Step::Version("1", no_budget_policy()),
        Step::Version("2", DEMO_POLICY.to_owned()),
    ]);
    let store = PolicyStore::load(Box::new(Handle(Arc::clone(&script))), unguarded, t0)
        .await
        .expect("no budget, no table: fine");
    let refresh = store.refresh_if_due(t0 + Duration::from_secs(61)).await;
    assert!(
        matches!(&refresh, Refresh::Refused { kept, error: PolicySourceError::Invalid { .. } } if kept == "1"),
        "{refresh:?}"
    );
    assert_eq!(store.current().version, "1");
}
