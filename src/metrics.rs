//! The function's metrics: one CloudWatch embedded metric format (EMF) document per invocation.
//!
//! A [`Metrics`] recorder lives for one invocation; the pipeline records into it and the handler
//! writes it once, at the end, as one JSON line on stdout ([`Metrics::flush`]). CloudWatch Logs
//! turns the line into metrics in the namespace from `METRICS_NAMESPACE` (default
//! `CognitoReset`).
//!
//! # Why metric names, not dimensions, carry the outcome and code
//!
//! In EMF a dimension's value is the document's root member of that name, so one document has
//! exactly one value per dimension: it cannot count `REJECTED/denied-user` and `RETRY/throttled`
//! under an `Outcome` and a `Code` dimension at once. Rather than several documents per
//! invocation, the counts are distinct, dimensionless metrics whose names are built only from
//! the outcome and the code (both checked against a small alphabet, so a username or a pool id
//! can never become a metric):
//!
//! | metric | unit | value |
//! |---|---|---|
//! | `Records` | Count | records with an outcome in this invocation |
//! | `Records.<OUTCOME>` | Count | e.g. `Records.RESET`, `Records.RETRY` |
//! | `Records.<OUTCOME>.<code>` | Count | e.g. `Records.REJECTED.denied-user`, `Records.RETRY.misconfigured` |
//! | `CognitoLatency.<Operation>` | Milliseconds | one value per Cognito call, e.g. `CognitoLatency.AdminGetUser` |
//! | `GuardLatency` | Milliseconds | one value per guard (DynamoDB) call |
//! | `EventsNotDelivered` | Count | outcome events EventBridge did not take |
//! | `PolicyReloads` | Count | new policy versions swapped in |
//! | `PolicyRefusals` | Count | new policy versions refused (invalid or unreadable) |
//! | `DeliveryLimit` | Count | records REJECTED `delivery-limit`: the pool's sender used its daily quota |
//! | `Approvals.<step>` | Count | `Approvals.requested`, `.approved`, `.denied`, `.expired` (a decision that met an expired approval) |
//!
//! The five counters above without a suffix (`Records`, `EventsNotDelivered`, `PolicyReloads`,
//! `PolicyRefusals`, `DeliveryLimit`) are always written (zero included), so alarms on
//! them see data every invocation. Latencies are arrays of at most 100 values, as EMF allows;
//! past 100 calls a latency keeps an evenly spread sample. More than 100 metrics are split
//! over several `CloudWatchMetrics` directives of the same document.
//!
//! Written by hand (about a hundred lines of serde_json) rather than with
//! `metrics_cloudwatch_embedded`: that crate is a process-global `metrics` recorder (shared by
//! concurrent tests and invocations), writes one document per label set, and would add the
//! `metrics` and `futures` crates to the arm64 bootstrap.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

/// Default for `METRICS_NAMESPACE`.
pub const DEFAULT_NAMESPACE: &str = "CognitoReset";
/// EMF: at most 100 metric definitions per directive.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// EMF: at most 100 values in a metric's array.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// EMF: at most 30 dimension keys per dimension set.
pub const MAX_DIMENSIONS: usize = 30;
/// Distinct (outcome, code) pairs counted per invocation; later new pairs count as `other`.
pub const MAX_CODE_PAIRS: usize = 200;
/// CloudWatch metric namespaces are at most 255 characters.
const MAX_NAMESPACE_LEN: usize = 255;
/// Longest outcome or code kept in a metric name.
const MAX_LABEL_LEN: usize = 64;
/// Stands for an outcome or code that is not a plain label (never echoed into a name).
pub const OTHER: &str = "other";
/// The code whose REJECTED records are also counted as `DeliveryLimit`.
const DELIVERY_LIMIT_CODE: &str = "delivery-limit";

/// Why a metrics namespace was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "METRICS_NAMESPACE: a namespace is 1-255 characters of letters, digits and . - _ / # : (got {0:?})"
    )]
    InvalidNamespace(String),
}

/// Latency samples of one metric: every value up to 100, then an evenly spread sample
/// (every 2nd, 4th, ... call) so the array never exceeds EMF's limit.
#[derive(Debug, Clone, Default)]
struct Samples {
    values: Vec<f64>,
    seen: u64,
    stride: u64,
}

impl Samples {
    fn push(&mut self, value: Duration) {
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            if self.values.len() == MAX_VALUES_PER_METRIC {
                // Keep every other kept value and halve the rate from now on.
                let mut index = 0;
                self.values.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride = stride * 2;
            }
            if self.seen.is_multiple_of(self.stride.max(1)) {
                self.values.push(value.as_secs_f64() * 1000.0);
            }
        }
        self.seen += 1;
    }
}

/// The metrics of one invocation. Not shared between invocations.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    records: BTreeMap<(String, String), u64>,
    cognito: BTreeMap<&'static str, Samples>,
    guard: Samples,
    events_not_delivered: u64,
    policy_reloads: u64,
    policy_refusals: u64,
    gave_up: u64,
    budget_refusals: u64,
    delivery_limits: u64,
    sign_outs: u64,
    sign_out_failures: u64,
    actions: BTreeMap<&'static str, u64>,
    approvals: BTreeMap<&'static str, u64>,
    timestamp: Option<SystemTime>,
}

impl Metrics {
    /// A recorder for one invocation. `namespace` should have passed [`check_namespace`]
    /// (at start-up); an invalid one falls back to [`DEFAULT_NAMESPACE`].
    pub fn new(namespace: &str) -> Metrics {
        let namespace = check_namespace(namespace).unwrap_or(DEFAULT_NAMESPACE);
        Metrics {
            namespace: namespace.to_owned(),
            records: BTreeMap::new(),
            cognito: BTreeMap::new(),
            guard: Samples::default(),
            events_not_delivered: 0,
            policy_reloads: 0,
            policy_refusals: 0,
            gave_up: 0,
            budget_refusals: 0,
            delivery_limits: 0,
            sign_outs: 0,
            sign_out_failures: 0,
            actions: BTreeMap::new(),
            approvals: BTreeMap::new(),
            timestamp: None,
        }
    }

    /// Uses `time` as the document's `_aws.Timestamp` instead of the time of writing.
    pub fn at(mut self, time: SystemTime) -> Metrics {
        self.timestamp = Some(time);
        self
    }

    /// Counts one record's outcome (`RESET`, `REJECTED`, ...) and code (`denied-user`, or
    /// empty). Anything that is not a plain label counts as `other`.
    pub fn record_outcome(&mut self, outcome: &str, code: &str) {
        let outcome = label(outcome, |c| c.is_ascii_uppercase() || c == '_');
        let code = if code.is_empty() {
            ""
        } else {
            label(code, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })
        };
        if outcome == "REJECTED" && code == DELIVERY_LIMIT_CODE {
            self.delivery_limits += 1;
        }
        let mut key = (outcome.to_owned(), code.to_owned());
        if !self.records.contains_key(&key) && self.records.len() >= MAX_CODE_PAIRS {
            key.1 = OTHER.to_owned();
        }
        *self.records.entry(key).or_default() += 1;
    }

    /// One Cognito call's duration (`op` is the operation, e.g. `AdminGetUser`).
    pub fn cognito_latency(&mut self, op: &'static str, elapsed: Duration) {
        let op = label(op, |c| c.is_ascii_alphanumeric());
        self.cognito.entry(op).or_default().push(elapsed);
    }

    /// One guard (DynamoDB) call's duration.
    pub fn guard_latency(&mut self, elapsed: Duration) {
        self.guard.push(elapsed);
    }

    /// Outcome events that were not delivered (see `bus::Delivery::not_delivered`).
    pub fn events_not_delivered(&mut self, n: usize) {
        self.events_not_delivered += n as u64;
    }

    /// A new policy version was swapped in.
    pub fn policy_reload(&mut self) {
        self.policy_reloads += 1;
    }

    /// A new policy version was refused (invalid or unreadable).
    pub fn policy_refused(&mut self) {
        self.policy_refusals += 1;
    }

    /// A reset refused because its caller used its rule's budget.
    pub fn budget_refused(&mut self) {
        self.budget_refusals += 1;
    }

    /// A sign-out after a reset: done, or failed.
    pub fn sign_out(&mut self, done: bool) {
        if done {
            self.sign_outs += 1;
        } else {
            self.sign_out_failures += 1;
        }
    }

    /// A RESET (or WOULD_RESET) by its action (`reset-password`, `resend-invitation`).
    pub fn action(&mut self, action: &'static str) {
        *self.actions.entry(action).or_default() += 1;
    }

    /// An approval's step: `requested`, `approved`, `denied` or `expired` (one of
    /// [`APPROVAL_STEPS`]).
    pub fn approval(&mut self, step: &'static str) {
        *self.approvals.entry(step).or_default() += 1;
    }

    /// A RETRY on an SQS record's last receive: its next stop is the dead-letter queue.
    pub fn gave_up(&mut self) {
        self.gave_up += 1;
    }

    /// The EMF document, or `None` when nothing happened in this invocation.
    pub fn to_json_line(&self) -> Option<String> {
        self.document().map(|doc| doc.to_string())
    }

    /// Writes the EMF document and a newline, if there is anything to write, and starts
    /// over empty (a second flush writes nothing, so nothing is counted twice).
    pub fn flush(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        let line = self.to_json_line();
        let namespace = std::mem::take(&mut self.namespace);
        *self = Metrics {
            namespace,
            ..Metrics::new(DEFAULT_NAMESPACE)
        };
        if let Some(line) = line {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.cognito.is_empty()
            && self.guard.values.is_empty()
            && self.events_not_delivered == 0
            && self.policy_reloads == 0
            && self.policy_refusals == 0
            && self.gave_up == 0
            && self.budget_refusals == 0
            && self.delivery_limits == 0
            && self.sign_outs == 0
            && self.sign_out_failures == 0
            && self.actions.is_empty()
            && self.approvals.is_empty()
    }

    fn document(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        let mut members: Vec<(String, &'static str, Value)> = Vec::new();
        let mut count = |name: String, n: u64| members.push((name, "Count", Value::from(n)));
        count(
            "Records".to_owned(),
            self.records.values().copied().sum::<u64>(),
        );
        let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
        for ((outcome, _), n) in &self.records {
            *by_outcome.entry(outcome.as_str()).or_default() += n;
        }
        for (outcome, n) in by_outcome {
            count(format!("Records.{outcome}"), n);
        }
        for ((outcome, code), n) in &self.records {
            if !code.is_empty() {
                count(format!("Records.{outcome}.{code}"), *n);
            }
        }
        count("EventsNotDelivered".to_owned(), self.events_not_delivered);
        count("PolicyReloads".to_owned(), self.policy_reloads);
        count("PolicyRefusals".to_owned(), self.policy_refusals);
        if self.gave_up > 0 {
            count("GaveUp".to_owned(), self.gave_up);
        }
        // Zero when nothing was refused, so the alarm on it sees data, not silence.
        count("BudgetRefusals".to_owned(), self.budget_refusals);
        // Zero too: its alarm (configure SES for the pool) sees data every invocation.
        count("DeliveryLimit".to_owned(), self.delivery_limits);
        if self.sign_outs > 0 {
            count("SignOuts".to_owned(), self.sign_outs);
        }
        if self.sign_out_failures > 0 {
            count("SignOutFailures".to_owned(), self.sign_out_failures);
        }
        for (action, n) in &self.actions {
            count(format!("Actions.{action}"), *n);
        }
        for (step, n) in &self.approvals {
            count(format!("Approvals.{step}"), *n);
        }
        let latencies = self
            .cognito
            .iter()
            .map(|(op, s)| (format!("CognitoLatency.{op}"), s))
            .chain(
                (!self.guard.values.is_empty()).then(|| ("GuardLatency".to_owned(), &self.guard)),
            );
        for (name, samples) in latencies {
            members.push((name, "Milliseconds", Value::from(samples.values.clone())));
        }

        let timestamp = crate::deadline::epoch_ms(self.timestamp.unwrap_or_else(SystemTime::now));
        let directives: Vec<Value> = members
            .chunks(MAX_METRICS_PER_DIRECTIVE)
            .map(|chunk| {
                let metrics: Vec<Value> = chunk
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                    .collect();
                json!({"Namespace": self.namespace, "Dimensions": [[]], "Metrics": metrics})
            })
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".to_owned(),
            json!({"Timestamp": timestamp, "CloudWatchMetrics": directives}),
        );
        for (name, _, value) in members {
            root.insert(name, value);
        }
        Some(Value::Object(root))
    }
}

/// The steps of an approval counted as `Approvals.<step>`: a request kept for approval, a
/// decision to approve, a decision to deny, and a decision that met an expired approval (an
/// approval nobody decides expires without a metric: its item's TTL removes it).
pub const APPROVAL_STEPS: [&str; 4] = ["requested", "approved", "denied", "expired"];

/// The Cognito operations whose latency is a metric: every one the function calls.
pub const COGNITO_OPERATIONS: [&str; 5] = crate::failure::cognito_operation::ALL;

/// Whether an invocation can write the metric `name`: the names are built from the outcome
/// type, the failures' own codes ([`crate::outcome::ResetError::samples`]) and the fixed
/// counters, so a dashboard or an alarm can be checked against what the function emits.
pub fn can_emit(name: &str) -> bool {
    use crate::outcome::{Outcome, ResetError, failure_outcome};
    let fixed = [
        "Records",
        "EventsNotDelivered",
        "PolicyReloads",
        "PolicyRefusals",
        "GaveUp",
        "GuardLatency",
        "BudgetRefusals",
        "DeliveryLimit",
        "SignOuts",
        "SignOutFailures",
    ];
    if fixed.contains(&name) {
        return true;
    }
    if let Some(action) = name.strip_prefix("Actions.") {
        return crate::outcome::Action::ALL
            .iter()
            .any(|a| a.as_str() == action);
    }
    if let Some(step) = name.strip_prefix("Approvals.") {
        return APPROVAL_STEPS.contains(&step);
    }
    if let Some(op) = name.strip_prefix("CognitoLatency.") {
        return COGNITO_OPERATIONS.contains(&op);
    }
    let Some(rest) = name.strip_prefix("Records.") else {
        return false;
    };
    let (outcome, code) = match rest.split_once('.') {
        Some((outcome, code)) => (outcome, Some(code)),
        None => (rest, None),
    };
    match code {
        None => Outcome::ALL.iter().any(|o| o.as_str() == outcome),
        Some(code) => ResetError::samples()
            .iter()
            .any(|e| failure_outcome(e).as_str() == outcome && e.code() == code),
    }
}

/// Checks a `METRICS_NAMESPACE` value (CloudWatch's namespace rules; `AWS/` is reserved).
pub fn check_namespace(namespace: &str) -> Result<&str, MetricsError> {
    let valid = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && !namespace.starts_with("AWS/")
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c))
        && !namespace.starts_with(' ')
        && !namespace.ends_with(' ');
    if valid {
        Ok(namespace)
    } else {
        Err(MetricsError::InvalidNamespace(namespace.to_owned()))
    }
}

/// `value` when it is a plain label of `allowed` characters, else [`OTHER`].
fn label(value: &str, allowed: impl Fn(char) -> bool) -> &str {
    if !value.is_empty() && value.len() <= MAX_LABEL_LEN && value.chars().all(allowed) {
        value
    } else {
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(m: &Metrics) -> Value {
        serde_json::from_str(&m.to_json_line().expect("a document")).expect("JSON")
    }

    #[test]
    fn nothing_recorded_writes_nothing() {
        let mut m = Metrics::new(DEFAULT_NAMESPACE);
        assert_eq!(m.to_json_line(), None);
        let mut out = Vec::new();
        m.flush(&mut out).expect("write");
        assert!(out.is_empty());
    }

    #[test]
    fn usernames_and_odd_codes_never_become_metric_names() {
        let mut m = Metrics::new(DEFAULT_NAMESPACE);
        m.record_outcome("REJECTED", "diego@example.com");
        m.record_outcome("rejected; drop", "denied-user");
        let d = doc(&m);
        assert_eq!(d["Records.REJECTED.other"], 1);
        assert_eq!(d["Records.other.denied-user"], 1);
        assert!(!d.to_string().contains("diego"));
    }

    #[test]
    fn latency_arrays_stay_within_emf_limits_and_spread_over_all_calls() {
        let mut s = Samples::default();
        for ms in 0..1000u64 {
            s.push(Duration::from_millis(ms));
        }
        assert!(s.values.len() <= MAX_VALUES_PER_METRIC);
        assert!(s.values.len() >= MAX_VALUES_PER_METRIC / 2);
        // Evenly spread: the first call and calls near the end are both represented.
        assert_eq!(s.values.first().copied(), Some(0.0));
        assert!(s.values.last().copied().unwrap_or(0.0) >= 900.0);
    }

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        assert!(check_namespace("CognitoReset").is_ok());
        assert!(check_namespace("Team/cognito-reset").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace("AWS/Lambda").is_err());
        assert!(check_namespace("a{b}").is_err());
        assert_eq!(
            Metrics::new("AWS/Lambda").namespace,
            DEFAULT_NAMESPACE,
            "an invalid namespace never reaches CloudWatch"
        );
    }
}
