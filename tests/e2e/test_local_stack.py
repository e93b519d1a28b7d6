"""End to end: the real binary, under cargo-lambda's Runtime API emulator, against moto's Cognito.

Every test starts from freshly seeded pools (see conftest.py and tools/stack.py for the users) and
reads the result back from moto, not from the function's own answer alone.
"""

from __future__ import annotations

import copy
import json

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
HTTP_BATCH_EVENT = "events/http-api-v2-batch.json"
SQS_MIXED_EVENT = "events/e2e/sqs-mixed.json"
SQS_MIXED_ALLOWED = {"erin@example.com", "diego@example.com"}


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def http_request_for(username: str, pool: str = driver.DEMO_POOL) -> dict:
    """The sample HTTP API request (caller: helpdesk-portal/alice) for another user."""
    event = copy.deepcopy(load(HTTP_EVENT))
    event["body"] = json.dumps({"UserPoolId": pool, "Username": username})
    return event


def http_body(answer: dict) -> dict:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return json.loads(answer["body"])


def message_ids(event: dict) -> set[str]:
    return {r["messageId"] for r in event["Records"]}


def retried(answer: dict) -> set[str]:
    assert "batchItemFailures" in answer, f"expected an SQS batch response, got {answer}"
    return {f["itemIdentifier"] for f in answer["batchItemFailures"]}


def statuses(states) -> dict[str, str]:
    return {email: s.status for email, s in states.items()}


def test_allowed_http_request_resets_the_user_and_answers_with_the_canonical_username(function, users):
    # Given diego, CONFIRMED, allowed to alice's helpdesk role
    before = users()
    diego = before["diego@example.com"]
    assert diego.status == "CONFIRMED"

    # When alice asks by email
    answer = function.invoke(HTTP_EVENT)

    # Then the answer is 200 RESET naming the canonical user, and moto says RESET_REQUIRED
    body = http_body(answer)
    assert answer["statusCode"] == 200, body
    assert body["outcome"] == "RESET", body
    assert body["username"] == diego.username != "diego@example.com", body
    assert body["userPoolId"] == driver.DEMO_POOL
    after = users()
    assert after["diego@example.com"].status == "RESET_REQUIRED"
    assert statuses(after) | {"diego@example.com": "CONFIRMED"} == statuses(before)


@pytest.mark.parametrize(
    ("email", "code"),
    [("admin@example.com", "denied-user"), ("mallory@example.com", "denied-group")],
)
def test_denied_user_asked_for_by_email_is_refused_and_left_unchanged(function, users, email, code):
    before = users()

    answer = function.invoke(http_request_for(email))

    body = http_body(answer)
    assert answer["statusCode"] == 403, body
    assert body["error"] == code, body
    assert "outcome" not in body
    assert users() == before


def test_sqs_batch_resets_exactly_the_allowed_users_and_acknowledges_the_rest(function, users):
    # Given a batch for erin and diego (allowed), admin (denied by name), mallory (denied by
    # group), ghost (unknown), nemo (no verified email) and dora (disabled)
    before = users()
    event = load(SQS_MIXED_EVENT)

    answer = function.invoke(event)

    # Then nothing is retried, the allowed two are reset and the rest are untouched
    assert retried(answer) == set(), answer
    after = users()
    for email, state in after.items():
        expected = "RESET_REQUIRED" if email in SQS_MIXED_ALLOWED else before[email].status
        assert state.status == expected, f"{email}: {state}"
        assert state.enabled == before[email].enabled


def test_sqs_batch_is_retried_whole_when_cognito_is_unreachable(unreachable_function, users):
    before = users()
    event = load(SQS_MIXED_EVENT)

    answer = unreachable_function.invoke(event)

    assert retried(answer) == message_ids(event), answer
    assert users() == before


def test_dry_run_answers_would_reset_and_changes_nothing(dry_run_function, users):
    before = users()

    answer = dry_run_function.invoke(HTTP_EVENT)
    body = http_body(answer)
    assert answer["statusCode"] == 200, body
    assert body["outcome"] == "WOULD_RESET", body
    assert body["username"] == before["diego@example.com"].username

    batch = dry_run_function.invoke(SQS_MIXED_EVENT)
    assert retried(batch) == set(), batch

    assert users() == before


def test_http_batch_answers_each_item_with_its_own_status_and_code(function, users):
    answer = function.invoke(HTTP_BATCH_EVENT)

    body = http_body(answer)
    assert answer["statusCode"] == 207, body
    got = [(r["index"], r["status"], r.get("outcome") or r.get("error")) for r in body["results"]]
    assert got == [
        (0, 200, "RESET"),
        (1, 403, "denied-user"),
        (2, 403, "denied-group"),
        (3, 403, "user-not-allowed"),
        (4, 403, "user-not-allowed"),  # no existence oracle: ghost is no one this caller may reset
        (5, 409, "user-disabled"),
        (6, 422, "cannot-reset"),
        (7, 403, "pool-not-allowed"),
    ]
    assert {e for e, s in users().items() if s.status == "RESET_REQUIRED"} == {"diego@example.com"}


def test_fifo_batch_resets_each_group_in_order(function, users):
    event = load("events/sqs-fifo.json")

    answer = function.invoke(event)

    assert retried(answer) == set(), answer
    after = users()
    assert after["diego@example.com"].status == "RESET_REQUIRED"
    assert after["erin@example.com"].status == "RESET_REQUIRED"
    assert after["dora@example.com"].status == "CONFIRMED"
    assert not after["dora@example.com"].enabled
