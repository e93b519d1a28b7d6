"""End to end: an ambiguous reset is resolved by the user's status, not guessed (issue 25, part 4).

A reset whose answer is ambiguous (a 5xx, a timeout) may have mailed a code. When the user was
`CONFIRMED` before it, the status tells once the call can no longer be in flight: Cognito turns a
reset user `RESET_REQUIRED`. Over SQS the record is handed back (RETRY `reset-unresolved`) and its
redelivery, after the first invocation's deadline, reads the user: `RESET_REQUIRED` → RESET with
no second call; still `CONFIRMED` → the reset never happened and is sent (the user has no code).
Over HTTP the answer is 502 `reset-unconfirmed`, kept under the key undecided while the user item
holds that reset: the same key's retry inside the window decides the same way, and one after the
window is told that 502 again (replayed), never reset a second time.

The real binary behind the Runtime API (faultproxy.DirectFunction) with real deadlines; moto
counts the resets it received; the fault proxy in front of Cognito makes the answer ambiguous
after forwarding (the reset happened) or without forwarding (it never reached Cognito).
"""

from __future__ import annotations

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
from test_holes import (
    DIEGO,
    INVOCATION_MS,
    LONG_COOLDOWN_S,
    RESET_OP,
    SHORT_COOLDOWN_S,
    deliver_until_acknowledged,
    http_body,
    http_request_for,
    log_mark,
    wait_past,
)


def lost_before_cognito() -> faultproxy.Rule:
    """500 InternalErrorException without forwarding: ambiguous to the function, but the reset
    never reached Cognito."""
    return faultproxy.Rule(forward=False, status=500, error=("InternalErrorException", "boom"))


def told_reset_unconfirmed(function, key: str) -> tuple[dict, int]:
    """The portal asks for diego's reset under `key` and is told 502 reset-unconfirmed: the
    answer, and the deadline of the invocation that gave it."""
    deadline = now_ms() + INVOCATION_MS
    first = function.invoke(http_request_for(DIEGO, key=key), deadline)
    assert (first["statusCode"], http_body(first).get("error")) == (502, "reset-unconfirmed"), first
    return first, deadline


def test_an_sqs_reset_whose_answer_was_lost_after_it_happened_is_reset_once(
    start_direct, cognito_faults, users, stack
):
    # Given Cognito performing diego's reset and answering 500 (once)
    function = start_direct("resolved-happened", RESET_COOLDOWN_SECONDS=str(LONG_COOLDOWN_S))
    fault = cognito_faults.add_rule(RESET_OP, faultproxy.internal_error_after_forwarding(), times=1)
    message_id = "7e2e0025-0000-4000-8000-000000000401"
    mark = log_mark(function)

    # When the queue delivers the request, and again after its RETRY
    deliveries, audited = deliver_until_acknowledged(function, DIEGO, message_id, mark)

    # Then the first delivery was handed back to be resolved, the redelivery found diego
    # RESET_REQUIRED and answered RESET with no second call: one reset in all
    assert fault.used == 1, "the reset was never faulted (the test's precondition)"
    assert audited[0] == ("RETRY", "reset-unresolved"), audited
    assert (deliveries, audited[-1][0]) == (2, "RESET"), audited
    assert stack.resets_of(DIEGO) == 1
    assert users()[DIEGO].status == "RESET_REQUIRED"


def test_an_sqs_reset_lost_before_cognito_is_sent_by_its_redelivery(
    start_direct, cognito_faults, users, stack
):
    # Given the first reset answered 500 without reaching Cognito
    function = start_direct("resolved-never", RESET_COOLDOWN_SECONDS=str(LONG_COOLDOWN_S))
    fault = cognito_faults.add_rule(RESET_OP, lost_before_cognito(), times=1)
    message_id = "7e2e0025-0000-4000-8000-000000000402"
    mark = log_mark(function)

    # When the queue delivers the request, and again after its RETRY
    deliveries, audited = deliver_until_acknowledged(function, DIEGO, message_id, mark)

    # Then the redelivery found diego still CONFIRMED (no code was ever sent) and reset him:
    # exactly one reset reached Cognito
    assert fault.used == 1, "the reset was never faulted (the test's precondition)"
    assert audited[0] == ("RETRY", "reset-unresolved"), audited
    assert (deliveries, audited[-1][0]) == (2, "RESET"), audited
    assert stack.resets_of(DIEGO) == 1
    assert users()[DIEGO].status == "RESET_REQUIRED"


def test_an_http_reset_whose_answer_was_lost_is_settled_by_the_same_keys_retry(
    start_direct, cognito_faults, users, stack
):
    # Given Cognito performing diego's reset and answering 500 (once)
    function = start_direct("resolved-http", RESET_COOLDOWN_SECONDS=str(LONG_COOLDOWN_S))
    fault = cognito_faults.add_rule(RESET_OP, faultproxy.internal_error_after_forwarding(), times=1)
    key = "resolved-http-1"

    # When the portal asks, is told 502 reset-unconfirmed, and retries with the same key after
    # the first invocation's deadline
    _, deadline = told_reset_unconfirmed(function, key)
    wait_past(deadline)
    again = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)

    # Then the retry is RESET (diego's status proved the first reset), with no second call
    assert fault.used == 1
    assert (again["statusCode"], http_body(again).get("outcome")) == (200, "RESET"), http_body(again)
    assert stack.resets_of(DIEGO) == 1
    # and another request, under another key, is inside the cooldown of that reset
    other = function.invoke(http_request_for(DIEGO, key="resolved-http-2"), now_ms() + INVOCATION_MS)
    assert (other["statusCode"], http_body(other).get("error")) == (409, "recently-reset")
    assert driver.header(other, "Retry-After") is not None


def test_an_http_reset_whose_answer_was_lost_is_not_sent_again_by_a_retry_after_the_cooldown(
    start_direct, cognito_faults, users, stack
):
    # Given Cognito performing diego's reset and answering 500 (once), and a short cooldown
    function = start_direct("resolved-late", RESET_COOLDOWN_SECONDS=str(SHORT_COOLDOWN_S))
    fault = cognito_faults.add_rule(RESET_OP, faultproxy.internal_error_after_forwarding(), times=1)
    key = "resolved-late-1"

    # When the portal is told 502 reset-unconfirmed and retries with the same key only after
    # the cooldown (and the first invocation's deadline) is over
    first, deadline = told_reset_unconfirmed(function, key)
    wait_past(max(deadline, now_ms() + SHORT_COOLDOWN_S * 1000))
    late = function.invoke(http_request_for(DIEGO, key=key), now_ms() + INVOCATION_MS)

    # Then the retry is told the same 502, replayed: the reset that may have mailed a code is
    # never sent again under its key (before this, the key was released and the late retry
    # reset diego a second time)
    assert fault.used == 1, "the reset was never faulted (the test's precondition)"
    assert (late["statusCode"], driver.header(late, "Idempotent-Replayed")) == (502, "true"), late
    assert http_body(late) == {**http_body(first), "replayed": True}
    assert stack.resets_of(DIEGO) == 1
    assert users()[DIEGO].status == "RESET_REQUIRED"
