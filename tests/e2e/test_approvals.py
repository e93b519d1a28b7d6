"""End to end (issue 27, parts 2 and 3): a second person's approval for privileged targets, and a
request's status, through the real binary against moto's Cognito, DynamoDB and EventBridge.

The function reads the demo policy with one rule in front: the helpdesk portal's resets of tina
need the approval of a helpdesk lead (or of another portal role's caller: sessions of one role are
one requester, so the portal can never approve its own requests). What reached "Cognito" is read
from moto's request recorder, the events from the results queue.
"""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
TINA = "tina@example.com"
ALICE = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice"
BOB = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/bob"
LEAD_1 = "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/lena"
LEAD_2 = "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/lars"
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


def approval_policy(ttl: int) -> dict:
    policy = json.loads(driver.DEMO_POLICY.read_text())
    policy["rules"].insert(0, {
        "name": "vip-approval",
        "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*",
                    "arn:aws:sqs:us-west-2:123456789012:password-resets"],
        "userPools": [driver.DEMO_POOL],
        "users": [TINA],
        "signOut": "allowed",
        "approval": {
            "approvers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-lead/*",
                          "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
            "ttlSeconds": ttl,
        },
    })
    return policy


def _start(stack, tmp_path_factory, label: str, ttl: int, concurrency: int = 1):
    path = tmp_path_factory.mktemp(label) / "policy.json"
    path.write_text(json.dumps(approval_policy(ttl)))
    try:
        return stack.start_function(label=label, concurrency=concurrency, POLICY_FILE=str(path))
    except driver.StackError as e:
        pytest.fail(f"{label} did not start: {e}", pytrace=False)


@pytest.fixture(scope="session")
def approving_function(stack, tmp_path_factory):
    return _start(stack, tmp_path_factory, "function-approvals", ttl=300, concurrency=4)


@pytest.fixture(scope="session")
def hasty_function(stack, tmp_path_factory):
    """Approvals that expire after 2 seconds."""
    return _start(stack, tmp_path_factory, "function-approvals-short", ttl=2)


def http_event(method: str, path: str, body, caller: str) -> dict:
    event = copy.deepcopy(json.loads((driver.ROOT / HTTP_EVENT).read_text()))
    event["rawPath"] = path
    event["routeKey"] = f"{method} {path}"
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["body"] = None if body is None else json.dumps(body)
    event["requestContext"]["authorizer"]["iam"]["userArn"] = caller
    return event


def answer(function, event) -> tuple[int, dict]:
    response = function.invoke(event)
    assert "statusCode" in response, f"expected an HTTP response, got {response}"
    return response["statusCode"], json.loads(response["body"])


def ask(function, caller: str = ALICE, **extra) -> tuple[int, dict]:
    body = {"UserPoolId": driver.DEMO_POOL, "Username": TINA,
            "ClientMetadata": {"lang": "fr", "secret-hint": "do-not-log-me"}, **extra}
    return answer(function, http_event("POST", "/reset", body, caller))


def decide(function, approval_id: str, caller: str, decision: str = "approve", **extra):
    return answer(function, http_event("POST", f"/approvals/{approval_id}",
                                       {"Decision": decision, **extra}, caller))


def status(function, request_id: str, caller: str):
    return answer(function, http_event("GET", f"/requests/{request_id}", None, caller))


def resets(stack) -> list[dict]:
    return driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")


def test_a_privileged_target_waits_for_approval_and_nothing_is_performed(approving_function, users, stack):
    # When the portal asks to reset tina, whose rule needs a second person
    code, body = ask(approving_function)
    # then 202 PENDING with the approval's id and expiry, and nothing reached Cognito's reset
    assert (code, body["outcome"]) == (202, "PENDING"), body
    assert len(body["approvalId"]) == 32 and body["expiresAt"].endswith("Z"), body
    assert resets(stack) == []
    assert users()[TINA].status == "CONFIRMED"
    # and a PENDING_APPROVAL event names the requester, the rule and the expiry (no metadata)
    [event] = stack.take_events(1)
    detail = event["detail"]
    assert (detail["outcome"], detail["rule"], detail["caller"]) == ("PENDING_APPROVAL", "vip-approval", ALICE)
    assert detail["approvalId"] == body["approvalId"] and detail["expiresAt"] == body["expiresAt"]
    logs = json.dumps(approving_function.log_since_invoke())
    assert "do-not-log-me" not in logs and "do-not-log-me" not in json.dumps(detail)


def test_the_requester_and_non_approvers_cannot_decide(approving_function, users, stack):
    _, pending = ask(approving_function)
    approval_id = pending["approvalId"]
    # The requester, and another session of its role, are refused as self-approval
    for caller in (ALICE, BOB):
        code, body = decide(approving_function, approval_id, caller)
        assert (code, body["error"]) == (403, "self-approval"), body
    # A caller who approves nothing gets not-an-approver, the same for an unknown id
    seen = set()
    for approval in (approval_id, UNKNOWN_ID):
        code, body = decide(approving_function, approval, driver.TICKET_BOT)
        body.pop("requestId")
        seen.add((code, json.dumps(body, sort_keys=True)))
    assert len(seen) == 1 and json.loads(next(iter(seen))[1])["error"] == "not-an-approver", seen
    # An approver asking about an unknown id learns only that
    code, body = decide(approving_function, UNKNOWN_ID, LEAD_1)
    assert (code, body["error"]) == (404, "approval-not-found"), body
    assert resets(stack) == []


def test_an_approval_performs_the_request_as_made_once(approving_function, users, stack):
    code, pending = ask(approving_function, SignOut=True)
    assert code == 202, pending
    stack.take_events(1)
    # When a lead approves
    code, body = decide(approving_function, pending["approvalId"], LEAD_1, Reason="checked by phone")
    # then the reset runs as asked: tina, her ClientMetadata, her sign-out
    assert (code, body["outcome"], body.get("signedOut")) == (200, "RESET", True), body
    assert users()[TINA].status == "RESET_REQUIRED"
    assert [c.get("ClientMetadata") for c in resets(stack)] == [{"lang": "fr", "secret-hint": "do-not-log-me"}]
    # and the audit line and the event name the requester, the approver and both times
    [event] = stack.take_events(1)
    detail = event["detail"]
    assert (detail["outcome"], detail["caller"], detail["approver"]) == ("RESET", ALICE, LEAD_1), detail
    assert detail["requestedAt"] and detail["decidedAt"]
    # A second decision gets the first one's answer again, and resets nothing
    code, again = decide(approving_function, pending["approvalId"], LEAD_2, "deny")
    assert (code, again["outcome"], again.get("replayed")) == (200, "RESET", True), again
    assert len(resets(stack)) == 1


def test_a_denial_is_final_and_replayed(approving_function, users, stack):
    _, pending = ask(approving_function)
    stack.take_events(1)
    code, body = decide(approving_function, pending["approvalId"], LEAD_1, "deny", Reason="not verified")
    assert (code, body["error"]) == (403, "approval-denied"), body
    [event] = stack.take_events(1)
    assert (event["detail"]["outcome"], event["detail"]["code"], event["detail"]["approver"]) == (
        "REJECTED", "approval-denied", LEAD_1)
    code, again = decide(approving_function, pending["approvalId"], LEAD_2)
    assert (code, again["error"], again.get("replayed")) == (403, "approval-denied", True), again
    assert resets(stack) == []


def test_a_requests_status_is_told_only_to_its_requester_and_while_pending_its_approvers(
        approving_function, users, stack):
    _, pending = ask(approving_function)
    request_id, approval_id = pending["requestId"], pending["approvalId"]
    # The requester sees PENDING by its request id and by the approval id; a lead by the approval id
    for caller, lookup in ((ALICE, request_id), (ALICE, approval_id), (LEAD_1, approval_id)):
        code, body = status(approving_function, lookup, caller)
        assert (code, body["outcome"], body["approvalId"]) == (200, "PENDING", approval_id), (caller, body)
    # Anyone else gets the same 404 as an unknown id
    seen = set()
    for caller, lookup in ((driver.TICKET_BOT, request_id), (driver.TICKET_BOT, approval_id),
                           (ALICE, UNKNOWN_ID), (LEAD_1, request_id)):
        code, body = status(approving_function, lookup, caller)
        body.pop("requestId")
        seen.add((code, json.dumps(body, sort_keys=True)))
    assert len(seen) == 1 and next(iter(seen))[0] == 404, seen
    # Once approved, the requester reads the reset's own answer
    decide(approving_function, approval_id, LEAD_1)
    code, body = status(approving_function, request_id, ALICE)
    assert (code, body["outcome"], body["status"]) == (200, "RESET", 200), body
    # and an ordinary request's final answer is kept too
    code, refused = answer(approving_function, http_event(
        "POST", "/reset", {"UserPoolId": driver.DEMO_POOL, "Username": "frank@example.com"}, ALICE))
    code, body = status(approving_function, refused["requestId"], ALICE)
    assert (code, body["error"], body["status"]) == (200, refused["error"], 403), body


def test_an_approval_after_its_time_is_gone(hasty_function, users, stack):
    _, pending = ask(hasty_function)
    expires = time.time() + 2.5
    while time.time() < expires:
        time.sleep(0.2)
    code, body = decide(hasty_function, pending["approvalId"], LEAD_1)
    assert (code, body["error"]) == (410, "approval-expired"), body
    code, body = status(hasty_function, pending["requestId"], ALICE)
    assert (code, body["error"], body["status"]) == (200, "approval-expired", 410), body
    assert resets(stack) == []


def test_an_approval_racing_its_own_expiry_either_resets_or_expires(hasty_function, users, stack):
    # Decided right at the boundary: one answer or the other, never both, never twice.
    _, pending = ask(hasty_function)
    deadline = time.time() + 1.9
    while time.time() < deadline:
        time.sleep(0.05)
    code, body = decide(hasty_function, pending["approvalId"], LEAD_1)
    assert (code, body.get("outcome"), body.get("error")) in (
        (200, "RESET", None), (410, None, "approval-expired")), body
    assert len(resets(stack)) == (1 if code == 200 else 0)
    # After the boundary, the decision that won (or the expiry) stands for every later decision.
    time.sleep(max(0.0, deadline + 0.6 - time.time()))
    later, again = decide(hasty_function, pending["approvalId"], LEAD_2)
    if code == 200:
        assert (later, again.get("outcome"), again.get("replayed")) == (200, "RESET", True), again
    else:
        assert (later, again["error"]) == (410, "approval-expired"), again
    assert len(resets(stack)) == (1 if code == 200 else 0)


def test_two_approvers_deciding_at_once_make_one_decision_and_at_most_one_reset(approving_function, users, stack):
    _, pending = ask(approving_function)
    answers = {}

    def run(caller, decision):
        answers[caller] = decide(approving_function, pending["approvalId"], caller, decision)

    threads = [threading.Thread(target=run, args=(LEAD_1, "approve")),
               threading.Thread(target=run, args=(LEAD_2, "deny"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    outcomes = {caller: (code, body.get("outcome"), body.get("error")) for caller, (code, body) in answers.items()}
    assert len(outcomes) == 2, outcomes
    performed = len(resets(stack))
    assert performed <= 1
    if performed:
        # Approved: both are told the reset (one fresh, the other replayed, or RETRY in-progress
        # while the winner's reset runs).
        assert all(o[1] == "RESET" or o[2] == "in-progress" for o in outcomes.values()), outcomes
        assert any(o[1] == "RESET" for o in outcomes.values()), outcomes
    else:
        assert all(o[2] == "approval-denied" for o in outcomes.values()), outcomes


def test_over_sqs_a_request_waiting_for_approval_is_acknowledged(approving_function, users, stack):
    sample = json.loads((driver.ROOT / "events/sqs-standard.json").read_text())
    record = {**sample["Records"][0], "messageId": "m-approval",
              "body": json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": TINA})}
    answer = approving_function.invoke({"Records": [record]})
    # Acknowledged: nothing handed back, nothing reset, one PENDING_APPROVAL event
    assert answer.get("batchItemFailures") == [], answer
    assert resets(stack) == []
    [event] = stack.take_events(1)
    assert (event["detail"]["outcome"], event["detail"]["id"]) == ("PENDING_APPROVAL", "m-approval"), event
    # and a lead's approval performs it
    code, body = decide(approving_function, event["detail"]["approvalId"], LEAD_1)
    assert (code, body["outcome"]) == (200, "RESET"), body
    assert len(resets(stack)) == 1


def test_a_queued_requests_answer_is_told_to_the_role_that_sent_it(approving_function, users, stack):
    """GET /requests/{messageId} over HTTP: any session of the role that sent the SQS message (its
    SenderId; over HTTP, API Gateway's callerId) reads the answer; another role, or a caller that
    has no IAM principal id, gets the same 404 as an unknown id."""
    sample = json.loads((driver.ROOT / "events/sqs-standard.json").read_text())
    message_id = "m-status-by-sender"
    record = {**sample["Records"][0], "messageId": message_id,
              "attributes": {**sample["Records"][0]["attributes"], "SenderId": "AROAEXAMPLESENDER:ticket-42"},
              "body": json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": "frank@example.com"})}
    assert approving_function.invoke({"Records": [record]}).get("batchItemFailures") == []
    assert len(resets(stack)) == 1

    def lookup(request_id: str, caller_id: str | None):
        event = http_event("GET", f"/requests/{request_id}", None, BOB)
        iam = event["requestContext"]["authorizer"]["iam"]
        iam["callerId"] = caller_id
        iam["userId"] = caller_id
        return answer(approving_function, event)

    # Another session of the sending role reads the RESET
    code, body = lookup(message_id, "AROAEXAMPLESENDER:bob")
    assert (code, body["outcome"], body["status"]) == (200, "RESET", 200), body
    # Anyone else: the same 404 as an unknown id
    seen = set()
    for request_id, caller_id in ((message_id, "AROAOTHERROLE:ticket-42"), (message_id, None),
                                  (UNKNOWN_ID, "AROAEXAMPLESENDER:bob")):
        code, body = lookup(request_id, caller_id)
        body.pop("requestId")
        seen.add((code, json.dumps(body, sort_keys=True)))
    assert len(seen) == 1 and next(iter(seen))[0] == 404, seen


def test_a_batch_items_status_is_read_by_its_percent_encoded_id(approving_function, users, stack):
    """Item i of a batch is `<requestId>#<i>`; a client sends `#` as %23 (else it starts a fragment)."""
    batch = [{"UserPoolId": driver.DEMO_POOL, "Username": "frank@example.com"},
             {"UserPoolId": driver.DEMO_POOL, "Username": TINA}]
    code, body = answer(approving_function, http_event("POST", "/reset", batch, ALICE))
    assert code == 207, body
    results = body["results"]
    [request_id] = {item["requestId"] for item in results}
    # no rule lets the portal reset frank; tina waits for an approval
    assert [item.get("error", item.get("outcome")) for item in results] == ["user-not-allowed", "PENDING"], results
    for index, item in enumerate(results):
        code, kept = status(approving_function, f"{request_id}%23{index}", ALICE)
        assert (code, kept["status"]) == (200, item["status"]), (index, kept)
        assert kept.get("error", kept.get("outcome")) == item.get("error", item.get("outcome")), (index, kept)

