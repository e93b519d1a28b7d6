"""End to end: the operations side (issue 10) through the real binary, against moto.

- Outcome events: the function puts one EventBridge event per final outcome on moto's bus
  (EVENT_BUS); the seeded rule routes source "cognito-reset" to the results queue, which is where
  these tests read them, as a ticketing system subscribed to the bus would.
- The policy as live configuration: a function started with POLICY_PARAMETER reads moto's SSM
  parameter and re-reads it every 2 s (POLICY_REFRESH_SECONDS); a new version is put with
  `stack.put_policy` while the function keeps running.
- Metrics: one EMF document per invocation on the function's stdout (captured in its log).

Every wait is bounded polling; the reseed before each test (the `users` fixture) empties the results
queue and puts policy/demo.json back as the parameter's version 1.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
HTTP_BATCH_EVENT = "events/http-api-v2-batch.json"
SQS_MIXED_EVENT = "events/e2e/sqs-mixed.json"
DIEGO = "diego@example.com"
ERIN = "erin@example.com"
DORA = "dora@example.com"
PORTAL_ROLE = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice"
QUEUE_ARN = "arn:aws:sqs:us-west-2:123456789012:password-resets"
CANARY = "canary-ops-e2e-Zq81-never-in-an-event"
# The mixed batch as the demo policy and the seeded users decide it (docs/api.md, Outcomes).
SQS_MIXED_OUTCOMES = {
    "erin@example.com": ("RESET", None),
    "diego@example.com": ("RESET", None),
    "admin@example.com": ("REJECTED", "denied-user"),
    "mallory@example.com": ("REJECTED", "denied-group"),
    "ghost@example.com": ("REJECTED", "user-not-found"),
    "nemo@example.com": ("REJECTED", "cannot-reset"),
    "dora@example.com": ("REJECTED", "user-disabled"),
}
# A new parameter version must be in force within a few refresh intervals (plus invoke slack).
TAKES_EFFECT_TIMEOUT_S = 3 * driver.LOCAL_POLICY_REFRESH_SECONDS + 15.0
PROBE_INTERVAL_S = 0.3
# How long to keep watching that nothing more arrives on the results queue.
QUIET_S = 1.0


# ---- helpers -----------------------------------------------------------------------------------


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def http_request(username: str, *, reason: str | None = None, client_metadata: dict | None = None) -> dict:
    event = copy.deepcopy(load(HTTP_EVENT))
    body = {"UserPoolId": driver.DEMO_POOL, "Username": username}
    if reason is not None:
        body["Reason"] = reason
    if client_metadata is not None:
        body["ClientMetadata"] = client_metadata
    event["body"] = json.dumps(body)
    return event


def http_body(answer: dict) -> dict:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return json.loads(answer["body"])


def with_canary(event: dict) -> dict:
    """The SQS event with a canary in every record's ClientMetadata."""
    event = copy.deepcopy(event)
    for record in event["Records"]:
        body = json.loads(record["body"])
        body["ClientMetadata"] = {"ticket": CANARY, "note": CANARY + "-2"}
        record["body"] = json.dumps(body)
    return event


def events_of(stack, count: int) -> list[dict]:
    """Exactly `count` events from the results queue: waits for them, then checks none follow."""
    events = stack.take_events(count)
    assert len(events) == count, f"expected {count} events on the results queue, got {len(events)}: {events}"
    extra = stack.take_events(count=1, timeout=QUIET_S)
    assert extra == [], f"more events than expected: {extra}"
    return events


def assert_is_an_outcome_event(event: dict) -> dict:
    """The EventBridge envelope the contract promises; returns the detail."""
    assert event["source"] == driver.EVENT_SOURCE, event
    assert event["detail-type"] == driver.EVENT_DETAIL_TYPE, event
    detail = event["detail"]
    assert isinstance(detail, dict), event
    # time: RFC 3339
    assert datetime.fromisoformat(detail["time"].replace("Z", "+00:00")).tzinfo is not None, detail
    assert detail.get("policyVersion") not in (None, ""), detail
    if detail["outcome"] in ("RESET", "WOULD_RESET"):
        assert detail.get("code") is None, detail
    else:
        assert detail.get("code"), detail
    return detail


def assert_no_client_metadata(events: list[dict], *values: str) -> None:
    text = json.dumps(events)
    for value in values:
        assert value not in text, f"a ClientMetadata value reached an event: {value}"
    assert "clientmetadata" not in text.lower(), "an event carries a ClientMetadata member"


def audit_version(function) -> str | None:
    """The policy_version of the audit line of the last invoke."""
    entries = function.wait_for_log(lambda es: any(driver._find(e, "policy_version") is not None for e in es))
    for entry in entries:
        version = driver._find(entry, "policy_version")
        if version is not None:
            return str(version)
    return None


def ask_until(function, username: str, done, timeout: float = TAKES_EFFECT_TIMEOUT_S) -> tuple[dict, int]:
    """Send requests for `username` until `done(answer body)` (bounded); (last body, requests sent)."""
    deadline = time.monotonic() + timeout
    sent = 0
    while True:
        body = http_body(function.invoke(http_request(username)))
        sent += 1
        if done(body):
            return body, sent
        assert time.monotonic() < deadline, (
            f"not in force within {timeout:.0f}s ({sent} requests); last answer for {username}: {body}"
        )
        time.sleep(PROBE_INTERVAL_S)


def policy_denying(*users: str) -> dict:
    document = json.loads(driver.DEMO_POLICY.read_text())
    document["deny"]["users"] += list(users)
    return document


@pytest.fixture
def live_function(stack, users):
    """A function reading the policy parameter (re-read every 2 s), started after the reseed (the
    parameter is version 1 = policy/demo.json) and stopped after the test."""
    try:
        function = stack.start_function(label="function-live-policy", policy="parameter")
    except driver.StackError as e:
        pytest.fail(f"the function with POLICY_PARAMETER did not start: {e}", pytrace=False)
    yield function
    stack.stop_function(function)


# ---- outcome events ------------------------------------------------------------------------------


def test_a_mixed_sqs_batch_puts_one_event_per_record_on_the_results_queue(stack, function, users):
    # Given the mixed batch, every record with a ticket number in its ClientMetadata
    event = with_canary(load(SQS_MIXED_EVENT))
    by_id = {r["messageId"]: json.loads(r["body"])["Username"] for r in event["Records"]}

    answer = function.invoke(event)

    # Then every record ended final (nothing retried) and each has exactly one event
    assert answer.get("batchItemFailures") == [], answer
    events = events_of(stack, len(by_id))
    assert sorted(e["detail"]["id"] for e in events) == sorted(by_id)
    for received in events:
        detail = assert_is_an_outcome_event(received)
        username = by_id[detail["id"]]
        assert (detail["outcome"], detail.get("code")) == SQS_MIXED_OUTCOMES[username], detail
        assert detail["requestedUsername"] == username
        assert detail["userPoolId"] == driver.DEMO_POOL
        assert detail["source"] == "sqs"
        assert QUEUE_ARN in json.dumps(detail["caller"])
        # the guard's key of an SQS record is its message id
        assert detail["idempotencyKey"] == detail["id"]
        if detail["outcome"] == "RESET":
            assert detail["rule"] == "ticket-queue"
            assert detail["canonicalUsername"] == users()[username].username
    assert_no_client_metadata(events, CANARY)


def test_an_http_request_puts_its_outcome_event_with_the_request_id_reason_and_key(stack, function, users):
    # Given a portal request with a reason, ClientMetadata and an Idempotency-Key
    request = driver.with_idempotency_key(
        http_request(DIEGO, reason="locked out, ticket INC-7001", client_metadata={"ticket": CANARY}),
        "portal-INC-7001",
    )

    body = http_body(function.invoke(request))

    assert body["outcome"] == "RESET", body
    (received,) = events_of(stack, 1)
    detail = assert_is_an_outcome_event(received)
    assert detail["outcome"] == "RESET" and "code" not in detail
    assert detail["source"] == "http-api"
    assert detail["id"] == body["requestId"]
    assert detail["userPoolId"] == driver.DEMO_POOL
    assert detail["requestedUsername"] == DIEGO
    assert detail["canonicalUsername"] == body["username"] == users()[DIEGO].username
    assert PORTAL_ROLE in json.dumps(detail["caller"])
    assert detail["rule"] == "helpdesk-portal"
    assert detail["reason"] == "locked out, ticket INC-7001"
    assert detail["idempotencyKey"] == "portal-INC-7001"
    assert_no_client_metadata([received], CANARY)


def test_an_http_batch_puts_one_event_per_item_named_request_id_hash_index(stack, function, users):
    answer = function.invoke(HTTP_BATCH_EVENT)

    results = http_body(answer)["results"]
    request_id = results[0]["requestId"].split("#")[0]
    events = events_of(stack, len(results))
    got = {e["detail"]["id"]: assert_is_an_outcome_event(e) for e in events}
    assert set(got) == {f"{request_id}#{r['index']}" for r in results}
    for result in results:
        detail = got[f"{request_id}#{result['index']}"]
        assert detail["outcome"] == (result.get("outcome") or "REJECTED"), (result, detail)
        assert detail.get("code") == result.get("error"), (result, detail)
        assert detail["source"] == "http-api"


def test_an_http_retry_puts_no_event(stack, unreachable_function, users):
    # Cognito unreachable: the answer is 503 unavailable, which the caller retries
    body = http_body(unreachable_function.invoke(http_request(DIEGO)))

    assert body.get("error") == "unavailable", body
    assert stack.take_events(count=1, timeout=QUIET_S) == []


def test_an_sqs_record_that_fails_on_its_last_receive_gives_up_with_an_event(stack, unreachable_function, users):
    # Given two records Cognito cannot serve: one on its 5th receive (the queue's maxReceiveCount,
    # MAX_RECEIVE_COUNT=5: next stop the dead-letter queue), one on its 1st
    event = load(SQS_MIXED_EVENT)
    last, first = copy.deepcopy(event["Records"][0]), copy.deepcopy(event["Records"][1])
    last["attributes"]["ApproximateReceiveCount"] = str(driver.LOCAL_MAX_RECEIVE_COUNT)
    event["Records"] = [last, first]

    answer = unreachable_function.invoke(event)

    # Then the first will be redelivered (no event); the last one's requester is told it gave up
    assert first["messageId"] in {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}, answer
    (received,) = events_of(stack, 1)
    detail = assert_is_an_outcome_event(received)
    assert (detail["outcome"], detail["code"]) == ("GAVE_UP", "unavailable"), detail
    assert detail["id"] == last["messageId"]
    assert detail["requestedUsername"] == ERIN


# ---- the policy from Parameter Store, live ---------------------------------------------------------


def test_a_new_parameter_version_takes_effect_without_a_restart(stack, live_function, users):
    # Given the function on version 1 (the demo policy): erin is allowed and reset
    pid = live_function.service.proc.pid
    first = http_body(live_function.invoke(http_request(ERIN)))
    assert first["outcome"] == "RESET", first
    assert audit_version(live_function) == "1"
    stack.take_events()

    # When version 2 denies erin
    version = stack.put_policy(policy_denying(ERIN))
    assert version == 2

    # Then, within a few refresh intervals and without a restart, erin is refused by name
    body, _ = ask_until(live_function, ERIN, lambda b: b.get("error") == "denied-user")
    assert audit_version(live_function) == "2"
    assert live_function.service.proc.pid == pid and live_function.service.proc.poll() is None
    assert stack.resets_of(ERIN) == 1
    # and the refusal's event names the version that decided it
    events = stack.take_events()
    assert events and events[-1]["detail"]["code"] == "denied-user"
    assert str(events[-1]["detail"]["policyVersion"]) == "2"


def test_an_invalid_parameter_version_is_refused_and_the_last_good_policy_holds(stack, live_function, users):
    # Given version 2 in force, denying erin and dora by name. dora (disabled, admitted by the
    # portal's rule) is refused under version 1 too (user-disabled), so asking for her never
    # resets anyone, and her deny is not concealed (a rule admits her).
    stack.put_policy(policy_denying(ERIN, DORA))
    ask_until(live_function, DORA, lambda b: b.get("error") == "denied-user")
    assert http_body(live_function.invoke(http_request(ERIN))).get("error") == "denied-user"

    # When version 3 has a typo that would drop the deny list if it were taken ("user")
    invalid = policy_denying(ERIN, DORA)
    invalid["deny"]["user"] = invalid["deny"].pop("users")
    mark = live_function.log_mark()
    assert stack.put_policy(invalid) == 3

    # Then the function refuses it (logged, naming the error) ...
    deadline = time.monotonic() + TAKES_EFFECT_TIMEOUT_S
    while not driver._refused(live_function.log_since(mark)):
        assert time.monotonic() < deadline, "the invalid version was never refused:\n" + live_function.service.log_tail()
        body = http_body(live_function.invoke(http_request(ERIN)))
        # ... and before and after, version 2 decides: erin is still denied by name
        assert body.get("error") == "denied-user", body
        time.sleep(PROBE_INTERVAL_S)
    lines = json.dumps(driver._refusal_lines(live_function.log_since(mark)))
    assert "deny" in lines and "user" in lines, f"the refusal should name the unknown key: {lines}"
    body = http_body(live_function.invoke(http_request(ERIN)))
    assert body.get("error") == "denied-user", body
    assert audit_version(live_function) == "2"
    assert stack.resets_of(ERIN) == 0

    # And a valid version 4 (the demo policy again) is taken afterwards: the refresh goes on
    assert stack.put_policy(json.loads(driver.DEMO_POLICY.read_text())) == 4
    ask_until(live_function, DORA, lambda b: b.get("error") == "user-disabled")
    assert audit_version(live_function) == "4"
    assert http_body(live_function.invoke(http_request(ERIN))).get("outcome") == "RESET"


# ---- metrics: one EMF document per invocation ------------------------------------------------------


def emf_document(function) -> dict:
    """The one EMF document of the last invoke, checked against the EMF specification."""
    entries = function.wait_for_log(lambda es: any(isinstance(e.get("_aws"), dict) for e in es))
    documents = [e for e in entries if isinstance(e.get("_aws"), dict)]
    assert len(documents) == 1, f"expected one EMF document for the invocation, got {len(documents)}"
    (document,) = documents
    meta = document["_aws"]
    # _aws: Timestamp (ms since the epoch) and CloudWatchMetrics (MetricDirectives)
    assert isinstance(meta["Timestamp"], int) and abs(meta["Timestamp"] / 1000 - time.time()) < 600, meta
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == "CognitoReset"
    # no dimensions: no user, caller or pool ever becomes one
    assert all(dimension_set == [] for dimension_set in directive.get("Dimensions", [[]])), directive
    names = [m["Name"] for m in directive["Metrics"]]
    assert 0 < len(names) <= 100 and len(set(names)) == len(names), names
    for metric in directive["Metrics"]:
        assert set(metric) <= {"Name", "Unit", "StorageResolution"}, metric
        value = document[metric["Name"]]  # every metric is a member of the root node
        values = value if isinstance(value, list) else [value]
        assert values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), metric
    return document


def test_one_emf_document_per_invocation_counts_the_mixed_batch_by_outcome_and_code(function, users):
    function.invoke(load(SQS_MIXED_EVENT))

    document = emf_document(function)

    counts = {}
    for outcome, code in SQS_MIXED_OUTCOMES.values():
        counts[f"Records.{outcome}"] = counts.get(f"Records.{outcome}", 0) + 1
        if code:
            counts[f"Records.{outcome}.{code}"] = counts.get(f"Records.{outcome}.{code}", 0) + 1
    assert document["Records"] == len(SQS_MIXED_OUTCOMES)
    for name, count in counts.items():
        assert document.get(name) == count, (name, document)
    assert document.get("Records.RETRY", 0) == 0
    # events reached the bus, no policy parameter to reload
    for counter in ("EventsNotDelivered", "PolicyReloads", "PolicyRefusals"):
        assert document[counter] == 0, (counter, document)
    assert any(name.startswith("CognitoLatency.AdminGetUser") for name in document), document
    assert "GuardLatency" in document

    # And the next invocation writes its own document with its own counts
    function.invoke(http_request("admin@example.com"))
    document = emf_document(function)
    assert document["Records"] == 1
    assert document.get("Records.REJECTED") == 1 and document.get("Records.REJECTED.denied-user") == 1
    assert document.get("Records.RESET", 0) == 0


def test_a_refused_parameter_version_is_counted_in_the_metrics(stack, live_function, users):
    mark = live_function.log_mark()
    stack.put_policy("{not json")

    deadline = time.monotonic() + TAKES_EFFECT_TIMEOUT_S
    refusals = 0
    while refusals == 0:
        assert time.monotonic() < deadline, "no PolicyRefusals counted:\n" + live_function.service.log_tail()
        live_function.invoke(http_request(DORA))
        live_function.wait_for_log(lambda es: any(isinstance(e.get("_aws"), dict) for e in es))
        refusals = sum(e.get("PolicyRefusals", 0) for e in live_function.log_since(mark) if "_aws" in e)
        time.sleep(PROBE_INTERVAL_S)
    # and the last good policy (version 1) still decides
    assert audit_version(live_function) == "1"


# ---- the shipped rule example, on moto's EventBridge ---------------------------------------------


def test_the_shipped_pool_rule_routes_only_that_pools_outcomes_to_its_queue(stack, function, users):
    # Given a second queue behind a rule made from events/outcome-events/rule-route-pool-to-queue.json
    # (the demo pool's outcomes only), next to the seeded catch-all rule
    pattern = (driver.ROOT / "events" / "outcome-events" / "rule-route-pool-to-queue.json").read_text()
    assert json.loads(pattern)["detail"]["userPoolId"] == [driver.DEMO_POOL]
    sqs, events = driver.aws_client("sqs", stack.endpoint), driver.aws_client("events", stack.endpoint)
    url = sqs.create_queue(QueueName="cognito-reset-demo-pool-results")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="demo-pool-results", EventBusName=driver.EVENT_BUS, EventPattern=pattern)
    events.put_targets(Rule="demo-pool-results", EventBusName=driver.EVENT_BUS, Targets=[{"Id": "q", "Arn": arn}])

    # When the HTTP batch runs: seven items in the demo pool, olga's in the other pool
    results = http_body(function.invoke(HTTP_BATCH_EVENT))["results"]

    # Then the catch-all queue has all eight, the pool's queue the seven of its pool
    everything = events_of(stack, len(results))
    routed = []
    deadline = time.monotonic() + driver.EVENT_WAIT_TIMEOUT_S
    while len(routed) < len(results) - 1 and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for message in got:
            routed.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(e["detail"]["requestedUsername"] for e in routed) == sorted(
        e["detail"]["requestedUsername"] for e in everything if e["detail"].get("userPoolId") == driver.DEMO_POOL
    )
    assert len(routed) == len(results) - 1
    assert "olga@example.com" not in {e["detail"]["requestedUsername"] for e in routed}
