"""End to end: the holes in the guard's promises that issue 24's review found, through the real
binary against moto, with faults injected between the function and moto's DynamoDB and Cognito.

1. A write that lands but whose answer is lost (a 500 after the write, a cut connection) is
   retried by the SDK; the user claim's retry meets the record's own claim. Also a release that
   does not land after a throttled reset. Either way the record resets the user exactly once
   (on a redelivery at the latest), never ends `reset-unconfirmed` with no code sent.
2. One retryable sign-out failure (or a reset answered too late for the sign-out to start) is
   retried on the SQS redelivery; afterwards the user is held for the cooldown, not for
   IDEMPOTENCY_TTL_SECONDS: Retry-After never exceeds the cooldown (+1 s).
3. A key's finish that does not land (the reset was performed) must not leave the key unrecorded:
   the same Idempotency-Key is answered as a replay of the RESET, never reset again.
5. A sign-out redelivery gives one outcome event and one `Records.RESET` for the one final
   outcome, not two.

(Hole 4 is about the fault suite's own code: it has no end-to-end test.)

Every function here is the real binary behind the Runtime API with real deadlines
(faultproxy.DirectFunction): a user claim's lease is its invocation's deadline, so a test ends a
lease by waiting past a deadline it chose (seconds away), never by sleeping on a guess. The fault
proxy's rules match an operation and a text of the request body (`"pk":{"S":"user#` for the user
item, `"pk":{"S":"key#` for an idempotency key) and apply to the first N matching requests only;
each test first checks that its fault took place (a fault that never fired proves nothing).
"""

from __future__ import annotations

import copy
import json
import time

import pytest

import faultproxy
import stack as driver
from conftest_edges import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    _cognito_proxy,
    cognito_faults,
    function_binary,
)
from conftest_holes import (  # noqa: F401 - fixtures
    _dynamodb_proxy,
    dynamodb_faults,
    start_direct,
)
from faultproxy import now_ms

HTTP_EVENT = "events/http-api-v2.json"
SQS_MIXED_EVENT = "events/e2e/sqs-mixed.json"
DIEGO = "diego@example.com"
ERIN = "erin@example.com"
RESET_OP = "AdminResetUserPassword"
SIGN_OUT_OP = "AdminUserGlobalSignOut"
USER_ITEM = '"pk":{"S":"user#'
KEY_ITEM = '"pk":{"S":"key#'
# The guard's client makes up to 3 attempts per call (config::GUARD_MAX_ATTEMPTS).
GUARD_ATTEMPTS = 3
# A deadline of this much gives a record room for its steps on a busy 2-core machine; it is also
# the lease of the record's user claim and key (both end at the invocation's deadline).
INVOCATION_MS = 6000
# A cooldown longer than a lease, so that a claim left behind still stands when its lease ends
# (the shape of production: 300 s cooldown, leases of at most the function's timeout).
LONG_COOLDOWN_S = 30
# A short cooldown, to watch a hold end.
SHORT_COOLDOWN_S = 3
# Deliveries of one SQS message before a test gives up (the queue's maxReceiveCount is 5).
MAX_DELIVERIES = 4
POLL_INTERVAL_S = 0.1


# ---- helpers -----------------------------------------------------------------------------------


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def http_request_for(username: str, key: str | None = None) -> dict:
    """The sample HTTP API request (caller helpdesk-portal/alice) for `username`."""
    event = copy.deepcopy(load(HTTP_EVENT))
    event["body"] = json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": username})
    return driver.with_idempotency_key(event, key) if key is not None else event


def sqs_delivery(username: str, message_id: str, receive_count: int) -> dict:
    """The ticket queue's SQS event with one record asking for `username`, as its
    `receive_count`-th delivery (the same message id every time)."""
    event = load(SQS_MIXED_EVENT)
    record = copy.deepcopy(event["Records"][0])
    record["messageId"] = message_id
    record["receiptHandle"] = f"{message_id}-{receive_count}"
    record["body"] = json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": username})
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return {**event, "Records": [record]}


def http_body(answer: dict) -> dict:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return json.loads(answer["body"])


def retried(answer: dict) -> set[str]:
    assert "batchItemFailures" in answer, f"expected an SQS batch response, got {answer}"
    return {f["itemIdentifier"] for f in answer["batchItemFailures"]}


def retry_after(answer: dict) -> int:
    value = driver.header(answer, "Retry-After")
    assert value is not None, f"no Retry-After header: {answer}"
    return int(value)


def log_entries(function: faultproxy.DirectFunction, mark: int = 0) -> list[dict]:
    """The JSON lines the function wrote to its log from byte `mark` on."""
    if function.log is None or not function.log.exists():
        return []
    with open(function.log, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    entries = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def log_mark(function: faultproxy.DirectFunction) -> int:
    return function.log.stat().st_size if function.log is not None and function.log.exists() else 0


def audit_of(function: faultproxy.DirectFunction, record_id: str, mark: int, count: int) -> list[tuple[str, str]]:
    """(outcome, code) of the audit lines for `record_id` since `mark`, once `count` are there
    (polled: the process writes its lines as it goes; bounded)."""
    deadline = time.monotonic() + 5.0
    while True:
        found = [
            (driver._find(e, "outcome"), driver._find(e, "code") or "")
            for e in log_entries(function, mark)
            if driver._mentions(e, record_id) and driver._find(e, "outcome")
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(POLL_INTERVAL_S)


def reset_metric_total(function: faultproxy.DirectFunction, mark: int, invocations: int) -> int:
    """The sum of `Records.RESET` over the EMF documents since `mark`, once there is one per
    invocation (bounded)."""
    deadline = time.monotonic() + 5.0
    while True:
        documents = [e for e in log_entries(function, mark) if isinstance(e.get("_aws"), dict)]
        if len(documents) >= invocations or time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    assert len(documents) == invocations, f"expected {invocations} EMF documents, got {documents}"
    return sum(int(d.get("Records.RESET", 0)) for d in documents)


def wait_past(epoch_ms: int) -> None:
    """Wait until the wall clock is past `epoch_ms` (a moment the test chose, never far off)."""
    assert epoch_ms - now_ms() < 60_000, "refusing to wait more than a minute"
    while now_ms() <= epoch_ms:
        time.sleep(min(POLL_INTERVAL_S, max(0.0, (epoch_ms - now_ms() + 1) / 1000)))


def deliver_until_acknowledged(
    function: faultproxy.DirectFunction, username: str, message_id: str, mark: int,
    before_redelivery=None,
) -> tuple[int, list[tuple[str, str]]]:
    """Deliver one SQS message as the queue would: again after each RETRY, each time once the
    previous delivery's deadline (its leases) has passed, until the record is acknowledged
    (at most MAX_DELIVERIES). The number of deliveries and every (outcome, code) audited."""
    for receive in range(1, MAX_DELIVERIES + 1):
        deadline = now_ms() + INVOCATION_MS
        answer = function.invoke(sqs_delivery(username, message_id, receive), deadline)
        if message_id not in retried(answer):
            return receive, audit_of(function, message_id, mark, receive)
        if before_redelivery is not None:
            before_redelivery()
        wait_past(deadline)
    return MAX_DELIVERIES, audit_of(function, message_id, mark, MAX_DELIVERIES)


def sign_out_policy(tmp_path) -> str:
    """The demo policy with the ticket queue's rule signing users out after a reset (`always`);
    the path of a copy in `tmp_path`."""
    policy = json.loads(driver.DEMO_POLICY.read_text())
    (queue_rule,) = [r for r in policy["rules"] if r["name"] == "ticket-queue"]
    queue_rule["signOut"] = "always"
    path = tmp_path / "policy-queue-signs-out.json"
    path.write_text(json.dumps(policy))
    return str(path)


# ---- 1. a lost answer of the user claim, and a release that did not land ------------------------


def _claim_answer_lost(
    rule: faultproxy.Rule, start_direct, dynamodb_faults, users, stack, label: str, message_id: str
):
    # Given a claim whose PutItem lands in moto but whose answer the function never gets (once)
    function = start_direct(label, RESET_COOLDOWN_SECONDS=str(LONG_COOLDOWN_S))
    fault = dynamodb_faults.add_rule("PutItem", rule, body_contains=USER_ITEM, times=1)
    mark = log_mark(function)

    # When the ticket queue delivers a request for diego, and again after each RETRY
    deliveries, audited = deliver_until_acknowledged(function, DIEGO, message_id, mark)

    # Then the fault took place, and diego was reset exactly once, the record ending RESET
    assert fault.used == 1, "the claim's PutItem was never faulted (the test's precondition)"
    claims = [s for s in dynamodb_faults.seen("PutItem") if USER_ITEM.encode() in s.body]
    assert claims[0].forwarded, "the faulted claim did not reach moto"
    resets = stack.resets_of(DIEGO)
    assert (audited[-1][0] if audited else None, resets) == ("RESET", 1), (
        f"after {deliveries} deliveries: audited {audited}, {resets} resets sent to Cognito "
        f"(expected the record to reset diego exactly once)"
    )
    assert users()[DIEGO].status == "RESET_REQUIRED"


def test_hole1_a_claim_whose_answer_was_lost_after_the_write_resets_the_user_once(
    start_direct, dynamodb_faults, users, stack
):
    """Hole 1: the claim's PutItem is answered 500 after moto wrote it; the SDK retries and meets
    the record's own claim. The record must reset diego once, not wait out the lease (RETRY
    in-progress) and then end REJECTED reset-unconfirmed with no code ever sent."""
    _claim_answer_lost(
        faultproxy.server_error_after_forwarding(), start_direct, dynamodb_faults, users, stack,
        "holes-claim-500", "7e2e0001-0000-4000-8000-000000000500",
    )


def test_hole1_a_claim_whose_connection_was_cut_after_the_write_resets_the_user_once(
    start_direct, dynamodb_faults, users, stack
):
    """Hole 1: the same with the connection cut after moto wrote the claim (no answer at all)."""
    _claim_answer_lost(
        faultproxy.cut_after_forwarding(), start_direct, dynamodb_faults, users, stack,
        "holes-claim-cut", "7e2e0001-0000-4000-8000-0000000000c7",
    )


def test_hole1_a_release_that_did_not_land_after_a_throttled_reset_resets_on_redelivery(
    start_direct, cognito_faults, dynamodb_faults, users, stack
):
    """Hole 1 (release): Cognito throttles the reset, and the claim's release (DeleteItem) fails
    on every attempt, so the claim stays behind. The record is RETRY throttled; its redelivery,
    after the lease, must reset diego (once), not end REJECTED reset-unconfirmed with 0 resets."""
    # Given Cognito throttling the first reset, and the guard table failing every release of
    # diego's claim during that first delivery
    function = start_direct("holes-release", RESET_COOLDOWN_SECONDS=str(LONG_COOLDOWN_S))
    throttle = cognito_faults.add_rule(RESET_OP, faultproxy.throttled(), times=1)
    # (the release is a DeleteItem)
    release = dynamodb_faults.add_rule("DeleteItem", faultproxy.server_error(), body_contains=USER_ITEM)
    message_id = "7e2e0001-0000-4000-8000-0000000000de"
    mark = log_mark(function)

    # When the queue delivers the request, and again after each RETRY (the guard healed by then)
    deliveries, audited = deliver_until_acknowledged(
        function, DIEGO, message_id, mark, before_redelivery=dynamodb_faults.clear_rules
    )

    # Then both faults took place, the first delivery was RETRY throttled, and diego was reset
    # exactly once in the end
    assert throttle.used == 1, "the reset was never throttled (the test's precondition)"
    assert release.used >= 1, (
        "the release was never attempted (the test's precondition)"
    )
    assert audited and audited[0] == ("RETRY", "throttled"), audited
    resets = stack.resets_of(DIEGO)
    assert (audited[-1][0], resets) == ("RESET", 1), (
        f"after {deliveries} deliveries: audited {audited}, {resets} resets sent to Cognito "
        f"(expected a redelivery to reset diego exactly once)"
    )


# ---- 2. a retried sign-out holds the user for the cooldown, not for the idempotency TTL ---------


def _then_the_user_is_held_for_the_cooldown_only(function, username: str, stack, resets_before: int):
    """A new request (new key) for `username` is RESET, or 409 with Retry-After at most the
    cooldown + 1 s, after which the same request resets the user."""
    answer = function.invoke(http_request_for(username, key="holes-after-sign-out-1"), now_ms() + 30_000)
    if answer["statusCode"] == 409:
        wait = retry_after(answer)
        assert wait <= SHORT_COOLDOWN_S + 1, (
            f"after the sign-out's redelivery {username} is held {wait} s "
            f"(cooldown {SHORT_COOLDOWN_S} s): {http_body(answer)}"
        )
        time.sleep(wait)
        answer = function.invoke(http_request_for(username, key="holes-after-sign-out-1"), now_ms() + 30_000)
    body = http_body(answer)
    assert (answer["statusCode"], body.get("outcome")) == (200, "RESET"), body
    assert stack.resets_of(username) == resets_before + 1


def test_hole2_a_retried_sign_out_holds_the_user_for_the_cooldown_only(
    start_direct, cognito_faults, dynamodb_faults, users, stack, tmp_path
):
    """Hole 2: the sign-out after a queued reset is throttled once; the record is retried for its
    sign-out, and the redelivery signs erin out. A new request for erin afterwards is held for the
    cooldown (3 s) at most, not for IDEMPOTENCY_TTL_SECONDS (a day)."""
    # Given the queue's rule signing users out, and Cognito throttling the first sign-out
    function = start_direct(
        "holes-sign-out", RESET_COOLDOWN_SECONDS=str(SHORT_COOLDOWN_S), POLICY_FILE=sign_out_policy(tmp_path)
    )
    fault = cognito_faults.add_rule(SIGN_OUT_OP, faultproxy.throttled(), times=1)
    message_id = "7e2e0002-0000-4000-8000-000000000501"
    mark = log_mark(function)

    # When the queue delivers the request, and again after its RETRY
    deliveries, audited = deliver_until_acknowledged(function, ERIN, message_id, mark)

    # Then (the precondition) erin was reset once, the first sign-out failed and the second worked
    assert fault.used == 1, "the sign-out was never throttled (the test's precondition)"
    assert deliveries == 2 and cognito_faults.count(SIGN_OUT_OP) == 2, (deliveries, audited)
    assert stack.resets_of(ERIN) == 1
    # and erin is held for the cooldown, no longer
    _then_the_user_is_held_for_the_cooldown_only(function, ERIN, stack, resets_before=1)


def test_hole2_a_reset_answered_too_late_for_the_sign_out_holds_the_user_for_the_cooldown_only(
    start_direct, cognito_faults, dynamodb_faults, users, stack, tmp_path
):
    """Hole 2 (deadline): the queued reset is answered inside the deadline margin, too late for
    the sign-out to start; the redelivery signs erin out. Afterwards erin is held for the cooldown
    at most, not for IDEMPOTENCY_TTL_SECONDS."""
    margin_ms = 3000
    # Given the queue's rule signing users out, and the reset answered inside the margin window
    function = start_direct(
        "holes-late-reset",
        RESET_COOLDOWN_SECONDS=str(SHORT_COOLDOWN_S),
        POLICY_FILE=sign_out_policy(tmp_path),
        DEADLINE_MARGIN_MS=str(margin_ms),
    )
    message_id = "7e2e0002-0000-4000-8000-000000000502"
    mark = log_mark(function)
    deadline = now_ms() + margin_ms + 2000
    cognito_faults.add_rule(RESET_OP, faultproxy.answered_at(deadline - 3 * margin_ms // 4), times=1)

    # When the queue delivers the request, and again after its RETRY
    first = function.invoke(sqs_delivery(ERIN, message_id, 1), deadline)
    (reset,) = cognito_faults.seen(RESET_OP)
    assert reset.arrived_ms < deadline - margin_ms <= reset.answered_ms, (
        "the reset was not sent before the margin and answered inside it (machine too slow?)"
    )
    assert cognito_faults.count(SIGN_OUT_OP) == 0, "the sign-out started inside the margin"
    assert message_id in retried(first), f"the record was not retried for its sign-out: {first}"
    wait_past(deadline)
    second = function.invoke(sqs_delivery(ERIN, message_id, 2), now_ms() + INVOCATION_MS)

    # Then (the precondition) erin was reset once and signed out by the redelivery
    assert retried(second) == set(), second
    assert cognito_faults.count(SIGN_OUT_OP) == 1
    assert stack.resets_of(ERIN) == 1
    # and erin is held for the cooldown, no longer
    _then_the_user_is_held_for_the_cooldown_only(function, ERIN, stack, resets_before=1)


# ---- 3. a key's finish that did not land ---------------------------------------------------------


def test_hole3_a_key_whose_finish_did_not_land_is_replayed_never_reset_again(
    start_direct, dynamodb_faults, users, stack
):
    """Hole 3: diego is reset under Idempotency-Key K, but the write that records K's answer fails
    on every attempt. The guard writes the key's answer before the user item's completion and
    leaves the claim in place when the key's write failed, so the same request with K, after the
    first invocation's deadline (the key's lease), meets its own unfinished claim: the user's
    status (RESET_REQUIRED) proves the reset happened, and it is answered RESET with no second
    call (not flagged as a replay: nothing records whether the first answer reached anyone, and
    an SQS redelivery after a crash settles the same way as its first final answer). That
    answer is then kept under K: after the cooldown K is the replay, and diego was reset once."""
    cooldown_s = 8  # longer than the key's lease: a retry meets the user item still in its cooldown
    function = start_direct("holes-key-finish", RESET_COOLDOWN_SECONDS=str(cooldown_s))
    key = "holes-key-finish-1"
    # Given the guard table failing every write of the key's item after it was taken (its finish)
    finish = dynamodb_faults.add_rule("UpdateItem", faultproxy.server_error(), body_contains=KEY_ITEM)

    deadline = now_ms() + INVOCATION_MS
    first = function.invoke(http_request_for(DIEGO, key=key), deadline)
    first_at = time.monotonic()
    body = http_body(first)
    assert (first["statusCode"], body.get("outcome")) == (200, "RESET"), body
    # The precondition: the key's answer was written on its own and that write failed on every
    # attempt.
    assert finish.used == GUARD_ATTEMPTS, (
        f"the key's finish was faulted {finish.used} times, expected {GUARD_ATTEMPTS} (precondition)"
    )
    dynamodb_faults.clear_rules()

    # When the caller retries with K once the key's lease is over
    wait_past(deadline)
    again = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)

    # Then it is RESET, for the same user, with no second reset
    settled = http_body(again)
    assert again["statusCode"] == 200, f"the same key after its lease: {again['statusCode']} {settled}"
    same = ("outcome", "username", "userPoolId", "action")
    assert {k: settled.get(k) for k in same} == {k: body.get(k) for k in same}, (settled, body)
    assert stack.resets_of(DIEGO) == 1

    # And after the cooldown, K is the replay of that answer and diego was reset once
    time.sleep(max(0.0, first_at + cooldown_s + 1 - time.monotonic()))
    late = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)
    assert (late["statusCode"], driver.header(late, "Idempotent-Replayed")) == (200, "true"), http_body(late)
    assert http_body(late) == {**settled, "replayed": True}
    assert stack.resets_of(DIEGO) == 1


def test_hole3_a_key_whose_end_did_not_land_is_not_reset_again_after_its_window(
    start_direct, dynamodb_faults, users, stack
):
    """The same as above, but the retry comes after the cooldown, when the user item that held
    the first reset is gone: the key, whose holder died without its end, is taken over and
    judged by when it was first taken. Its window is over and nothing says what the first run
    did, so the reset is not sent: 502 `reset-unconfirmed`, kept under K (the next retry is its
    replay), and diego was reset once. (Before: the key was taken as new and diego reset twice.)"""
    function = start_direct("holes-key-abandoned", RESET_COOLDOWN_SECONDS=str(SHORT_COOLDOWN_S))
    key = "holes-key-abandoned-1"
    # Given the guard table failing every write of the key's item after it was taken (its end)
    finish = dynamodb_faults.add_rule("UpdateItem", faultproxy.server_error(), body_contains=KEY_ITEM)
    deadline = now_ms() + INVOCATION_MS
    first = function.invoke(http_request_for(DIEGO, key=key), deadline)
    assert (first["statusCode"], http_body(first).get("outcome")) == (200, "RESET"), http_body(first)
    assert finish.used == GUARD_ATTEMPTS, (
        f"the key's end was faulted {finish.used} times, expected {GUARD_ATTEMPTS} (precondition)"
    )
    dynamodb_faults.clear_rules()

    # When the caller retries with K once the user item is gone: the claim left in place lives
    # for the longer of the cooldown (3 s) and its lease (the first invocation's deadline), in
    # whole seconds rounded up
    wait_past(deadline + 1_500)
    again = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)

    # Then it is refused as a reset that may have been sent, never sent again
    refused = http_body(again)
    assert (again["statusCode"], refused.get("error")) == (502, "reset-unconfirmed"), refused
    assert stack.resets_of(DIEGO) == 1
    # and that answer is kept under K
    late = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)
    assert (late["statusCode"], driver.header(late, "Idempotent-Replayed")) == (502, "true"), http_body(late)
    assert stack.resets_of(DIEGO) == 1
    # while a request with another key (someone asking again) resets diego: the cooldown is over
    other = function.invoke(http_request_for(DIEGO, key=key + "-new"), now_ms() + INVOCATION_MS)
    assert (other["statusCode"], http_body(other).get("outcome")) == (200, "RESET"), http_body(other)
    assert stack.resets_of(DIEGO) == 2


# ---- 5. one outcome event per final outcome ------------------------------------------------------


def test_hole5_a_sign_out_redelivery_gives_one_reset_event_and_one_reset_count(
    start_direct, cognito_faults, dynamodb_faults, users, stack, tmp_path
):
    """Hole 5: a queued reset whose sign-out is retried on the redelivery (throttled once) is one
    final outcome: one RESET outcome event on the bus that is not marked replayed, and
    `Records.RESET` counted once over both invocations."""
    function = start_direct(
        "holes-events", RESET_COOLDOWN_SECONDS=str(SHORT_COOLDOWN_S), POLICY_FILE=sign_out_policy(tmp_path)
    )
    stack.take_events()  # nothing left over from before
    fault = cognito_faults.add_rule(SIGN_OUT_OP, faultproxy.throttled(), times=1)
    message_id = "7e2e0005-0000-4000-8000-000000000501"
    mark = log_mark(function)

    # When the queue delivers the request, and again after its RETRY
    deliveries, audited = deliver_until_acknowledged(function, ERIN, message_id, mark)

    # Then (the precondition) the first sign-out failed and the redelivery signed erin out
    assert fault.used == 1 and deliveries == 2, (fault.used, deliveries, audited)
    assert stack.resets_of(ERIN) == 1
    # and the bus got one RESET event not marked replayed, the metrics one RESET
    events = [e["detail"] for e in stack.take_events(count=2, timeout=3.0)]
    fresh_resets = [d for d in events if d.get("outcome") == "RESET" and d.get("replayed") is not True]
    assert len(fresh_resets) == 1, f"RESET events not marked replayed for one reset: {events}"
    assert reset_metric_total(function, mark, invocations=deliveries) == 1
