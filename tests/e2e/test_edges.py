"""End to end: six edge behaviours of the guard and the deadline, through the real binary, against moto.

1. The margin window: a reset that started before `deadline − margin` and is answered inside
   [deadline − margin, deadline − margin/2) still gets its guard writes (claim completed, key
   finished): a RESET there is replayed for its key; a throttled one releases the user.
2. An ambiguous reset answer (a 500 after Cognito did the reset) is never re-sent by the SDK: over
   HTTP it is 502 `reset-unconfirmed` and the user is held; over SQS (a CONFIRMED user) the record
   is handed back as `reset-unresolved`, for its redelivery to settle by the user's status.
3. `recently-reset` is not stored as a key's answer: the same key after the cooldown resets.
4. A replay's outcome event says `"replayed": true`.
5. A batch item's key (`<key>#<i>`) does not collide with a single request's key.
6. A caller no rule lists writes nothing to the guard table.

Cognito faults come from a proxy between the function and moto (tests/e2e/faultproxy.py), which
also counts the requests per operation; real deadlines come from a small Lambda Runtime API
running the binary directly (`cargo lambda watch` sends none). Resets are counted twice: at the
proxy (what the function sent) and in moto's recording (what reached "Cognito").
"""

from __future__ import annotations

import copy
import json
import time

import pytest

import faultproxy
import stack as driver
from conftest_edges import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    MARGIN_MS,
    _cognito_proxy,
    cognito_faults,
    deadline_function,
    function_binary,
    proxied_function,
)
from faultproxy import now_ms

HTTP_EVENT = "events/http-api-v2.json"
SQS_MIXED_EVENT = "events/e2e/sqs-mixed.json"
DIEGO = "diego@example.com"
ERIN = "erin@example.com"
RESET_OP = "AdminResetUserPassword"
# A role the demo policy names in no rule.
STRANGER_ARN = "arn:aws:sts::123456789012:assumed-role/payroll-portal/bob"
# A deadline-function invocation under test: the margin plus 2 s for the steps before the reset
# (key, AdminGetUser, AdminListGroupsForUser, user claim), so the reset starts before the margin.
INVOCATION_MS = MARGIN_MS + 2000
# Where an answer "in the margin window" is put: the middle of [deadline − margin, deadline − margin/2).
IN_WINDOW_MS = 3 * MARGIN_MS // 4
# Follow-up requests to the deadline function get a deadline that never matters.
RELAXED_MS = 60_000
QUIET_S = 1.0
POLL_INTERVAL_S = 0.1


# ---- helpers -----------------------------------------------------------------------------------


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def request_for(username: str, key: str | None = None, caller_arn: str | None = None) -> dict:
    """The sample HTTP API request (caller helpdesk-portal/alice, or `caller_arn`) for `username`,
    optionally with an Idempotency-Key header."""
    event = copy.deepcopy(load(HTTP_EVENT))
    event["body"] = json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": username})
    if caller_arn is not None:
        iam = event["requestContext"]["authorizer"]["iam"]
        iam["userArn"] = caller_arn
        iam["callerId"] = iam["userId"] = "AROAEXAMPLESTRANGER:bob"
    return driver.with_idempotency_key(event, key) if key is not None else event


def batch_for(usernames: list[str], key: str) -> dict:
    """The sample HTTP API request with a batch body (one item per username) and a key."""
    event = copy.deepcopy(load(HTTP_EVENT))
    event["body"] = json.dumps([{"UserPoolId": driver.DEMO_POOL, "Username": u} for u in usernames])
    return driver.with_idempotency_key(event, key)


def sqs_record_for(username: str, message_id: str) -> dict:
    """An SQS event (the ticket queue) with one record asking for `username`."""
    event = load(SQS_MIXED_EVENT)
    record = copy.deepcopy(event["Records"][0])
    record["messageId"] = message_id
    record["body"] = json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": username})
    return {**event, "Records": [record]}


def http_body(answer: dict) -> dict:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return json.loads(answer["body"])


def status_and_error(answer: dict) -> tuple[int, str | None]:
    return answer["statusCode"], http_body(answer).get("error")


def retry_after(answer: dict) -> int:
    value = driver.header(answer, "Retry-After")
    assert value is not None, f"no Retry-After header: {answer}"
    return int(value)


def retried(answer: dict) -> set[str]:
    assert "batchItemFailures" in answer, f"expected an SQS batch response, got {answer}"
    return {f["itemIdentifier"] for f in answer["batchItemFailures"]}


def audit_codes(function, record_id: str) -> list[tuple[str, str | None]]:
    """(outcome, code) of the function's audit lines for one record since the last invoke."""
    lines = function.wait_for_log(
        lambda es: any(driver._mentions(e, record_id) and driver._find(e, "outcome") for e in es)
    )
    return [
        (driver._find(e, "outcome"), driver._find(e, "code"))
        for e in lines
        if driver._mentions(e, record_id) and driver._find(e, "outcome")
    ]


def wait_past(epoch_ms: int) -> None:
    """Wait until the wall clock is past `epoch_ms` (a moment the test knows, never far off)."""
    assert epoch_ms - now_ms() < 60_000, "refusing to wait more than a minute"
    while now_ms() <= epoch_ms:
        time.sleep(min(POLL_INTERVAL_S, max(0.0, (epoch_ms - now_ms() + 1) / 1000)))


def assert_answered_in_window(seen: faultproxy.Seen, deadline_ms: int, in_window: bool) -> None:
    """The test's own precondition: the reset was sent before the margin, and its answer came back
    inside [deadline − margin, deadline − margin/2) or (control) before the margin."""
    window = (deadline_ms - MARGIN_MS, deadline_ms - MARGIN_MS // 2)
    where = (
        f"reset sent at deadline-{deadline_ms - seen.arrived_ms} ms, answered at "
        f"deadline-{deadline_ms - seen.answered_ms} ms; margin {MARGIN_MS} ms"
    )
    assert seen.arrived_ms < window[0], f"the reset started inside the margin (machine too slow?): {where}"
    if in_window:
        assert window[0] <= seen.answered_ms < window[1], f"the answer missed the margin window: {where}"
    else:
        assert seen.answered_ms < window[0], f"the control's answer was not before the margin: {where}"


PLACEMENTS = pytest.mark.parametrize(
    "in_window", [False, True], ids=["control-answered-before-the-margin", "answered-in-the-margin-window"]
)


# ---- 1. the margin window ----------------------------------------------------------------------


def test_item1_control_a_record_with_less_than_the_margin_left_is_not_started(
    deadline_function, cognito_faults, users, stack
):
    """Item 1 (control): the Runtime API's deadline is the one the function works to: with less
    than the margin left, the record is 503 `deadline` and Cognito is never called."""
    answer = deadline_function.invoke(request_for(DIEGO, key="too-late-1"), now_ms() + MARGIN_MS // 2)

    assert status_and_error(answer) == (503, "deadline"), answer
    assert cognito_faults.seen() == []
    assert stack.resets_of(DIEGO) == 0


@PLACEMENTS
def test_item1a_a_reset_answered_in_the_margin_window_is_reset_and_replayed_for_its_key(
    deadline_function, cognito_faults, users, stack, in_window
):
    """Item 1 (a): a reset sent before the margin whose answer comes back inside
    [deadline − margin, deadline − margin/2) is RESET, and the same Idempotency-Key then gets the
    replayed 200 without a second AdminResetUserPassword (the guard's completion writes happened)."""
    key = f"margin-reset-{in_window}"
    deadline = now_ms() + INVOCATION_MS
    if in_window:
        cognito_faults.set_rule(RESET_OP, faultproxy.answered_at(deadline - IN_WINDOW_MS))

    first = deadline_function.invoke(request_for(DIEGO, key=key), deadline)

    (reset,) = cognito_faults.seen(RESET_OP)
    assert_answered_in_window(reset, deadline, in_window)
    body = http_body(first)
    assert first["statusCode"] == 200, body
    assert body["outcome"] == "RESET", body
    assert users()[DIEGO].status == "RESET_REQUIRED"

    # When the caller sends the same request with the same key again
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    second = deadline_function.invoke(request_for(DIEGO, key=key), now_ms() + RELAXED_MS)

    # Then it is the first answer, replayed, and nothing was sent to Cognito again
    assert status_and_error(second) == (200, None), http_body(second)
    assert driver.header(second, "Idempotent-Replayed") == "true", second
    assert http_body(second) == {**body, "replayed": True}
    assert cognito_faults.count(RESET_OP) == 1
    assert stack.resets_of(DIEGO) == 1


@PLACEMENTS
def test_item1b_a_reset_throttled_in_the_margin_window_releases_the_user(
    deadline_function, cognito_faults, users, stack, in_window
):
    """Item 1 (b): a reset sent before the margin that Cognito throttles with an answer inside
    [deadline − margin, deadline − margin/2) releases the user's claim: after that invocation's
    deadline, a new request (new key) for the user is RESET, not 409 recently-reset."""
    deadline = now_ms() + INVOCATION_MS
    cognito_faults.set_rule(
        RESET_OP, faultproxy.throttled(deadline - IN_WINDOW_MS if in_window else None)
    )

    first = deadline_function.invoke(request_for(ERIN, key="margin-throttled-1"), deadline)

    (throttled,) = cognito_faults.seen(RESET_OP)
    assert_answered_in_window(throttled, deadline, in_window)
    assert status_and_error(first) == (429, "throttled"), first
    assert stack.resets_of(ERIN) == 0

    # When the helpdesk asks again (a new key) and Cognito answers; in the window case only after
    # that invocation's deadline, so that a claim left behind would read as recently-reset (the
    # control released it long before)
    if in_window:
        wait_past(deadline)
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    again = deadline_function.invoke(request_for(ERIN, key="margin-throttled-2"), now_ms() + RELAXED_MS)

    # Then erin is reset: the throttled attempt left no claim behind
    body = http_body(again)
    assert (again["statusCode"], body.get("outcome"), body.get("error")) == (200, "RESET", None), body
    assert users()[ERIN].status == "RESET_REQUIRED"
    assert cognito_faults.count(RESET_OP) == 2
    assert stack.resets_of(ERIN) == 1


# ---- 2. an ambiguous reset answer ------------------------------------------------------------------


def test_item2_control_the_proxy_forwards_a_reset_unchanged(proxied_function, cognito_faults, users, stack):
    """Item 2 (control): with no rule the proxy is transparent: the reset goes through it once and
    reaches moto once."""
    answer = proxied_function.invoke(request_for(DIEGO, key="proxied-1"))

    body = http_body(answer)
    assert (answer["statusCode"], body.get("outcome")) == (200, "RESET"), body
    assert cognito_faults.count(RESET_OP) == 1
    assert cognito_faults.count("AdminGetUser") == 1
    assert stack.resets_of(DIEGO) == 1
    assert users()[DIEGO].status == "RESET_REQUIRED"


def test_item2_an_ambiguous_reset_answer_is_sent_once_and_holds_the_user(
    proxied_function, cognito_faults, users, stack
):
    """Item 2: Cognito performs the reset but answers 500 InternalErrorException. The SDK does not
    send AdminResetUserPassword again (3 attempts allowed); the answer is final, 502
    `reset-unconfirmed`; a later request for the user (new key, inside the cooldown) is 409
    `reset-unconfirmed` with Retry-After, and sends no reset."""
    cognito_faults.set_rule(RESET_OP, faultproxy.internal_error_after_forwarding())

    first = proxied_function.invoke(request_for(DIEGO, key="ambiguous-1"))

    sent = cognito_faults.count(RESET_OP)
    assert sent == 1, f"AdminResetUserPassword was sent {sent} times after an ambiguous 500 (answer: {first})"
    assert status_and_error(first) == (502, "reset-unconfirmed"), first
    assert users()[DIEGO].status == "RESET_REQUIRED"  # moto did reset him

    # When the helpdesk asks again with a new key, inside the cooldown, and Cognito would answer
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    later = proxied_function.invoke(request_for(DIEGO, key="ambiguous-2"))

    # Then the user is held, and no second code is sent
    assert status_and_error(later) == (409, "reset-unconfirmed"), later
    # The hold is a cooldown window from the unconfirmed reset.
    assert 1 <= retry_after(later) <= driver.LOCAL_COOLDOWN_SECONDS + 1, later
    assert cognito_faults.count(RESET_OP) == 1
    assert stack.resets_of(DIEGO) == 1


def test_item2_an_ambiguous_reset_answer_to_an_sqs_record_is_sent_once_and_handed_back_to_be_resolved(
    proxied_function, cognito_faults, users, stack
):
    """Item 2 (SQS): the same ambiguous answer to a queued request: AdminResetUserPassword is sent
    once, and, the user having been CONFIRMED, the record is handed back as RETRY
    `reset-unresolved`: its redelivery reads the user's status to settle it (issue 25, part 4;
    tests/e2e/test_resolved.py follows both ways through the redelivery)."""
    cognito_faults.set_rule(RESET_OP, faultproxy.internal_error_after_forwarding())
    event = sqs_record_for(DIEGO, "0e2e36b4-87a3-44ab-83d2-66197583ed02")
    (message_id,) = [r["messageId"] for r in event["Records"]]

    answer = proxied_function.invoke(event)

    sent = cognito_faults.count(RESET_OP)
    assert sent == 1, f"AdminResetUserPassword was sent {sent} times after an ambiguous 500 (answer: {answer})"
    assert retried(answer) == {message_id}, answer
    assert [code for _, code in audit_codes(proxied_function, message_id)] == ["reset-unresolved"]
    assert stack.resets_of(DIEGO) == 1


# ---- 3. recently-reset is not a key's answer ---------------------------------------------------------


def test_item3_a_key_refused_as_recently_reset_resets_after_the_cooldown(short_cooldown_function, users, stack):
    """Item 3: with a 2 s cooldown, key k2 for a user reset a moment ago (key k1) is 409
    recently-reset with Retry-After; once that has passed, k2 again is a fresh 200 RESET, not the
    old 409 replayed."""
    first = short_cooldown_function.invoke(request_for(DIEGO, key="cooldown-k1"))
    assert status_and_error(first) == (200, None), first

    refused = short_cooldown_function.invoke(request_for(DIEGO, key="cooldown-k2"))
    refused_at = time.monotonic()
    assert status_and_error(refused) == (409, "recently-reset"), refused
    wait = retry_after(refused)
    # whole seconds rounded up, against an expiry itself rounded up: at most the cooldown plus one
    assert 1 <= wait <= 3, refused

    # Honour Retry-After exactly: a client that waits that long must get through (it is rounded up,
    # so no extra grace is needed).
    time.sleep(max(0.0, refused_at + wait - time.monotonic()))

    # When the same request with k2 is sent again
    again = short_cooldown_function.invoke(request_for(DIEGO, key="cooldown-k2"))

    # Then it runs afresh and resets diego
    body = http_body(again)
    assert (again["statusCode"], body.get("outcome"), body.get("error")) == (200, "RESET", None), (
        again.get("headers"), body
    )
    assert body.get("replayed") is not True and driver.header(again, "Idempotent-Replayed") is None
    assert stack.resets_of(DIEGO) == 2


# ---- 4. a replay's outcome event ---------------------------------------------------------------------


def test_item4_a_replayed_answer_puts_an_event_marked_replayed(function, users, stack):
    """Item 4: the same request sent twice with the same Idempotency-Key puts two outcome events on
    the bus, the second with `"replayed": true`, the first without it (or false)."""
    key = "event-replay-1"
    event = request_for(ERIN, key=key)

    first = function.invoke(event)
    assert status_and_error(first) == (200, None), first
    got = stack.take_events(count=1)
    assert len(got) == 1, f"no outcome event for the first request: {got}"
    first_detail = got[0]["detail"]

    second = function.invoke(event)
    assert driver.header(second, "Idempotent-Replayed") == "true", second
    got = stack.take_events(count=1)
    assert len(got) == 1, f"no outcome event for the replayed request: {got}"
    second_detail = got[0]["detail"]
    assert stack.take_events(count=1, timeout=QUIET_S) == []

    for detail in (first_detail, second_detail):
        assert (detail["outcome"], detail.get("idempotencyKey"), detail.get("requestedUsername")) == (
            "RESET", key, ERIN
        ), detail
    assert first_detail.get("replayed") in (None, False), first_detail
    assert second_detail.get("replayed") is True, second_detail
    assert stack.resets_of(ERIN) == 1


# ---- 5. batch item keys --------------------------------------------------------------------------------


def test_item5_a_batch_items_key_does_not_collide_with_a_single_requests_key(function, users, stack):
    """Item 5: a single request with Idempotency-Key `k#0` for diego, then a batch with key `k`
    whose item 0 is erin: item 0 is RESET for erin, not 422 idempotency-key-reused."""
    single = function.invoke(request_for(DIEGO, key="collide#0"))
    assert status_and_error(single) == (200, None), single

    answer = function.invoke(batch_for([ERIN], key="collide"))

    assert answer["statusCode"] == 207, answer
    (item,) = http_body(answer)["results"]
    assert (item["index"], item["status"], item.get("outcome"), item.get("error")) == (0, 200, "RESET", None), item
    states = users()
    assert item["username"] == states[ERIN].username
    assert states[ERIN].status == "RESET_REQUIRED"
    assert stack.resets_of(ERIN) == 1 and stack.resets_of(DIEGO) == 1


# ---- 6. refused callers write nothing ------------------------------------------------------------------


def test_item6_a_caller_no_rule_lists_leaves_nothing_in_the_guard_table(function, users, stack):
    """Item 6: a request from a role no policy rule lists, with an Idempotency-Key, is 403
    no-rule-for-caller and writes no item to the guard table (and calls no Cognito)."""
    assert stack.guard_items() == []

    answer = function.invoke(request_for(DIEGO, key="stranger-1", caller_arn=STRANGER_ARN))

    assert status_and_error(answer) == (403, "no-rule-for-caller"), answer
    assert stack.guard_items() == []
    assert driver.cognito_calls(stack.endpoint, "AdminGetUser") == []
    assert stack.resets_of(DIEGO) == 0
