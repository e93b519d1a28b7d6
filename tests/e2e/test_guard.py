"""End to end: the idempotency and cooldown guard (issue 8), through the real binary, against moto's
Cognito and DynamoDB.

How many times a user was reset is read from moto, not from the function: moto records every request
it receives (`stack.resets_of` counts the AdminResetUserPassword calls for a user since the reseed),
and where a test needs to see a second reset in the user's status it sets the user back to
CONFIRMED first (`confirm_again`), since a reset leaves it RESET_REQUIRED either way.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
HTTP_BATCH_EVENT = "events/http-api-v2-batch.json"
SQS_MIXED_EVENT = "events/e2e/sqs-mixed.json"
SNS_IN_SQS_EVENT = "events/sns-in-sqs.json"
DIEGO = "diego@example.com"
ERIN = "erin@example.com"
REFUSED_WHILE_GUARDED = {"recently-reset", "in-progress"}
# How long past its end a 2 s cooldown may still refuse before the test gives up.
COOLDOWN_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def request_for(username: str, key: str | None = None, client_metadata: dict | None = None) -> dict:
    """The sample HTTP API request (caller: helpdesk-portal/alice) for `username`, optionally with
    an Idempotency-Key header."""
    event = copy.deepcopy(load(HTTP_EVENT))
    body = {"UserPoolId": driver.DEMO_POOL, "Username": username}
    if client_metadata is not None:
        body["ClientMetadata"] = client_metadata
    event["body"] = json.dumps(body)
    return driver.with_idempotency_key(event, key) if key is not None else event


def http_body(answer: dict) -> dict:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return json.loads(answer["body"])


def retried(answer: dict) -> set[str]:
    assert "batchItemFailures" in answer, f"expected an SQS batch response, got {answer}"
    return {f["itemIdentifier"] for f in answer["batchItemFailures"]}


def one_record(path: str, index: int = 0) -> dict:
    event = load(path)
    return {**event, "Records": [event["Records"][index]]}


def confirm_again(stack, email: str) -> None:
    """Put a user back to CONFIRMED, so that another reset would show as RESET_REQUIRED."""
    user = next(u for u in driver.DEMO_USERS if u.email == email)
    stack.cognito().admin_set_user_password(
        UserPoolId=user.pool, Username=email, Password=driver.SEED_PASSWORD, Permanent=True
    )
    assert stack.user_states()[email].status == "CONFIRMED"


def audit_lines(function, record_id: str) -> list[dict]:
    """The function's audit lines for one record since the last invoke."""
    return [
        e for e in function.log_since_invoke() if driver._mentions(e, record_id) and driver._find(e, "outcome")
    ]


def retry_after(answer: dict) -> int:
    value = driver.header(answer, "Retry-After")
    assert value is not None, f"no Retry-After header: {answer}"
    return int(value)


def parse_rfc3339(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"resetAt has no offset: {text}"
    return parsed


# ---- one winner: concurrent requests for one user ---------------------------------------------


def test_ten_concurrent_requests_for_one_user_reset_it_exactly_once(concurrent_function, users, stack):
    # Given diego, CONFIRMED, and ten requests for him with ten different Idempotency-Keys
    assert users()[DIEGO].status == "CONFIRMED"
    events = [request_for(DIEGO, key=f"concurrent-{i}") for i in range(10)]
    start = threading.Barrier(len(events))

    def send(event: dict) -> dict:
        start.wait(timeout=60)
        return concurrent_function.invoke(event)

    # When they arrive at once (the emulator runs up to ten function processes)
    with ThreadPoolExecutor(len(events)) as pool:
        answers = list(pool.map(send, events))

    # Then exactly one resets him and the other nine are told to come back later
    bodies = [http_body(a) for a in answers]
    statuses = sorted(a["statusCode"] for a in answers)
    assert statuses == [200] + [409] * 9, bodies
    (winner,) = [b for a, b in zip(answers, bodies) if a["statusCode"] == 200]
    assert winner["outcome"] == "RESET", winner
    for answer, body in zip(answers, bodies):
        if answer["statusCode"] == 409:
            assert body["error"] in REFUSED_WHILE_GUARDED, body
            # in-progress: try again in a second; recently-reset: when the 30 s cooldown ends
            # (whole seconds rounded up, against an expiry itself rounded up: at most cooldown + 1)
            expected = range(1, 2) if body["error"] == "in-progress" else range(1, driver.LOCAL_COOLDOWN_SECONDS + 2)
            assert retry_after(answer) in expected, (body, driver.header(answer, "Retry-After"))
    # and moto received one AdminResetUserPassword for him
    assert stack.resets_of(DIEGO) == 1
    assert users()[DIEGO].status == "RESET_REQUIRED"


# ---- replay: the same Idempotency-Key, the same SQS message ---------------------------------


def test_a_retry_with_the_same_key_gets_the_same_answer_replayed_and_no_second_reset(
    no_cooldown_function, users, stack
):
    # Given no cooldown, so only the key can stop a second reset
    event = request_for(DIEGO, key="portal-retry-1")
    first = no_cooldown_function.invoke(event)
    body = http_body(first)
    assert first["statusCode"] == 200, body
    assert body["outcome"] == "RESET" and body.get("replayed") is not True, body
    assert driver.header(first, "Idempotent-Replayed") is None
    confirm_again(stack, DIEGO)

    # When the portal sends the same request with the same key again
    second = no_cooldown_function.invoke(event)

    # Then it gets the first answer again, marked as replayed, and diego is not reset again
    assert second["statusCode"] == 200
    assert http_body(second) == {**body, "replayed": True}
    assert driver.header(second, "Idempotent-Replayed") == "true"
    assert users()[DIEGO].status == "CONFIRMED"
    assert stack.resets_of(DIEGO) == 1


def test_a_refusal_is_replayed_too(no_cooldown_function, users, stack):
    event = request_for("admin@example.com", key="portal-retry-2")
    first = no_cooldown_function.invoke(event)
    assert first["statusCode"] == 403, first

    second = no_cooldown_function.invoke(event)

    assert second["statusCode"] == 403
    assert http_body(second) == {**http_body(first), "replayed": True}
    assert driver.header(second, "Idempotent-Replayed") == "true"


def test_an_sqs_message_delivered_twice_resets_once_and_is_acknowledged_both_times(
    no_cooldown_function, users, stack
):
    # Given one message for erin, and no cooldown
    event = one_record(SQS_MIXED_EVENT, 0)
    (message_id,) = [r["messageId"] for r in event["Records"]]
    assert ERIN in event["Records"][0]["body"]

    first = no_cooldown_function.invoke(event)
    assert retried(first) == set(), first
    assert users()[ERIN].status == "RESET_REQUIRED"
    confirm_again(stack, ERIN)

    # When SQS delivers the same message again (a lost batch response)
    second = no_cooldown_function.invoke(event)

    # Then it is acknowledged, audited as a replay, and erin is not reset again
    assert retried(second) == set(), second
    lines = audit_lines(no_cooldown_function, message_id)
    assert [driver._find(e, "replayed") for e in lines] == [True], lines
    assert users()[ERIN].status == "CONFIRMED"
    assert stack.resets_of(ERIN) == 1


def test_an_sns_notification_redelivered_in_a_new_sqs_message_resets_once(
    no_cooldown_function, users, stack
):
    # Given the sample SNS-in-SQS record for erin
    event = load(SNS_IN_SQS_EVENT)
    first = no_cooldown_function.invoke(event)
    assert retried(first) == set(), first
    assert stack.resets_of(ERIN) == 1
    confirm_again(stack, ERIN)

    # When SNS delivers the same notification again: a new SQS message, the same SNS MessageId
    again = copy.deepcopy(event)
    again["Records"][0]["messageId"] = "059f36b4-87a3-44ab-83d2-661975830b21"
    again["Records"][0]["receiptHandle"] = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0b21"
    second = no_cooldown_function.invoke(again)

    # Then it is acknowledged and erin is not reset again
    assert retried(second) == set(), second
    assert users()[ERIN].status == "CONFIRMED"
    assert stack.resets_of(ERIN) == 1


def test_an_http_batch_sent_twice_with_one_key_is_replayed_item_by_item(no_cooldown_function, users, stack):
    batch = driver.with_idempotency_key(load(HTTP_BATCH_EVENT), "portal-batch-1")
    first = no_cooldown_function.invoke(batch)
    first_results = http_body(first)["results"]
    assert first["statusCode"] == 207
    assert [r["status"] for r in first_results][0] == 200, first_results
    confirm_again(stack, DIEGO)

    second = no_cooldown_function.invoke(batch)

    results = http_body(second)["results"]
    assert second["statusCode"] == 207
    # Items refused before the user decision (no rule for the caller and pool) write nothing to the
    # guard table, so they are decided afresh (the same answer, not marked replayed); every other
    # item is replayed.
    fresh = {"no-rule-for-caller", "pool-not-allowed"}

    def without_request_id(result: dict) -> dict:
        return {k: v for k, v in result.items() if k != "requestId"}

    assert [without_request_id(r) if r.get("error") in fresh else r for r in results] == [
        without_request_id(r) if r.get("error") in fresh else {**r, "replayed": True} for r in first_results
    ]
    # Item 0 is kept apart from any single request's key: the same request sent alone with the key
    # "<key>#0" is a new request (here: the user was just reset, cooldown off, so reset again),
    # not a replay of the batch item.
    item0 = json.loads(batch["body"])[0]
    alone = driver.with_idempotency_key(load(HTTP_EVENT), "portal-batch-1#0")
    alone["body"] = json.dumps(item0)
    third = no_cooldown_function.invoke(alone)
    assert third["statusCode"] == 200, third
    assert http_body(third).get("replayed") is not True
    assert stack.resets_of(DIEGO) == 2


# ---- keys: reuse for another request, malformed keys ---------------------------------------------


@pytest.mark.parametrize(
    ("username", "client_metadata"),
    [(ERIN, {"ticket": "INC-1"}), (DIEGO, {"ticket": "INC-2"})],
    ids=["other-user", "other-client-metadata"],
)
def test_the_same_key_for_a_different_request_is_refused_with_422(
    no_cooldown_function, users, stack, username, client_metadata
):
    key = "ticket-77"
    first = no_cooldown_function.invoke(request_for(DIEGO, key=key, client_metadata={"ticket": "INC-1"}))
    assert first["statusCode"] == 200, first
    confirm_again(stack, DIEGO)

    answer = no_cooldown_function.invoke(request_for(username, key=key, client_metadata=client_metadata))

    body = http_body(answer)
    assert answer["statusCode"] == 422, body
    assert body["error"] == "idempotency-key-reused", body
    assert body.get("requestId") and body.get("replayed") is not True
    assert {e: s.status for e, s in users().items() if s.status != driver.seeded_status(e)} == {}
    assert stack.resets_of(DIEGO) == 1 and stack.resets_of(ERIN) == 0


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"], ids=["empty", "256-chars", "tab"])
def test_a_malformed_key_is_an_invalid_request_naming_the_header(function, users, stack, key):
    answer = function.invoke(request_for(DIEGO, key=key))

    body = http_body(answer)
    assert answer["statusCode"] == 400, body
    assert body["error"] == "invalid-request", body
    assert "idempotency-key" in body["message"].lower(), body
    assert stack.resets_of(DIEGO) == 0


def test_a_key_of_255_printable_characters_is_accepted(function, users, stack):
    key = ("".join(chr(c) for c in range(0x20, 0x7F)) * 3)[:255]

    answer = function.invoke(request_for(DIEGO, key=key))

    assert answer["statusCode"] == 200, answer
    assert stack.resets_of(DIEGO) == 1


# ---- cooldown -----------------------------------------------------------------------------------


def test_a_second_request_inside_the_cooldown_is_refused_and_one_after_it_resets(
    short_cooldown_function, users, stack
):
    cooldown = 2
    # Given diego reset a moment ago
    sent = time.monotonic()
    first = short_cooldown_function.invoke(request_for(DIEGO, key="cool-0"))
    assert first["statusCode"] == 200, first
    confirm_again(stack, DIEGO)

    # When another request for him comes in (another key, another ticket)
    second = short_cooldown_function.invoke(request_for(DIEGO, key="cool-1"))

    # Then it is 409 recently-reset, with the seconds left and the time of the reset
    body = http_body(second)
    assert second["statusCode"] == 409, body
    assert body["error"] == "recently-reset", body
    assert body.get("message") and body.get("requestId")
    assert 1 <= retry_after(second) <= cooldown + 1  # rounded up, against an expiry rounded up
    reset_at = parse_rfc3339(body["resetAt"])
    assert abs((datetime.now(timezone.utc) - reset_at).total_seconds()) < 5 + cooldown
    lines = audit_lines(short_cooldown_function, "cool-1")
    assert [(driver._find(e, "code"), bool(driver._find(e, "reset_at"))) for e in lines] == [
        ("recently-reset", True)
    ], lines
    assert users()[DIEGO].status == "CONFIRMED"

    # When the requester keeps retrying (new keys) until accepted, at most 10 s past the window
    attempt = 0
    while True:
        attempt += 1
        answer = short_cooldown_function.invoke(request_for(DIEGO, key=f"cool-retry-{attempt}"))
        if answer["statusCode"] == 200:
            break
        assert (answer["statusCode"], http_body(answer)["error"]) == (409, "recently-reset"), answer
        assert time.monotonic() - sent < cooldown + COOLDOWN_GRACE_S, "the cooldown did not end"
        time.sleep(POLL_INTERVAL_S)
    accepted_after = time.monotonic() - sent

    # Then it went through only once the window had passed (whole seconds: up to 1 s early)
    assert accepted_after > cooldown - 1, accepted_after
    assert http_body(answer)["outcome"] == "RESET"
    assert users()[DIEGO].status == "RESET_REQUIRED"
    assert stack.resets_of(DIEGO) == 2


def test_the_cooldown_holds_across_sources(function, users, stack):
    # Given erin reset over HTTP
    assert function.invoke(request_for(ERIN))["statusCode"] == 200

    # When a ticket for her arrives on the queue
    event = one_record(SQS_MIXED_EVENT, 0)
    answer = function.invoke(event)

    # Then it is acknowledged (REJECTED recently-reset, not retried) and she is not reset again
    assert retried(answer) == set(), answer
    lines = audit_lines(function, event["Records"][0]["messageId"])
    assert [(driver._find(e, "outcome"), driver._find(e, "code")) for e in lines] == [
        ("REJECTED", "recently-reset")
    ], lines
    assert stack.resets_of(ERIN) == 1


# ---- failures release: a RETRY is not kept, a refused reset frees the user --------------------------


def test_a_message_retried_after_cognito_was_down_resets_on_redelivery(
    unreachable_function, function, users, stack
):
    # Given a message for erin that came back as RETRY because Cognito was unreachable
    event = one_record(SQS_MIXED_EVENT, 0)
    (message_id,) = [r["messageId"] for r in event["Records"]]
    failed = unreachable_function.invoke(event)
    assert retried(failed) == {message_id}, failed

    # When SQS delivers it again and Cognito answers
    answer = function.invoke(event)

    # Then it is processed anew (the RETRY was not kept as its answer): erin is reset
    assert retried(answer) == set(), answer
    lines = audit_lines(function, message_id)
    assert [(driver._find(e, "outcome"), driver._find(e, "replayed")) for e in lines] == [
        ("RESET", False)
    ], lines
    assert users()[ERIN].status == "RESET_REQUIRED"
    assert stack.resets_of(ERIN) == 1


def test_a_reset_cognito_refused_does_not_hold_the_user(function, users, stack):
    # Given nemo, whose reset Cognito refuses (no verified email)
    nemo = "nemo@example.com"
    refused = function.invoke(request_for(nemo, key="nemo-1"))
    assert (refused["statusCode"], http_body(refused)["error"]) == (422, "cannot-reset"), refused
    assert stack.resets_of(nemo) == 1

    # When the helpdesk verifies his email and asks again at once (a new request, a new key)
    stack.cognito().admin_update_user_attributes(
        UserPoolId=driver.DEMO_POOL,
        Username=nemo,
        UserAttributes=[{"Name": "email_verified", "Value": "true"}],
    )
    answer = function.invoke(request_for(nemo, key="nemo-2"))

    # Then he is reset: the refused attempt neither started a cooldown nor left a claim
    assert answer["statusCode"] == 200, answer
    assert http_body(answer)["outcome"] == "RESET"
    assert users()[nemo].status == "RESET_REQUIRED"
    assert stack.resets_of(nemo) == 2


# ---- the guard's own failures, dry run ----------------------------------------------------------


def test_without_its_table_the_guard_refuses_to_reset_anyone(missing_table_function, users, stack):
    answer = missing_table_function.invoke(request_for(DIEGO))
    body = http_body(answer)
    assert answer["statusCode"] == 503, body
    assert body["error"] == "guard-unavailable", body

    event = one_record(SQS_MIXED_EVENT, 0)
    batch = missing_table_function.invoke(event)
    assert retried(batch) == {event["Records"][0]["messageId"]}, batch

    assert stack.resets_of(DIEGO) == 0 and stack.resets_of(ERIN) == 0
    assert {e: s.status for e, s in users().items() if s.status != driver.seeded_status(e)} == {}


def test_dry_run_reads_the_cooldown_and_writes_nothing(function, dry_run_function, users, stack):
    # A dry run for a user nobody reset writes nothing to the guard table
    answer = dry_run_function.invoke(request_for(ERIN, key="dry-1"))
    assert (answer["statusCode"], http_body(answer)["outcome"]) == (200, "WOULD_RESET"), answer
    assert stack.guard_items() == []

    # After a real reset of diego, a dry run for him says what a real request would get
    assert function.invoke(request_for(DIEGO))["statusCode"] == 200
    items = stack.guard_items()
    answer = dry_run_function.invoke(request_for(DIEGO, key="dry-2"))
    body = http_body(answer)
    assert answer["statusCode"] == 409, body
    assert body["error"] == "recently-reset", body
    assert stack.guard_items() == items
    assert stack.resets_of(DIEGO) == 1


def test_guard_items_expire_by_ttl_and_hold_no_client_metadata(function, users, stack):
    secret = "do-not-store-7f3a"
    answer = function.invoke(request_for(DIEGO, key="ttl-1", client_metadata={"ticket": secret}))
    assert answer["statusCode"] == 200, answer

    items = stack.guard_items()

    assert items, "a reset left nothing in the guard table"
    now = time.time()
    for item in items:
        assert isinstance(item["pk"], str)
        assert now < float(item["expiresAt"]) <= now + 86400 + 60, item
        assert secret not in json.dumps(item, default=str), item


def test_the_fleets_pacing_buckets_are_items_of_the_guard_table(function, users, stack):
    """Shared pacing (the default with GUARD_TABLE): the real binary leases its Cognito turns from
    one item per account, region and quota category in the guard table (the function's own account:
    FUNCTION_ACCOUNT_ID), written by moto's DynamoDB from the function's conditional UpdateItems."""
    before = time.time() * 1_000_000
    answer = function.invoke(request_for(DIEGO))
    assert answer["statusCode"] == 200, answer

    # (an HTTP call's borrow window, `<bucket>#borrow`, is an item beside its bucket)
    buckets = {item["pk"]: item for item in stack.guard_items()
               if item["pk"].startswith("bucket#") and not item["pk"].endswith("#borrow")}

    # the demo policy names groups: AdminGetUser, AdminListGroupsForUser, AdminResetUserPassword
    assert set(buckets) == {
        f"bucket#{driver.FUNCTION_ACCOUNT}#us-west-2#UserRead",
        f"bucket#{driver.FUNCTION_ACCOUNT}#us-west-2#UserResourceRead",
        f"bucket#{driver.FUNCTION_ACCOUNT}#us-west-2#UserAccountRecovery",
    }, buckets
    for pk, item in buckets.items():
        # the end of the last lease: after the request began, within a lease (and its round trip)
        assert before < float(item["nextUs"]) < time.time() * 1_000_000 + 2_000_000, item
        assert time.time() < float(item["expiresAt"]) <= time.time() + 86400 + 60, item
        assert "cutFactor" not in item, item  # nobody was throttled
