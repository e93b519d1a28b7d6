//! The audit log, read as an operator reads it (JSON lines, captured): one line per record with
//! the documented fields, for HTTP, HTTP batches, SQS and FIFO; and what a caller may learn
//! about users it could never reset (no existence or deny-list oracle).

use std::io::Write;
use std::sync::{Arc, Mutex};

use cognito_reset::sources::dispatch;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::*;

/// Every field an audit line carries (docs/operations.md: "The audit line").
const FIELDS: &[&str] = &[
    "source",
    "id",
    "caller",
    "user_pool_id",
    "pool_account",
    "requested_username",
    "canonical_username",
    "rule",
    "outcome",
    "code",
    "told",
    "idempotency_key",
    "replayed",
    "action",
    "signed_out",
    "sign_out_error",
    "sign_out_only",
    "reset_at",
    "cognito_request_id",
    "reason",
    "ticket",
    "duration_ms",
];

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Runs `event` through the handler with JSON logs captured (this test's thread only; the
/// test runtime is single-threaded, so every record's task logs here): response and audit lines.
pub async fn audited(app: &Arc<cognito_reset::pipeline::App>, event: Value) -> (Value, Vec<Value>) {
    // tracing-core decides a callsite's interest from the *calling thread's* default dispatcher
    // while exactly one dispatcher is registered: another test's thread, hitting the audit line
    // first, would cache "never" for it and this capture would see nothing. A second dispatcher,
    // registered for the whole run and never anyone's default, makes every thread consult all.
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let response = {
        let _guard = tracing::subscriber::set_default(subscriber);
        dispatch(app, event, "req-1", far_deadline())
            .await
            .expect("a response")
    };
    let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("UTF-8");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
        .filter(|l| l["target"] == "audit")
        .collect();
    (response, lines)
}

fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    &line[name]
}

fn assert_documented(line: &Value) {
    for name in FIELDS {
        assert!(
            !field(line, name).is_null(),
            "audit line lacks {name}: {line}"
        );
    }
}

#[tokio::test]
async fn the_audit_line_says_what_a_reset_did_and_whether_the_user_was_signed_out() {
    let cognito = Cognito::with_users(demo_users());
    let app = demo_app(&cognito);
    let signed_out = http_event_with_body(&json!({
        "UserPoolId": POOL, "Username": "diego@example.com", "SignOut": true,
        "ClientMetadata": {"ticket": "canary-9d2"}
    }));
    let (_, lines) = audited(&app, signed_out).await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_documented(line);
    assert_eq!(
        (
            &line["action"],
            &line["signed_out"],
            &line["sign_out_error"]
        ),
        (&json!("reset-password"), &json!("true"), &json!(""))
    );
    assert!(!line.to_string().contains("canary-9d2"), "{line}");
    // A refusal has no action.
    let plain = http_event_with_body(&json!({"UserPoolId": POOL, "Username": "admin@example.com"}));
    let (_, lines) = audited(&app, plain).await;
    assert_eq!(
        (&lines[0]["outcome"], &lines[0]["action"]),
        (&json!("REJECTED"), &json!(""))
    );
}

#[tokio::test]
async fn every_item_of_an_http_batch_has_its_own_audit_line_and_id() {
    let cognito = Cognito::with_users(demo_users());
    let (_, lines) = audited(&demo_app(&cognito), event("http-api-v2-batch.json")).await;
    assert_eq!(lines.len(), 8, "one line per item");
    let mut ids: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            assert_documented(l);
            assert_eq!(l["source"], "http-api");
            (
                l["id"].as_str().unwrap_or_default().to_owned(),
                l["index"].as_u64().expect("index"),
            )
        })
        .collect();
    ids.sort_by_key(|(_, index)| *index);
    let expected: Vec<(String, u64)> = (0..8).map(|i| (format!("req-1#{i}"), i)).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_single_http_request_has_one_audit_line_naming_rule_and_canonical_user() {
    let cognito = Cognito::with_users(demo_users());
    let (_, lines) = audited(&demo_app(&cognito), event("http-api-v2.json")).await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_documented(line);
    assert_eq!(line["id"], "req-1");
    assert_eq!(line["outcome"], "RESET");
    assert_eq!(line["rule"], "helpdesk-portal");
    assert_eq!(line["canonical_username"], "diego-0000-uuid");
    assert_eq!(line["requested_username"], "diego@example.com");
    assert!(
        line["caller"]
            .as_str()
            .unwrap_or_default()
            .contains("helpdesk-portal/alice")
    );
}

#[tokio::test]
async fn sqs_and_fifo_batches_have_one_audit_line_per_message() {
    for (sample, source) in [("sqs-standard.json", "sqs"), ("sqs-fifo.json", "sqs-fifo")] {
        let cognito = Cognito::with_users(demo_users());
        let sample_event = event(sample);
        let mut expected: Vec<String> = sample_event["Records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["messageId"].as_str().unwrap_or_default().to_owned())
            .collect();
        let (_, lines) = audited(&demo_app(&cognito), sample_event).await;
        let mut ids: Vec<String> = lines
            .iter()
            .map(|l| {
                assert_documented(l);
                assert_eq!(l["source"], source);
                l["id"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected, "{sample}: exactly one line per message");
    }
}

#[tokio::test]
async fn client_metadata_values_never_reach_the_log() {
    let cognito = Cognito::with_users(demo_users());
    let mut request = http_event_with_body(&json!({
        "UserPoolId": POOL, "Username": "diego@example.com",
        "ClientMetadata": {"ticket": "canary-5c1e7b"}
    }));
    request["headers"]["x-trace"] = json!("x");
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        dispatch(&demo_app(&cognito), request, "req-1", far_deadline())
            .await
            .expect("a response");
    }
    let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("UTF-8");
    assert!(
        text.contains("\"audit\""),
        "the audit line was captured: {text}"
    );
    assert!(!text.contains("canary-5c1e7b"), "{text}");
    assert_eq!(
        cognito.reset_metadata().len(),
        1,
        "the metadata did reach Cognito"
    );
}

// ---- no existence or deny-list oracle ---------------------------------------------------------

/// A portal that may reset only `*@staff.example.com` users: narrow, but with a rule for the pool.
const NARROW: &str = r#"{"version":1,
  "deny": {"users": ["admin@example.com"], "groups": ["admins"]},
  "rules": [{"name": "staff-only",
    "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
    "userPools": ["us-west-2_*"], "users": ["*@staff.example.com"]}]}"#;

async fn narrow(username: &str) -> (u64, Value, Vec<Value>) {
    let cognito = Cognito::with_users(demo_users());
    let app = app(config(&[("POLICY", NARROW)]), cognito.client());
    let body = json!({"UserPoolId": POOL, "Username": username});
    let (response, lines) = audited(&app, http_event_with_body(&body)).await;
    let (status, body) = http_parts(&response);
    assert_eq!(cognito.reset_users(), Vec::<String>::new());
    (status, body, lines)
}

#[tokio::test]
async fn a_narrow_caller_cannot_tell_a_missing_user_from_one_it_may_not_reset() {
    // ghost does not exist; erin exists; mallory is in the denied group; admin is denied by name:
    // none of them is anyone this caller could reset.
    let (status, reference, _) = narrow("erin@example.com").await;
    assert_eq!(status, 403);
    assert_eq!(reference["error"], "user-not-allowed");
    for (name, actual) in [
        ("ghost@example.com", "user-not-found"),
        ("mallory@example.com", "denied-group"),
        ("admin@example.com", "denied-user"),
    ] {
        let (status, body, lines) = narrow(name).await;
        // Then the caller gets exactly the answer of an existing, not-admitted user
        assert_eq!((status, &body), (403, &reference), "{name}");
        // and the audit line keeps the truth, with what the caller was told beside it
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["code"], actual, "{name}");
        assert_eq!(lines[0]["told"], "user-not-allowed", "{name}");
    }
}

#[tokio::test]
async fn a_caller_that_could_reset_the_name_learns_the_true_reason() {
    // The demo portal admits staff: a missing name cannot be in staff, but the ticket queue admits
    // any *@example.com name, so it is told the user does not exist.
    let cognito = Cognito::with_users(demo_users());
    let sqs = sqs_event(QUEUE, &[(reset_body("ghost@example.com"), None)]);
    let (_, lines) = audited(&demo_app(&cognito), sqs).await;
    assert_eq!(lines[0]["code"], "user-not-found");
    assert_eq!(lines[0]["told"], "");
    // And the portal, which could reset admin if not for the deny list, is told denied-user.
    let body = json!({"UserPoolId": POOL, "Username": "admin@example.com"});
    let (status, body, _) = send(&demo_app(&cognito), http_event_with_body(&body)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("denied-user")));
}
