"""End to end (issue 27, part 1): resets bound to a helpdesk ticket, through the real binary against
moto's Cognito, DynamoDB, EventBridge and SQS.

The demo policy's `helpdesk-tickets` rule requires a `Ticket` matching `INC[0-9]{7}`. A second
function reads the demo policy with the same requirement added to the queue's rule, for the SQS
path and `reset-enqueue`. What reached "Cognito" is read from moto's request recorder
(`driver.cognito_calls`), what the guard wrote from its table, the events from the results queue.
"""

from __future__ import annotations

import copy
import json

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
TINA = "tina@example.com"
GOOD = driver.DEMO_TICKET


def http_request(body, caller: str = driver.HELPDESK_TICKETS) -> dict:
    event = copy.deepcopy(json.loads((driver.ROOT / HTTP_EVENT).read_text()))
    event["body"] = json.dumps(body)
    event["requestContext"]["authorizer"]["iam"]["userArn"] = caller
    return event


def http_answer(answer: dict) -> tuple[int, dict]:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return answer["statusCode"], json.loads(answer["body"])


def audit_lines(function) -> list[dict]:
    return [e for e in function.log_since_invoke() if driver._find(e, "outcome")]


@pytest.fixture(scope="session")
def ticketed_function(stack, tmp_path_factory):
    """The function with the demo policy whose queue rule also requires an INC ticket."""
    policy = json.loads(driver.DEMO_POLICY.read_text())
    queue_rule = next(r for r in policy["rules"] if r["name"] == "ticket-queue")
    queue_rule["ticket"] = {"required": True, "pattern": "INC[0-9]{7}"}
    path = tmp_path_factory.mktemp("tickets") / "policy.json"
    path.write_text(json.dumps(policy))
    try:
        return stack.start_function(label="function-tickets", POLICY_FILE=str(path))
    except driver.StackError as e:
        pytest.fail(f"function-tickets did not start: {e}", pytrace=False)


@pytest.mark.parametrize(
    ("extra", "code"),
    [({}, "ticket-required"), ({"Ticket": "INC-42"}, "ticket-invalid"), ({"ticket": "inc0012345"}, "ticket-invalid")],
)
def test_a_missing_or_malformed_ticket_is_refused_before_any_write_or_cognito_call(function, users, stack, extra, code):
    # Given the helpdesk-tickets caller, whose rule requires an INC ticket
    event = http_request({"UserPoolId": driver.DEMO_POOL, "Username": TINA, **extra})
    event = driver.with_idempotency_key(event, f"tickets-{code}")
    # when it asks for tina without one, or with one of another form
    status, body = http_answer(function.invoke(event))
    # then 400 with the code, nothing asked of Cognito (not even the lookup), nothing written
    assert (status, body["error"]) == (400, code), body
    for operation in ("AdminGetUser", "AdminResetUserPassword"):
        assert driver.cognito_calls(stack.endpoint, operation) == [], operation
    assert stack.guard_items() == []
    assert users()[TINA].status == "CONFIRMED"
    assert [driver._find(e, "code") for e in audit_lines(function)] == [code]


def test_a_caller_no_rule_admits_gets_the_same_answer_for_every_target(function, users, stack):
    # frank is a contractor (the rule's exception), ghost does not exist, the third user exists in
    # no group: the helpdesk-tickets caller may reset none of them, and cannot tell them apart.
    [groupless] = driver.seed_mass_users(stack.endpoint, 1, prefix="nogroup")
    answers = {}
    for extra in ({}, {"Ticket": "INC-42"}, {"Ticket": GOOD}):
        for target in ("frank@example.com", "ghost@example.com", groupless):
            status, body = http_answer(function.invoke(
                http_request({"UserPoolId": driver.DEMO_POOL, "Username": target, **extra})))
            body.pop("requestId")
            answers.setdefault(json.dumps(extra), set()).add((status, json.dumps(body, sort_keys=True)))
    assert {k: len(v) for k, v in answers.items()} == {k: 1 for k in answers}, answers
    assert [json.loads(next(iter(v))[1])["error"] for v in answers.values()] == [
        "ticket-required", "ticket-invalid", "user-not-allowed"]
    assert driver.cognito_calls(stack.endpoint, "AdminResetUserPassword") == []


def test_a_valid_ticket_reaches_cognitos_client_metadata_the_audit_line_and_the_event(function, users, stack):
    # Given a request naming a ticket, whose own metadata carries another "ticket"
    status, body = http_answer(function.invoke(http_request({
        "UserPoolId": driver.DEMO_POOL, "Username": TINA, "Ticket": GOOD,
        "ClientMetadata": {"ticket": "forged-1", "lang": "fr"},
    })))
    # then tina is reset, and Cognito received the request's Ticket under "ticket"
    assert (status, body["outcome"]) == (200, "RESET"), body
    assert users()[TINA].status == "RESET_REQUIRED"
    calls = driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")
    assert [c.get("ClientMetadata") for c in calls] == [{"ticket": GOOD, "lang": "fr"}]
    # and the audit line and the outcome event name it
    assert [driver._find(e, "ticket") for e in audit_lines(function)] == [GOOD]
    events = stack.take_events(1)
    assert [(e["detail"]["outcome"], e["detail"].get("ticket")) for e in events] == [("RESET", GOOD)], events


def test_the_same_idempotency_key_with_another_ticket_is_refused(function, users, stack):
    first = driver.with_idempotency_key(
        http_request({"UserPoolId": driver.DEMO_POOL, "Username": TINA, "Ticket": GOOD}), "portal-tina-1")
    assert http_answer(function.invoke(first))[0] == 200
    other = driver.with_idempotency_key(
        http_request({"UserPoolId": driver.DEMO_POOL, "Username": TINA, "Ticket": "INC7654321"}), "portal-tina-1")
    status, body = http_answer(function.invoke(other))
    assert (status, body["error"]) == (422, "idempotency-key-reused"), body
    # and the kept answer names the ticket it was given for
    # (the idempotency key's item; the request-id items of GET /requests/{id} keep answers too)
    kept = [json.loads(i["answer"]) for i in stack.guard_items() if "answer" in i and i["pk"].startswith("key#")]
    assert [a.get("ticket") for a in kept] == [GOOD], kept
    assert len(driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")) == 1


def test_over_sqs_a_message_without_a_ticket_is_rejected_and_acknowledged(ticketed_function, users, stack):
    sample = json.loads((driver.ROOT / "events/sqs-standard.json").read_text())
    record = sample["Records"][0]
    without = {**record, "messageId": "m-no-ticket",
               "body": json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": "diego@example.com"})}
    with_ticket = {**record, "messageId": "m-ticket",
                   "body": json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": "erin@example.com",
                                       "ticket": GOOD})}
    answer = ticketed_function.invoke({"Records": [without, with_ticket]})
    # Both are final: nothing is handed back for redelivery.
    assert answer == {"batchItemFailures": []}, answer
    codes = {driver._find(e, "id"): driver._find(e, "code") for e in audit_lines(ticketed_function)}
    assert codes == {"m-no-ticket": "ticket-required", "m-ticket": ""}, codes
    calls = driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")
    assert [c.get("ClientMetadata") for c in calls] == [{"ticket": GOOD}]
    assert users()["diego@example.com"].status == "CONFIRMED"


def test_reset_enqueue_sends_the_ticket_column_and_flag_to_cognito_through_the_queue(
        ticketed_function, users, stack, tmp_path):
    # Given three users: one with a ticket of its own, one taking --ticket, one with a bad one
    emails = driver.seed_mass_users(stack.endpoint, 3, prefix="tkt")
    path = tmp_path / "users.csv"
    path.write_text(f"username,ticket\n{emails[0]},INC0000001\n{emails[1]},\n{emails[2]},CHG-1\n")
    url = driver.create_request_queue(stack.endpoint)
    drainer = driver.Drainer(stack.endpoint, ticketed_function, url)
    drainer.start()
    try:
        result = driver.run_enqueue(stack.endpoint, [
            "--queue-url", url, "--user-pool-id", driver.DEMO_POOL, "--ticket", "INC0000009",
            "--wait", "--results-queue", driver.results_queue_url(stack.endpoint), "--timeout", "120",
            "--report", str(tmp_path / "report.csv"), str(path),
        ])
    finally:
        drainer.stop()
    # Then the row's ticket wins, an empty cell takes the flag's, and a ticket the rule's pattern
    # refuses is REJECTED ticket-invalid (not reset)
    assert result.returncode == 1, result.stdout + result.stderr
    table = [line.split() for line in result.stdout.splitlines()]
    assert ["RESET", "2"] in table and ["REJECTED", "ticket-invalid", "1"] in table, result.stdout
    cognito = stack.cognito()
    canonical = {cognito.admin_get_user(UserPoolId=driver.DEMO_POOL, Username=e)["Username"]: e for e in emails}
    sent = {canonical[c["Username"]]: c.get("ClientMetadata")
            for c in driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")}
    assert sent == {emails[0]: {"ticket": "INC0000001"}, emails[1]: {"ticket": "INC0000009"}}, sent
