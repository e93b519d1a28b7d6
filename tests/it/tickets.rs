//! Issue 27, part 1: resets bound to a helpdesk ticket. A rule's `ticket` option, the request's
//! `Ticket`, the two refusals (`ticket-required`, `ticket-invalid`) before anything is written or
//! asked, the no-oracle rule, and the ticket in Cognito's `ClientMetadata`, the audit line, the
//! outcome event and the kept answer; through the real pipeline over the fake Cognito and the
//! in-process guard table.

use std::sync::{Arc, Mutex};

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::cognito::Directory;
use cognito_reset::aws::events::{Delivery, EventPublisher};
use cognito_reset::aws::guard::Guard;
use cognito_reset::event::OutcomeEvent;
use cognito_reset::pipeline::App;
use cognito_reset::sources::invoke;
use serde_json::{Value, json};

use crate::dynamodb::{Mode, Table};
use crate::helpers::*;

const PORTAL: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*";
const PATTERN: &str = "INC[0-9]{7}";
const GOOD: &str = "INC0012345";

/// Every rule for the portal and the queue requires an `INC` ticket; the rule admits staff but
/// contractors; the top-level deny names admin and the admins group.
fn strict() -> String {
    format!(
        r#"{{"version":1,"deny":{{"users":["admin@example.com"],"groups":["admins"]}},
        "rules":[{{"name":"tickets","callers":["{PORTAL}","{QUEUE}"],"userPools":["{POOL}"],
        "groups":["staff"],"except":{{"groups":["contractors"]}},
        "ticket":{{"required":true,"pattern":"{PATTERN}"}}}}]}}"#
    )
}

/// The portal may reset admins with a ticket (first rule) and other staff without one.
fn mixed() -> String {
    format!(
        r#"{{"version":1,"rules":[
        {{"name":"admins-with-ticket","callers":["{PORTAL}"],"userPools":["{POOL}"],
          "groups":["admins"],"ticket":{{"required":true,"pattern":"{PATTERN}"}}}},
        {{"name":"staff","callers":["{PORTAL}"],"userPools":["{POOL}"],"groups":["staff"]}}]}}"#
    )
}

/// A narrow portal: only `*@staff.example.com` users (none of the demo users), ticket required.
fn narrow() -> String {
    format!(
        r#"{{"version":1,"deny":{{"users":["admin@example.com"],"groups":["admins"]}},
        "rules":[{{"name":"narrow","callers":["{PORTAL}"],"userPools":["{POOL}"],
        "users":["*@staff.example.com"],"ticket":{{"required":true,"pattern":"{PATTERN}"}}}}]}}"#
    )
}

fn unguarded(cognito: &Cognito, policy: &str) -> Arc<App> {
    app(config(&[("POLICY", policy)]), cognito.client())
}

/// The portal's HTTP request for `username` with `extra` fields (and an idempotency key).
fn request(username: &str, extra: Value, key: Option<&str>) -> Value {
    let mut body = json!({"UserPoolId": POOL, "Username": username});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let mut event = http_event_with_body(&body);
    if let Some(key) = key {
        event["headers"]["idempotency-key"] = json!(key);
    }
    event
}

/// The same request from another role.
fn from(caller: &str, mut event: Value) -> Value {
    event["requestContext"]["authorizer"]["iam"]["userArn"] = json!(caller);
    event
}

/// Outcome events as the bus would have received them.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<OutcomeEvent>>);

impl EventPublisher for Recorder {
    fn publish_before<'a>(
        &'a self,
        events: &'a [OutcomeEvent],
        _until: tokio::time::Instant,
    ) -> BoxFuture<'a, Delivery> {
        self.0.lock().expect("events").extend_from_slice(events);
        Box::pin(async move {
            Delivery {
                delivered: events.len(),
                ..Delivery::default()
            }
        })
    }
}

/// `policy` with the guard over `table` and outcome events into `bus`.
fn guarded_with_bus(
    cognito: &Cognito,
    table: &Table,
    policy: &str,
    bus: Arc<Recorder>,
) -> Arc<App> {
    let config = config(&[("POLICY", policy), ("GUARD_TABLE", crate::dynamodb::TABLE)]);
    let guard = Guard::dynamodb(
        table.client(),
        crate::dynamodb::settings(300),
        false,
        config.deadline_margin,
    );
    let directory = Directory::sdk(
        cognito.client(),
        config.cognito,
        config.deadline_margin,
        config.rates,
    );
    let policy = config.fixed_policy().expect("a fixed test policy");
    Arc::new(App::new(config, directory, Some(guard), policy, Some(bus)))
}

// ---- refusals before anything is written or asked ---------------------------------------------

#[tokio::test]
async fn a_request_without_the_required_ticket_is_refused_before_any_write_or_cognito_call() {
    // Given a guarded function whose every rule for the portal requires a ticket
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded_app_with_policy(&cognito, &table, &strict(), 300, false);
    // when the portal asks without one (with an idempotency key)
    let (status, body, _) = send(&app, request("diego@example.com", json!({}), Some("k1"))).await;
    // then 400 ticket-required, and nothing was written nor asked
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("ticket-required")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("Ticket"),
        "{body}"
    );
    assert_eq!(cognito.calls(), 0);
    assert_eq!(table.writes(), 0);
}

#[tokio::test]
async fn a_ticket_that_does_not_match_the_pattern_is_refused_before_any_write_or_cognito_call() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded_app_with_policy(&cognito, &table, &strict(), 300, false);
    for (field, ticket) in [
        ("Ticket", "INC123"),
        ("ticket", "CHG0012345"),
        ("Ticket", "inc0012345"),
        ("Ticket", "INC00123456"),
    ] {
        let (status, body, _) = send(
            &app,
            request("diego@example.com", json!({ field: ticket }), Some("k2")),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("ticket-invalid")),
            "{ticket}: {body}"
        );
        assert!(
            !body["message"].as_str().unwrap_or("").contains(ticket),
            "the message does not echo the ticket: {body}"
        );
    }
    assert_eq!(cognito.calls(), 0);
    assert_eq!(table.writes(), 0);
}

#[tokio::test]
async fn a_malformed_ticket_is_an_invalid_request_naming_the_field() {
    let cognito = Cognito::with_users(demo_users());
    let app = unguarded(&cognito, &strict());
    for value in [json!("INC 0012345"), json!(7), json!("x".repeat(65))] {
        let (status, body, _) = send(
            &app,
            request("diego@example.com", json!({ "Ticket": value }), None),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid-request")),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("Ticket:"),
            "{body}"
        );
    }
    assert_eq!(cognito.calls(), 0);
}

// ---- the ticket reaches Cognito ---------------------------------------------------------------

#[tokio::test]
async fn a_valid_ticket_reaches_cognito_as_client_metadata_ticket_replacing_the_requests_own() {
    let cognito = Cognito::with_users(demo_users());
    let app = unguarded(&cognito, &strict());
    let (status, body, _) = send(
        &app,
        request(
            "diego@example.com",
            json!({"Ticket": GOOD, "ClientMetadata": {"ticket": "forged-1", "lang": "fr"}}),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "RESET");
    let metadata = cognito.reset_metadata();
    assert_eq!(metadata.len(), 1);
    let sent = metadata[0].clone().expect("ClientMetadata sent");
    assert_eq!(sent.get("ticket").map(String::as_str), Some(GOOD));
    assert_eq!(sent.get("lang").map(String::as_str), Some("fr"));
}

#[tokio::test]
async fn without_a_ticket_the_requests_own_metadata_goes_to_cognito_unchanged() {
    // The demo policy has no ticket option.
    let cognito = Cognito::with_users(demo_users());
    let (status, _, _) = send(
        &demo_app(&cognito),
        request(
            "diego@example.com",
            json!({"ClientMetadata": {"ticket": "INC-1"}}),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200);
    let sent = cognito.reset_metadata()[0].clone().expect("metadata");
    assert_eq!(sent.get("ticket").map(String::as_str), Some("INC-1"));
}

#[tokio::test]
async fn the_allowing_rule_decides_when_only_some_rules_want_a_ticket() {
    let cognito = Cognito::with_users(demo_users());
    let app = unguarded(&cognito, &mixed());
    // A staff member: the rule without a ticket option resets, with or without one.
    let (status, body, _) = send(&app, request("diego@example.com", json!({}), None)).await;
    assert_eq!((status, &body["outcome"]), (200, &json!("RESET")), "{body}");
    // An admin: the first rule admits mallory and wants a ticket. The refusal comes after the
    // lookup (the rule is known only then) and before any write.
    let (status, body, _) = send(&app, request("mallory@example.com", json!({}), None)).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("ticket-required")),
        "{body}"
    );
    let (status, body, _) = send(
        &app,
        request("mallory@example.com", json!({"Ticket": "CHG1"}), None),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("ticket-invalid")),
        "{body}"
    );
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
    let (status, body, _) = send(
        &app,
        request("mallory@example.com", json!({"Ticket": GOOD}), None),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        cognito.reset_users(),
        ["diego-0000-uuid", "mallory-0000-uuid"]
    );
}

// ---- no oracle ------------------------------------------------------------------------------

#[tokio::test]
async fn a_caller_no_rule_admits_gets_one_answer_per_ticket_whoever_the_target_is() {
    // erin exists, ghost does not, mallory is in the denied group, admin is denied by name: the
    // narrow portal may reset none of them.
    let targets = [
        "erin@example.com",
        "ghost@example.com",
        "mallory@example.com",
        "admin@example.com",
    ];
    for (ticket, expected) in [
        (None, (400, "ticket-required")),
        (Some("CHG1"), (400, "ticket-invalid")),
        // With a ticket the rule takes, the answer is today's: user-not-allowed.
        (Some(GOOD), (403, "user-not-allowed")),
    ] {
        let mut answers = Vec::new();
        for target in targets {
            let cognito = Cognito::with_users(demo_users());
            let extra = ticket.map_or(json!({}), |t| json!({ "Ticket": t }));
            let (status, body, _) = send(
                &unguarded(&cognito, &narrow()),
                request(target, extra, None),
            )
            .await;
            assert_eq!(cognito.reset_users(), Vec::<String>::new());
            answers.push((status, body));
        }
        for (target, (status, body)) in targets.iter().zip(&answers) {
            assert_eq!(
                (*status, body["error"].as_str().unwrap_or("")),
                expected,
                "{target}, ticket {ticket:?}"
            );
            assert_eq!(
                body, &answers[0].1,
                "{target}: the same body for every target"
            );
        }
    }
}

#[tokio::test]
async fn a_caller_no_rule_lists_is_told_what_it_is_today_whatever_the_ticket() {
    let cognito = Cognito::with_users(demo_users());
    let app = unguarded(&cognito, &strict());
    let stranger = "arn:aws:sts::123456789012:assumed-role/somebody-else/x";
    for extra in [
        json!({}),
        json!({"Ticket": "CHG1"}),
        json!({"Ticket": GOOD}),
    ] {
        let (status, body, _) = send(
            &app,
            from(stranger, request("diego@example.com", extra.clone(), None)),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("no-rule-for-caller")),
            "{extra}"
        );
    }
    assert_eq!(cognito.calls(), 0);
}

#[tokio::test]
async fn where_a_rule_without_tickets_lists_the_caller_a_target_it_may_not_reset_is_told_as_today()
{
    // Under the mixed policy the portal passes the ticket's first check whatever it sends (the
    // staff rule asks nothing of tickets); for a name no rule admits the answer stays the
    // concealed user-not-allowed, ticket or not.
    for extra in [
        json!({}),
        json!({"Ticket": "CHG1"}),
        json!({"Ticket": GOOD}),
    ] {
        let cognito = Cognito::with_users(demo_users());
        let (status, body, _) = send(
            &unguarded(&cognito, &mixed()),
            request("ghost@example.com", extra.clone(), None),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("user-not-allowed")),
            "{extra}"
        );
    }
}

// ---- SQS ------------------------------------------------------------------------------------

#[tokio::test]
async fn over_sqs_a_missing_ticket_is_rejected_and_acknowledged_and_a_valid_one_reaches_cognito() {
    let cognito = Cognito::with_users(demo_users());
    let app = unguarded(&cognito, &strict());
    let bodies = [
        (reset_body("diego@example.com"), None),
        (
            json!({"UserPoolId": POOL, "Username": "erin@example.com", "ticket": GOOD}).to_string(),
            None,
        ),
        (
            json!({"UserPoolId": POOL, "Username": "erin@example.com", "Ticket": "nope"})
                .to_string(),
            None,
        ),
    ];
    let (response, metrics) = invoke(&app, sqs_event(QUEUE, &bodies), "r", far_deadline()).await;
    let response = response.expect("an SQS response");
    // Nothing is handed back: both refusals are final.
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(cognito.reset_users(), ["erin-0000-uuid"]);
    let sent = cognito.reset_metadata()[0].clone().expect("metadata");
    assert_eq!(sent.get("ticket").map(String::as_str), Some(GOOD));
    // The metrics count the refusals by code, and never carry the ticket text.
    let emf = metrics.to_json_line().expect("metrics");
    assert!(emf.contains("Records.REJECTED.ticket-required"), "{emf}");
    assert!(emf.contains("Records.REJECTED.ticket-invalid"), "{emf}");
    assert!(!emf.contains(GOOD) && !emf.contains("nope"), "{emf}");
}

// ---- the audit line, the event and the kept answer ------------------------------------------

#[tokio::test]
async fn the_ticket_is_in_the_audit_line_the_event_and_the_kept_answer() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let bus = Arc::new(Recorder::default());
    let app = guarded_with_bus(&cognito, &table, &strict(), Arc::clone(&bus));
    let event = request(
        "diego@example.com",
        json!({"Ticket": GOOD}),
        Some("k-audit"),
    );
    let (response, lines) = crate::audit::audited(&app, event).await;
    assert_eq!(http_parts(&response).0, 200);
    // The audit line
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["ticket"], GOOD);
    assert_eq!(lines[0]["outcome"], "RESET");
    // the outcome event
    let events = bus.0.lock().expect("events").clone();
    assert_eq!(events.len(), 1);
    let detail: Value = serde_json::from_str(&events[0].detail()).expect("JSON");
    assert_eq!(detail["ticket"], GOOD);
    // and the answer kept under the idempotency key (and, for GET /requests/{id}, under the
    // request id: the same answer)
    let kept: Vec<Value> = table
        .items()
        .iter()
        .filter(|(pk, _)| pk.starts_with("key#"))
        .filter_map(|(_, item)| item.get("answer"))
        .filter_map(|answer| answer.as_s().ok())
        .map(|text| serde_json::from_str(text).expect("a JSON answer"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["ticket"], GOOD);
    // A refusal carries the ticket it refused (the caller's own text), and no ticket when none
    // was sent.
    let refused = request("erin@example.com", json!({"Ticket": "CHG1"}), None);
    let (_, lines) = crate::audit::audited(&app, refused).await;
    assert_eq!(
        (&lines[0]["code"], &lines[0]["ticket"]),
        (&json!("ticket-invalid"), &json!("CHG1"))
    );
    let (_, lines) =
        crate::audit::audited(&app, request("erin@example.com", json!({}), None)).await;
    assert_eq!(
        (&lines[0]["code"], &lines[0]["ticket"]),
        (&json!("ticket-required"), &json!(""))
    );
    let events = bus.0.lock().expect("events").clone();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].ticket.as_deref(), Some("CHG1"));
    assert_eq!(events[2].ticket, None);
}

#[tokio::test]
async fn the_same_key_with_another_ticket_is_idempotency_key_reused() {
    let cognito = Cognito::with_users(demo_users());
    let table = Table::new(Mode::Normal);
    let app = guarded_app_with_policy(&cognito, &table, &strict(), 300, false);
    let first = request("diego@example.com", json!({"Ticket": GOOD}), Some("k"));
    assert_eq!(send(&app, first.clone()).await.0, 200);
    let other = request(
        "diego@example.com",
        json!({"Ticket": "INC7654321"}),
        Some("k"),
    );
    let (status, body, _) = send(&app, other).await;
    assert_eq!(
        (status, &body["error"]),
        (422, &json!("idempotency-key-reused")),
        "{body}"
    );
    // The same ticket again is a replay.
    let (status, body, _) = send(&app, first).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(true)), "{body}");
    assert_eq!(cognito.reset_users(), ["diego-0000-uuid"]);
}

// ---- reset-policy -------------------------------------------------------------------------

fn reset_policy(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_reset-policy"))
        .args(args)
        .output()
        .expect("run reset-policy")
}

#[test]
fn reset_policy_lint_refuses_a_bad_ticket_pattern_with_its_location() {
    let dir = std::env::temp_dir().join(format!("tickets-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, strict().replace(PATTERN, "INC([0-9]{7}")).expect("write");
    let out = reset_policy(&["lint", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0].ticket.pattern: pattern is not a valid regular expression"),
        "{stderr}"
    );
    let good = dir.join("good.json");
    std::fs::write(&good, strict()).expect("write");
    let out = reset_policy(&["lint", good.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // explain says what the allowing rule wants, and whether a ticket does.
    let out = reset_policy(&[
        "explain",
        good.to_str().expect("path"),
        "--pool",
        POOL,
        "--user",
        "diego",
        "--group",
        "staff",
        "--caller",
        "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice",
        "--ticket",
        "CHG1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ALLOW tickets"), "{stdout}");
    assert!(
        stdout.contains(r#"rule ticket: required, matching "INC[0-9]{7}""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"ticket "CHG1": refused: ticket-invalid"#),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
