"""End to end (issue 25): what real Cognito does that moto does not model, through the real binaries.

1. Cognito's limits, told apart by `LimitExceededException`'s message (the real texts): the daily
   email limit is REJECTED `delivery-limit` (HTTP 503 + Retry-After; an SQS record acknowledged,
   with its outcome event and the `DeliveryLimit` metric), the per-user attempt limit REJECTED
   `attempt-limit` (429 + Retry-After; acknowledged), any other message still RETRY `throttled`.
   Each is sent once: none is retried inside the invocation.
2. A user of an external identity provider (`UserStatus` `EXTERNAL_PROVIDER`) is 409
   `external-user` with no reset call and nothing claimed in the guard's table.
3. The pool's Lambda-trigger failures on a reset: `UserLambdaValidationException` and
   `InvalidLambdaResponseException` prove nothing was sent (refusals; the user is not held),
   `UnexpectedLambdaException` does not (final `reset-unconfirmed`; the user is held).
4. reset-enqueue's preflight: DescribeUserPool on pools created with and without an SES email
   configuration; more than 50 users of a default-sender pool exit 2 naming the limit, the pool and
   SES, unless --allow-default-email. --wait counts delivery-limit apart, and --retry-from sends
   exactly the users a report says may pass.

moto models neither limit, nor federated users, nor triggers: the answers are injected by the
Cognito fault proxy (tests/e2e/faultproxy.py), which also counts the requests per operation.
"""

from __future__ import annotations

import csv
import json

import pytest

import faultproxy
import stack as driver
from conftest_edges import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    _cognito_proxy,
    cognito_faults,
    proxied_function,
)
from test_edges import audit_codes, http_body, request_for, retried, retry_after, sqs_record_for, status_and_error

DIEGO = "diego@example.com"
RESET_OP = "AdminResetUserPassword"
GET_USER_OP = "AdminGetUser"
SES_SOURCE = "arn:aws:ses:us-west-2:123456789012:identity/example.com"


def _event_for(stack, message_id: str) -> dict:
    """The outcome event (detail) of one record, from the results queue."""
    events = [e["detail"] for e in stack.take_events(count=1)]
    found = [d for d in events if d.get("id") == message_id]
    assert found, f"no outcome event for {message_id}: {events}"
    return found[0]


# ---- 1. Cognito's limits ----------------------------------------------------------------------------


def test_the_daily_email_limit_is_503_delivery_limit_sent_once_and_the_user_is_not_held(
    proxied_function, cognito_faults, users, stack
):
    cognito_faults.set_rule(RESET_OP, faultproxy.limit_exceeded(faultproxy.DAILY_EMAIL_LIMIT))

    answer = proxied_function.invoke(request_for(DIEGO, key="limits-email-1"))

    assert status_and_error(answer) == (503, "delivery-limit"), answer
    assert retry_after(answer) == 3600
    assert "SES" in http_body(answer)["message"]
    assert cognito_faults.count(RESET_OP) == 1, "a limit is never retried (3 attempts allowed)"
    assert stack.resets_of(DIEGO) == 0
    emf = proxied_function.wait_for_log(lambda es: any(isinstance(e.get("_aws"), dict) for e in es))
    assert [e["DeliveryLimit"] for e in emf if "DeliveryLimit" in e] == [1], emf

    # Once the pool can send, a new request resets the user: nothing held them.
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    again = proxied_function.invoke(request_for(DIEGO, key="limits-email-2"))
    assert (again["statusCode"], http_body(again).get("outcome")) == (200, "RESET"), again
    assert stack.resets_of(DIEGO) == 1


def test_a_delivery_limit_on_the_queue_is_acknowledged_with_its_outcome_event(
    proxied_function, cognito_faults, users, stack
):
    cognito_faults.set_rule(RESET_OP, faultproxy.limit_exceeded(faultproxy.DAILY_EMAIL_LIMIT))
    message_id = "6b0f3f8e-4d07-4ad4-9f0c-25a1e0c2d001"
    stack.take_events()

    answer = proxied_function.invoke(sqs_record_for(DIEGO, message_id))

    assert retried(answer) == set(), "acknowledged: a redelivery cannot pass today"
    assert audit_codes(proxied_function, message_id) == [("REJECTED", "delivery-limit")]
    event = _event_for(stack, message_id)
    assert (event["outcome"], event["code"]) == ("REJECTED", "delivery-limit"), event
    assert cognito_faults.count(RESET_OP) == 1


def test_the_attempt_limit_is_429_attempt_limit_and_acknowledged_on_the_queue(
    proxied_function, cognito_faults, users, stack
):
    cognito_faults.set_rule(RESET_OP, faultproxy.limit_exceeded(faultproxy.ATTEMPT_LIMIT))

    answer = proxied_function.invoke(request_for(DIEGO, key="limits-attempt-1"))

    assert status_and_error(answer) == (429, "attempt-limit"), answer
    assert retry_after(answer) == 900
    assert cognito_faults.count(RESET_OP) == 1
    # A repeat (another key) is answered from the guard's user item, without a call to Cognito
    again = proxied_function.invoke(request_for(DIEGO, key="limits-attempt-2"))
    assert status_and_error(again) == (429, "attempt-limit"), again
    assert 0 < retry_after(again) <= 900
    assert cognito_faults.count(RESET_OP) == 1, "the repeat called Cognito"

    message_id = "6b0f3f8e-4d07-4ad4-9f0c-25a1e0c2d002"
    queued = proxied_function.invoke(sqs_record_for("erin@example.com", message_id))
    assert retried(queued) == set(), queued
    assert audit_codes(proxied_function, message_id) == [("REJECTED", "attempt-limit")]


def test_a_limit_with_an_unknown_message_is_still_throttled_and_handed_back(
    proxied_function, cognito_faults, users, stack
):
    cognito_faults.set_rule(RESET_OP, faultproxy.limit_exceeded("Some limit Cognito adds tomorrow."))

    answer = proxied_function.invoke(request_for(DIEGO, key="limits-unknown-1"))
    assert status_and_error(answer) == (429, "throttled"), answer
    assert cognito_faults.count(RESET_OP) == 1, "LimitExceededException is never retried in the call"

    message_id = "6b0f3f8e-4d07-4ad4-9f0c-25a1e0c2d003"
    queued = proxied_function.invoke(sqs_record_for("erin@example.com", message_id))
    assert retried(queued) == {message_id}, "RETRY: handed back to the queue"
    assert audit_codes(proxied_function, message_id) == [("RETRY", "throttled")]


# ---- 2. users no code can reach -----------------------------------------------------------------------


def test_a_user_of_an_external_provider_is_refused_without_a_reset_call_or_a_claim(
    proxied_function, cognito_faults, users, stack
):
    # Given Cognito saying the user signs in through an external identity provider
    cognito_faults.set_rule(GET_USER_OP, faultproxy.patched(UserStatus="EXTERNAL_PROVIDER"))

    # When the helpdesk asks to reset them (no idempotency key: nothing else is written)
    answer = proxied_function.invoke(request_for(DIEGO))

    # Then 409 external-user, no reset call, no claim in the guard's table
    assert status_and_error(answer) == (409, "external-user"), answer
    assert cognito_faults.count(GET_USER_OP) == 1, "the control: the lookup went through the proxy"
    assert cognito_faults.count(RESET_OP) == 0
    claims = [i["pk"] for i in stack.guard_items() if i["pk"].startswith("user#")]
    assert claims == [], "no user was claimed (the pacing's buckets share the table)"
    assert users()[DIEGO].status == "CONFIRMED"


# ---- 3. the pool's Lambda triggers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, status, code",
    [
        ("UserLambdaValidationException", 422, "trigger-refused"),
        ("InvalidLambdaResponseException", 502, "trigger-invalid-response"),
    ],
)
def test_a_trigger_failure_that_proves_nothing_was_sent_is_a_refusal_and_holds_nobody(
    proxied_function, cognito_faults, users, stack, kind, status, code
):
    cognito_faults.set_rule(RESET_OP, faultproxy.trigger_failure(kind))

    answer = proxied_function.invoke(request_for(DIEGO, key=f"trigger-{code}-1"))

    assert status_and_error(answer) == (status, code), answer
    assert cognito_faults.count(RESET_OP) == 1
    # Once the trigger is fixed, a new request resets the user at once.
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    again = proxied_function.invoke(request_for(DIEGO, key=f"trigger-{code}-2"))
    assert (again["statusCode"], http_body(again).get("outcome")) == (200, "RESET"), again


def test_a_trigger_that_could_not_run_to_its_end_is_an_ambiguous_reset_and_holds_the_user(
    proxied_function, cognito_faults, users, stack
):
    # Cognito ran the reset (moto performs it), then the trigger failed unexpectedly.
    cognito_faults.set_rule(RESET_OP, faultproxy.trigger_failure("UnexpectedLambdaException", forward=True))

    answer = proxied_function.invoke(request_for(DIEGO, key="trigger-unexpected-1"))

    assert status_and_error(answer) == (502, "reset-unconfirmed"), answer
    assert cognito_faults.count(RESET_OP) == 1, "an ambiguous reset is never sent twice"
    cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
    later = proxied_function.invoke(request_for(DIEGO, key="trigger-unexpected-2"))
    assert status_and_error(later) == (409, "reset-unconfirmed"), later
    assert cognito_faults.count(RESET_OP) == 1


# ---- 4. reset-enqueue: the preflight, --wait and --retry-from ----------------------------------------


def _pool(stack, name: str, **settings) -> str:
    return driver.cognito_client(stack.endpoint).create_user_pool(PoolName=name, **settings)["UserPool"]["Id"]


def _csv(path, pool: str, names: list[str]):
    path.write_text("userPoolId,username\n" + "".join(f"{pool},{n}\n" for n in names))
    return path


def _queued(stack, url) -> list[str]:
    sqs = driver.aws_client("sqs", stack.endpoint)
    names = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60)
        messages = got.get("Messages", [])
        if not messages:
            return sorted(names)
        names += [json.loads(m["Body"])["Username"] for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def test_the_preflight_refuses_a_mass_reset_the_default_sender_cannot_deliver(stack, users, tmp_path):
    # Given a pool with Cognito's default sender and one with an SES configuration
    default_pool = _pool(stack, "limits-default-sender")
    ses_pool = _pool(stack, "limits-ses-sender", EmailConfiguration={
        "EmailSendingAccount": "DEVELOPER", "SourceArn": SES_SOURCE})
    url = driver.create_request_queue(stack.endpoint, "limits-preflight")
    names = [f"user{i:03d}@example.com" for i in range(51)]

    # When 51 users of the default-sender pool are enqueued
    path = _csv(tmp_path / "default.csv", default_pool, names)
    refused = driver.run_enqueue(stack.endpoint, ["--queue-url", url, str(path)])

    # Then nothing is sent: exit 2, naming the limit, the pool and SES
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert default_pool in refused.stderr and "51 users" in refused.stderr
    assert "50 emails a day" in refused.stderr and "Amazon SES" in refused.stderr
    assert "--allow-default-email" in refused.stderr
    assert f"preflight: pool {default_pool}: 51 user(s) in the file; email sender COGNITO_DEFAULT" in refused.stdout
    assert _queued(stack, url) == []
    assert not (tmp_path / "default.csv.enqueue-state.jsonl").exists()

    # And --allow-default-email sends them
    allowed = driver.run_enqueue(stack.endpoint, ["--queue-url", url, "--allow-default-email", str(path)])
    assert allowed.returncode == 0, allowed.stderr
    assert "sent 51, already sent 0, failed 0" in allowed.stdout
    assert _queued(stack, url) == names

    # And 50 users (the limit) of the default-sender pool pass, as do 51 of the SES pool
    fifty = driver.run_enqueue(stack.endpoint, [
        "--queue-url", url, str(_csv(tmp_path / "fifty.csv", default_pool, names[:50]))])
    assert fifty.returncode == 0, fifty.stderr
    ses = driver.run_enqueue(stack.endpoint, ["--queue-url", url, str(_csv(tmp_path / "ses.csv", ses_pool, names))])
    assert ses.returncode == 0, ses.stderr
    assert f"preflight: pool {ses_pool}: 51 user(s) in the file; email sender Amazon SES ({SES_SOURCE})" in ses.stdout
    assert "account recovery:" in ses.stdout


def test_wait_counts_the_delivery_limit_apart_and_retry_from_sends_those_users_again(
    stack, users, proxied_function, cognito_faults, tmp_path
):
    # Given three users, a pool past its daily email limit, and the function draining the queue
    emails = driver.seed_mass_users(stack.endpoint, 3, prefix="limit")
    path = _csv(tmp_path / "users.csv", driver.DEMO_POOL, emails + ["admin@example.com"])
    report = tmp_path / "report.csv"
    url = driver.create_request_queue(stack.endpoint)
    results = driver.results_queue_url(stack.endpoint)
    cognito_faults.set_rule(RESET_OP, faultproxy.limit_exceeded(faultproxy.DAILY_EMAIL_LIMIT))
    drainer = driver.Drainer(stack.endpoint, proxied_function, url)
    drainer.start()
    try:
        first = driver.run_enqueue(stack.endpoint, [
            "--queue-url", url, "--wait", "--results-queue", results, "--timeout", "120",
            "--report", str(report), str(path)])
        # Then the report says delivery-limit for the three, denied-user for admin, apart
        assert first.returncode == 1, first.stdout + first.stderr
        with report.open() as f:
            rows = {r["username"]: (r["outcome"], r["code"]) for r in csv.DictReader(f)}
        assert rows == {**{e: ("REJECTED", "delivery-limit") for e in emails},
                        "admin@example.com": ("REJECTED", "denied-user")}
        table = [line.split() for line in first.stdout.splitlines()]
        assert ["REJECTED", "delivery-limit", "3"] in table, first.stdout
        assert "to send again later: 3 user(s) (delivery-limit 3)" in first.stdout
        assert stack.reset_calls() == {}

        # When the pool can send again and the operator re-drives from the report
        cognito_faults.set_rule(RESET_OP, faultproxy.FORWARD)
        retry = driver.run_enqueue(stack.endpoint, [
            "--queue-url", url, "--wait", "--results-queue", results, "--timeout", "120",
            "--retry-from", str(report), str(path)])
    finally:
        drainer.stop()
    # Then exactly those three are sent and reset (admin is not sent again)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "3 user(s) to send again (delivery-limit 3)" in retry.stdout
    assert "sent 3, already sent 0, failed 0" in retry.stdout
    calls = stack.reset_calls()
    assert sorted(calls.values()) == [1, 1, 1], calls  # the three users, once each
    assert (tmp_path / "report.csv.enqueue-state.jsonl").exists()
