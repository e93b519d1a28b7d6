"""openapi.yaml: a valid OpenAPI 3.1 document that documents every answer of POST /reset.

Run with the schemathesis venv (`make openapi-check`, which then checks the handler's answers of
every status, written by tests/it/openapi.rs, with openapi_check.py). The real binary's answers are
checked against the same document by tests/schemathesis/ (sample events, then schemathesis).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openapi_check as check  # noqa: E402

ROOT = check.ROOT

# Error codes an HTTP caller can get, by status (docs/api.md "Outcomes" and src/outcome.rs).
FUNCTION_CODES = {
    400: {"invalid-request", "ticket-required", "ticket-invalid"},
    403: {"denied-user", "denied-group", "no-rule-for-caller", "pool-not-allowed", "user-not-allowed",
          "sign-out-not-allowed"},
    404: {"user-not-found", "pool-not-found"},
    405: {"method-not-allowed"},
    409: {"user-disabled", "not-resettable", "invitation-pending", "user-unconfirmed", "external-user"},
    413: {"payload-too-large"},
    415: {"unsupported-media-type"},
    422: {"cannot-reset", "trigger-refused"},
    429: {"throttled", "caller-budget-exhausted", "attempt-limit"},
    502: {"upstream-error", "misconfigured", "reset-unconfirmed", "trigger-invalid-response"},
    503: {"unavailable", "deadline", "policy-stale", "delivery-limit"},
}
# The idempotency and cooldown guard (issue 8), documented with it.
GUARD_CODES = {
    409: {"recently-reset", "reset-unconfirmed", "in-progress"},
    422: {"idempotency-key-reused"},
    503: {"guard-unavailable"},
}
REQUEST_ID = "8b1c6f3e-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def document():
    return check.load_document()


def error(code: str, **extra) -> str:
    import json

    return json.dumps({"error": code, "message": "m", "requestId": REQUEST_ID, **extra})


def documented_codes(document: dict, status: int) -> set[str]:
    schema = document["components"]["schemas"][f"Codes{status}"]["properties"]["error"]
    return set(schema.get("enum", [])) | ({schema["const"]} if "const" in schema else set())


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    assert sorted(document["paths"]) == ["/approvals/{approvalId}", "/requests/{id}", "/reset"]


def test_every_code_the_function_answers_is_documented_under_its_status(document):
    for status, codes in FUNCTION_CODES.items():
        expected = codes | GUARD_CODES.get(status, set())
        assert documented_codes(document, status) == expected, status


def test_every_documented_function_code_is_a_code_in_the_source():
    # A code renamed in the function must be renamed here (and in the document) too.
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    literals = set(re.findall(r'"([a-z]+(?:-[a-z]+)*)"', source))
    missing = {c for codes in FUNCTION_CODES.values() for c in codes} - literals
    assert not missing, f"documented but not in src/: {sorted(missing)}"


def test_request_examples_are_valid_requests(document):
    body = check.operation(document)["requestBody"]["content"]["application/json"]
    validator = check.schema_validator(document, body["schema"])
    for name, example in body["examples"].items():
        errors = [e.message for e in validator.iter_errors(example["value"])]
        assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize(
    "request_body",
    [
        {"UserPoolId": "us-west-2_a", "userPoolId": "us-west-2_a", "Username": "x"},
        {"UserPoolId": "us-west-2_a"},
        {"UserPoolId": "us-west-2_a", "Username": "x", "Password": "p"},
        {"UserPoolId": "us-west-2_a", "Username": "has space"},
        {"UserPoolId": "no-underscore", "Username": "x"},
        {"Username": "x", "ClientMetadata": {"k": 1}},
        [],
        [{"Username": "x"}] * 26,
    ],
)
def test_requests_the_function_refuses_are_invalid_in_the_document(document, request_body):
    body = check.operation(document)["requestBody"]["content"]["application/json"]
    assert list(check.schema_validator(document, body["schema"]).iter_errors(request_body))


def test_documented_answers_pass_the_check(document):
    import json

    ok = {"content-type": "application/json"}
    good = [
        (200, ok, json.dumps({"outcome": "RESET", "userPoolId": "us-west-2_a", "username": "u", "action": "reset-password", "requestId": REQUEST_ID})),
        (
            200,
            ok | {"Idempotent-Replayed": "true"},
            json.dumps(
                {"outcome": "WOULD_RESET", "userPoolId": "us-west-2_a", "username": "u", "action": "resend-invitation", "requestId": REQUEST_ID, "replayed": True}
            ),
        ),
        (
            207,
            ok,
            json.dumps(
                {
                    "results": [
                        {"index": 0, "status": 200, "outcome": "RESET", "userPoolId": "p_1", "username": "u", "action": "reset-password", "signedOut": False, "signOutError": "throttled", "requestId": REQUEST_ID},
                        {"index": 1, "status": 403, "error": "denied-group", "message": "m", "requestId": REQUEST_ID},
                        {"index": 2, "status": 409, "error": "recently-reset", "message": "m", "requestId": REQUEST_ID, "resetAt": "2026-11-27T09:00:00Z"},
                    ]
                }
            ),
        ),
        (405, ok | {"Allow": "POST"}, error("method-not-allowed")),
        (409, ok | {"Retry-After": "3600"}, error("recently-reset", resetAt="2026-11-27T09:00:00Z")),
        (409, ok | {"Retry-After": "1"}, error("in-progress")),
        (429, ok | {"Retry-After": "1"}, error("throttled")),
        (429, ok | {"Retry-After": "3600"}, error("caller-budget-exhausted")),
        (503, ok, error("guard-unavailable")),
    ]
    for status, headers, body in good:
        assert check.check_answer(document, status, headers, body) == [], (status, body)


@pytest.mark.parametrize(
    "status, headers, body, problem",
    [
        (500, {"content-type": "application/json"}, error("upstream-error"), "not documented"),
        (502, {"content-type": "application/json"}, error("internal"), "body error"),
        (403, {"content-type": "application/json"}, error("user-not-found"), "body error"),
        (405, {"content-type": "application/json"}, error("method-not-allowed"), "Allow is missing"),
        (429, {"content-type": "application/json"}, error("throttled"), "Retry-After is missing"),
        (409, {"content-type": "application/json"}, error("recently-reset"), "body"),
        (409, {"content-type": "application/json"}, error("user-disabled", resetAt="2026-11-27T09:00:00Z"), "body"),
        (400, {"content-type": "application/json"}, error("invalid-request", detail="x"), "body"),
        (400, {"content-type": "text/plain"}, error("invalid-request"), "content-type"),
        (200, {"content-type": "application/json"}, "not json", "not JSON"),
    ],
)
def test_undocumented_answers_fail_the_check(document, status, headers, body, problem):
    problems = check.check_answer(document, status, headers, body)
    assert any(problem in p for p in problems), problems
