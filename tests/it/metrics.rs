//! The EMF document: checked against the CloudWatch embedded metric format specification's
//! required fields and limits, and its counts against a mixed set of outcomes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cognito_reset::metrics::{DEFAULT_NAMESPACE, MAX_DIMENSIONS, Metrics};
use serde_json::Value;

/// The units CloudWatch accepts.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one EMF document against the specification; returns the metric names it declares.
fn assert_valid_emf(line: &str, namespace: &str) -> Vec<String> {
    assert!(!line.contains('\n'), "one line");
    let doc: Value = serde_json::from_str(line).expect("the document is one JSON object");
    let root = doc.as_object().expect("root is an object");
    let aws = root["_aws"].as_object().expect("_aws is an object");
    let timestamp = aws["Timestamp"]
        .as_u64()
        .expect("Timestamp is a non-negative integer");
    assert!(
        timestamp > 1_600_000_000_000,
        "Timestamp is milliseconds since the epoch"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics is an array");
    assert!(!directives.is_empty());
    let mut names = Vec::new();
    for directive in directives {
        let directive = directive.as_object().expect("a MetricDirective object");
        let mut keys: Vec<&str> = directive.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["Dimensions", "Metrics", "Namespace"],
            "no extra members"
        );
        let ns = directive["Namespace"].as_str().expect("Namespace string");
        assert_eq!(ns, namespace);
        assert!(!ns.is_empty() && ns.len() <= 255);
        for set in directive["Dimensions"]
            .as_array()
            .expect("Dimensions array")
        {
            let set = set.as_array().expect("a DimensionSet array");
            assert!(set.len() <= MAX_DIMENSIONS, "at most 30 dimension keys");
            for key in set {
                let key = key.as_str().expect("dimension keys are strings");
                assert!(
                    root.get(key).is_some_and(Value::is_string),
                    "dimension {key} is a string member of the root"
                );
            }
        }
        let metrics = directive["Metrics"].as_array().expect("Metrics array");
        assert!(metrics.len() <= 100, "at most 100 metrics per directive");
        for metric in metrics {
            let name = metric["Name"].as_str().expect("Name string");
            assert!(!name.is_empty() && name.len() <= 255);
            if let Some(unit) = metric.get("Unit") {
                assert!(
                    UNITS.contains(&unit.as_str().expect("Unit string")),
                    "{unit} is a CloudWatch unit"
                );
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) => {
                    assert!(
                        !values.is_empty() && values.len() <= 100,
                        "{name}: 1-100 values"
                    );
                    assert!(values.iter().all(Value::is_number), "{name}: numbers only");
                }
                other => panic!("metric {name} is not a number or an array: {other:?}"),
            }
            names.push(name.to_owned());
        }
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each metric declared once");
    names
}

fn doc(metrics: &Metrics) -> Value {
    serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON")
}

#[test]
fn a_mixed_invocation_gives_one_valid_document_with_the_right_counts() {
    // Given a batch with every kind of outcome
    let mut metrics = Metrics::new(DEFAULT_NAMESPACE);
    for (outcome, code, n) in [
        ("RESET", "", 3),
        ("WOULD_RESET", "", 1),
        ("REJECTED", "denied-user", 2),
        ("REJECTED", "user-not-found", 1),
        ("RETRY", "throttled", 1),
        ("RETRY", "misconfigured", 2),
    ] {
        for _ in 0..n {
            metrics.record_outcome(outcome, code);
        }
    }
    metrics.cognito_latency("AdminGetUser", Duration::from_millis(12));
    metrics.cognito_latency("AdminGetUser", Duration::from_micros(20_500));
    metrics.cognito_latency("AdminResetUserPassword", Duration::from_millis(40));
    metrics.guard_latency(Duration::from_millis(3));
    metrics.events_not_delivered(2);
    metrics.policy_refused();

    // When it is written
    let mut out = Vec::new();
    metrics.flush(&mut out).expect("write");
    let text = String::from_utf8(out).expect("UTF-8");

    // Then there is exactly one line, a valid EMF document
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let names = assert_valid_emf(text.trim_end(), DEFAULT_NAMESPACE);
    let d: Value = serde_json::from_str(text.trim_end()).expect("JSON");
    let expected_counts = [
        ("Records", 10),
        ("Records.RESET", 3),
        ("Records.WOULD_RESET", 1),
        ("Records.REJECTED", 3),
        ("Records.REJECTED.denied-user", 2),
        ("Records.REJECTED.user-not-found", 1),
        ("Records.RETRY", 3),
        ("Records.RETRY.throttled", 1),
        ("Records.RETRY.misconfigured", 2),
        ("EventsNotDelivered", 2),
        ("PolicyReloads", 0),
        ("PolicyRefusals", 1),
    ];
    for (name, count) in expected_counts {
        assert_eq!(d[name], count, "{name}");
        assert!(names.iter().any(|n| n == name), "{name} is declared");
    }
    // No code metric for outcomes without a code.
    assert!(d.get("Records.RESET.").is_none());
    assert_eq!(
        d["CognitoLatency.AdminGetUser"],
        serde_json::json!([12.0, 20.5])
    );
    assert_eq!(
        d["CognitoLatency.AdminResetUserPassword"],
        serde_json::json!([40.0])
    );
    assert_eq!(d["GuardLatency"], serde_json::json!([3.0]));
    // Every declared metric has its unit: counts and milliseconds.
    let directive = &d["_aws"]["CloudWatchMetrics"][0];
    for metric in directive["Metrics"].as_array().expect("metrics") {
        let name = metric["Name"].as_str().expect("name");
        let unit = if name.contains("Latency") {
            "Milliseconds"
        } else {
            "Count"
        };
        assert_eq!(metric["Unit"], unit, "{name}");
    }
}

#[test]
fn the_timestamp_is_the_invocations_in_whole_milliseconds() {
    let time = UNIX_EPOCH + Duration::from_millis(1_795_770_000_123);
    let mut metrics = Metrics::new(DEFAULT_NAMESPACE).at(time);
    metrics.record_outcome("RESET", "");
    assert_eq!(doc(&metrics)["_aws"]["Timestamp"], 1_795_770_000_123u64);

    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut now = Metrics::new(DEFAULT_NAMESPACE);
    now.record_outcome("RESET", "");
    let stamp = doc(&now)["_aws"]["Timestamp"].as_u64().expect("integer");
    assert!(stamp >= before);
}

#[test]
fn the_namespace_comes_from_metrics_namespace() {
    let mut metrics = Metrics::new("Acme/PasswordResets");
    metrics.policy_reload();
    let line = metrics.to_json_line().expect("a document");
    assert_valid_emf(&line, "Acme/PasswordResets");
    assert_eq!(doc(&metrics)["PolicyReloads"], 1);
}

#[test]
fn no_dimension_carries_a_user_a_caller_or_a_pool() {
    let mut metrics = Metrics::new(DEFAULT_NAMESPACE);
    metrics.record_outcome("REJECTED", "denied-user");
    let d = doc(&metrics);
    for directive in d["_aws"]["CloudWatchMetrics"].as_array().expect("array") {
        assert_eq!(directive["Dimensions"], serde_json::json!([[]]));
    }
}

#[test]
fn many_distinct_codes_are_split_over_directives_of_at_most_100_metrics() {
    // Given more (outcome, code) pairs than one directive may declare
    let mut metrics = Metrics::new(DEFAULT_NAMESPACE);
    for i in 0..150 {
        metrics.record_outcome("REJECTED", &format!("code-{i}"));
    }
    for i in 0..300 {
        metrics.cognito_latency("AdminGetUser", Duration::from_millis(i));
    }
    let line = metrics.to_json_line().expect("a document");

    // Then it is still one valid document, with every count present
    let names = assert_valid_emf(&line, DEFAULT_NAMESPACE);
    let d: Value = serde_json::from_str(&line).expect("JSON");
    assert!(
        d["_aws"]["CloudWatchMetrics"]
            .as_array()
            .expect("array")
            .len()
            >= 2
    );
    assert_eq!(d["Records"], 150);
    assert_eq!(d["Records.REJECTED"], 150);
    assert!((0..150).all(|i| d[format!("Records.REJECTED.code-{i}")] == 1));
    assert!(names.len() > 150);
    let latencies = d["CognitoLatency.AdminGetUser"].as_array().expect("array");
    assert!(latencies.len() <= 100);
}

#[test]
fn counted_pairs_are_bounded_whatever_the_codes() {
    let mut metrics = Metrics::new(DEFAULT_NAMESPACE);
    for i in 0..1000 {
        metrics.record_outcome("REJECTED", &format!("code-{i}"));
    }
    let line = metrics.to_json_line().expect("a document");
    let names = assert_valid_emf(&line, DEFAULT_NAMESPACE);
    let d: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(d["Records"], 1000, "nothing is lost from the totals");
    assert_eq!(d["Records.REJECTED.other"], 800);
    assert!(names.len() < 220);
}

#[test]
fn flushing_twice_never_counts_twice() {
    let mut metrics = Metrics::new("Acme/PasswordResets");
    metrics.record_outcome("RESET", "");
    let mut out = Vec::new();
    metrics.flush(&mut out).expect("write");
    metrics.flush(&mut out).expect("write");
    assert_eq!(String::from_utf8(out).expect("UTF-8").lines().count(), 1);

    // The recorder goes on in the same namespace.
    metrics.record_outcome("REJECTED", "denied-user");
    let line = metrics.to_json_line().expect("a document");
    assert_valid_emf(&line, "Acme/PasswordResets");
    let d: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(d["Records"], 1);
    assert!(d.get("Records.RESET").is_none());
}

// ---- through the function: one document per invocation ----------------------------------------

#[tokio::test]
async fn a_mixed_batch_gives_one_document_with_the_right_counts_and_latencies() {
    use crate::helpers::{Cognito, demo_app, demo_users, event, far_deadline};
    // Given the sample batch: erin reset; admin denied-user, ghost user-not-found, nemo
    // cannot-reset and a non-JSON body invalid-request
    let cognito = Cognito::with_users(demo_users());
    let app = demo_app(&cognito);
    let (response, metrics) =
        cognito_reset::sources::invoke(&app, event("sqs-standard.json"), "r", far_deadline()).await;
    response.expect("response");
    let doc: Value =
        serde_json::from_str(&metrics.to_json_line().expect("a document")).expect("JSON");
    let n = |name: &str| doc[name].as_u64();
    assert_eq!(n("Records"), Some(5));
    assert_eq!(n("Records.RESET"), Some(1));
    assert_eq!(n("Records.REJECTED"), Some(4));
    for code in [
        "denied-user",
        "user-not-found",
        "cannot-reset",
        "invalid-request",
    ] {
        assert_eq!(n(&format!("Records.REJECTED.{code}")), Some(1), "{code}");
    }
    assert_eq!(n("EventsNotDelivered"), Some(0));
    // One latency per Cognito call: four lookups (not the unparseable body), the groups of the
    // three users found, two resets.
    let calls = |name: &str| doc[name].as_array().map(Vec::len);
    assert_eq!(calls("CognitoLatency.AdminGetUser"), Some(4));
    assert_eq!(calls("CognitoLatency.AdminListGroupsForUser"), Some(3));
    assert_eq!(calls("CognitoLatency.AdminResetUserPassword"), Some(2));
    // and the document is valid EMF
    let directives = doc["_aws"]["CloudWatchMetrics"]
        .as_array()
        .expect("directives");
    for directive in directives {
        assert_eq!(directive["Namespace"], DEFAULT_NAMESPACE);
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(!doc[name].is_null(), "{name} has no value");
        }
    }
}

/// The metric names of the function's namespace that template.yaml's alarms and dashboard use.
fn template_metric_names() -> Vec<String> {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
        .expect("template.yaml");
    let mut names = Vec::new();
    let lines: Vec<&str> = template.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        // Alarms: `Namespace: !Ref MetricsNamespace` with a `MetricName:` on a nearby line, or the
        // metric math's `Metric: { Namespace: !Ref MetricsNamespace, MetricName: X }`.
        if let Some(rest) =
            line.strip_prefix("Metric: { Namespace: !Ref MetricsNamespace, MetricName: ")
        {
            names.push(rest.trim_end_matches(" }").trim().to_owned());
        }
        if line == "Namespace: !Ref MetricsNamespace"
            && let Some(name) = lines[i + 1..]
                .iter()
                .take(3)
                .find_map(|l| l.trim().strip_prefix("MetricName: "))
        {
            names.push(name.trim().to_owned());
        }
        // The dashboard: `["${MetricsNamespace}", "X"`.
        for part in line.split(r#"["${MetricsNamespace}", ""#).skip(1) {
            names.push(part.split('"').next().unwrap_or_default().to_owned());
        }
    }
    names
}

#[test]
fn every_metric_the_alarms_and_the_dashboard_use_is_one_the_function_emits() {
    let names = template_metric_names();
    assert!(names.len() >= 10, "found {names:?}");
    assert!(names.iter().any(|n| n == "Records.RETRY.guard-unavailable"));
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !cognito_reset::metrics::can_emit(n))
        .collect();
    assert!(unknown.is_empty(), "never emitted: {unknown:?}");
}

#[test]
fn what_can_be_emitted_is_derived_from_the_outcomes_and_codes() {
    use cognito_reset::metrics::can_emit;
    for name in [
        "Records",
        "Records.RESET",
        "Records.REJECTED.reset-unconfirmed",
        "Records.RETRY.guard-unavailable",
        "Records.RETRY.policy-stale",
        "CognitoLatency.AdminGetUser",
        "GaveUp",
        "BudgetRefusals",
        "SignOuts",
        "SignOutFailures",
        "Records.REJECTED.caller-budget-exhausted",
        "Records.REJECTED.invitation-pending",
        "Actions.reset-password",
        "Actions.resend-invitation",
        "CognitoLatency.AdminCreateUser",
        "CognitoLatency.AdminUserGlobalSignOut",
        "DeliveryLimit",
        "Records.REJECTED.delivery-limit",
        "Records.REJECTED.attempt-limit",
        "Records.REJECTED.external-user",
        "Records.REJECTED.trigger-refused",
        "Records.REJECTED.trigger-invalid-response",
    ] {
        assert!(can_emit(name), "{name}");
    }
    for name in [
        "Records.GAVE_UP",
        "Records.RETRY.recently-reset",
        "Records.REJECTED.throttled",
        "CognitoLatency.AdminDeleteUser",
        "Actions.delete-user",
        "Records.RETRY.caller-budget-exhausted",
        "Records.RETRY.delivery-limit",
        "Records.RETRY.attempt-limit",
    ] {
        assert!(!can_emit(name), "{name}");
    }
}

#[test]
fn a_delivery_limit_is_counted_on_its_own_and_written_as_zero_otherwise() {
    // Given an invocation without a delivery limit, and one with two
    let at = UNIX_EPOCH + Duration::from_secs(1_795_800_000);
    let mut quiet = Metrics::new(DEFAULT_NAMESPACE).at(at);
    quiet.record_outcome("RESET", "");
    let mut limited = Metrics::new(DEFAULT_NAMESPACE).at(at);
    limited.record_outcome("REJECTED", "delivery-limit");
    limited.record_outcome("REJECTED", "delivery-limit");
    limited.record_outcome("REJECTED", "attempt-limit");
    limited.record_outcome("RETRY", "throttled");
    let doc = |m: &Metrics| -> Value {
        serde_json::from_str(&m.to_json_line().expect("a document")).expect("JSON")
    };
    // Then DeliveryLimit (its alarm's metric) is 0, then 2: attempt limits are not delivery limits
    assert_eq!(doc(&quiet)["DeliveryLimit"], 0);
    let limited = doc(&limited);
    assert_eq!(limited["DeliveryLimit"], 2);
    assert_eq!(limited["Records.REJECTED.delivery-limit"], 2);
    assert_eq!(limited["Records.REJECTED.attempt-limit"], 1);
}
