//! Every sample event in `events/` gets its documented answer (see events/README.md).

use cognito_reset::sources::{EventError, dispatch};

use crate::helpers::*;

#[tokio::test]
async fn every_well_formed_sample_is_recognised() {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("events/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let cognito = Cognito::with_users(demo_users());
            let result = dispatch(&demo_app(&cognito), event(&name), "r", far_deadline()).await;
            assert!(result.is_ok(), "{name}: {result:?}");
            seen += 1;
        }
    }
    assert!(seen >= 10, "expected the sample events, found {seen}");
}

#[tokio::test]
async fn malformed_http_samples_get_their_documented_status() {
    for (sample, status, code, mentions) in [
        ("malformed/http-get.json", 405, "method-not-allowed", "POST"),
        (
            "malformed/http-text-plain.json",
            415,
            "unsupported-media-type",
            "JSON",
        ),
        (
            "malformed/http-bad-json.json",
            400,
            "invalid-request",
            "trailing",
        ),
        (
            "malformed/http-both-spellings.json",
            400,
            "invalid-request",
            "userPoolId",
        ),
        (
            "malformed/http-unknown-field.json",
            400,
            "invalid-request",
            "Password",
        ),
        (
            "malformed/http-empty-batch.json",
            400,
            "invalid-request",
            "1 to 25",
        ),
        (
            "malformed/http-batch-too-large.json",
            400,
            "invalid-request",
            "1 to 25",
        ),
        (
            "malformed/http-too-large.json",
            413,
            "payload-too-large",
            "65536",
        ),
    ] {
        let cognito = Cognito::with_users(demo_users());
        let response = dispatch(&demo_app(&cognito), event(sample), "r", far_deadline())
            .await
            .unwrap_or_else(|e| panic!("{sample}: {e}"));
        let (got, body) = http_parts(&response);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{sample}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{sample}: {message}");
        assert!(
            !message.contains("hunter2"),
            "{sample}: a body value was echoed back"
        );
        assert_eq!(cognito.calls(), 0, "{sample}: no Cognito call");
        if status == 405 {
            assert_eq!(response["headers"]["allow"], "POST");
        }
    }
}

#[tokio::test]
async fn sqs_record_without_message_id_fails_the_invocation_before_any_call() {
    let cognito = Cognito::with_users(demo_users());
    let result = dispatch(
        &demo_app(&cognito),
        event("malformed/sqs-missing-message-id.json"),
        "r",
        far_deadline(),
    )
    .await;
    assert!(
        matches!(result, Err(EventError::MissingMessageId { index: 1 })),
        "{result:?}"
    );
    assert_eq!(
        cognito.calls(),
        0,
        "not even the first, valid record may be processed"
    );
}

#[tokio::test]
async fn unknown_event_shape_is_a_clear_invocation_error() {
    let cognito = Cognito::with_users(demo_users());
    let error = dispatch(
        &demo_app(&cognito),
        event("malformed/unknown-event.json"),
        "r",
        far_deadline(),
    )
    .await
    .expect_err("not an event this function handles");
    assert!(matches!(error, EventError::Unsupported { .. }));
    assert!(
        error.to_string().contains("expected an API Gateway"),
        "{error}"
    );
    // Other odd payloads fail the same way, never with a panic.
    for payload in [
        serde_json::json!(null),
        serde_json::json!([1, 2]),
        serde_json::json!("x"),
        serde_json::json!({"Records": [{"eventSource": "aws:sns"}]}),
        serde_json::json!({"version": "2.0", "requestContext": {"http": 5}}),
    ] {
        let result = dispatch(&demo_app(&cognito), payload.clone(), "r", far_deadline()).await;
        assert!(result.is_err(), "{payload}");
    }
}
