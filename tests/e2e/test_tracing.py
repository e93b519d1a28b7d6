"""Tracing to X-Ray (issue 26), end to end.

The real binary runs behind the Runtime API emulator of tests/e2e/faultproxy.py, which hands each
invocation the trace header the test chooses (`Lambda-Runtime-Trace-Id`), with
AWS_XRAY_DAEMON_ADDRESS at a UDP listener standing in for the Lambda X-Ray daemon
(tools/stack.py's XrayDaemon); Cognito, the guard's table and the event bus are moto. The function
flushes its spans before it answers, so once an answer is back every datagram of that invocation
has been sent; the listener's reads are polled with a bound.
"""

from __future__ import annotations

import json

import pytest

import faultproxy
import stack as driver
from conftest_edges import function_binary  # noqa: F401  (fixture)
from test_edges import request_for, sqs_record_for

# Distinctive values that must reach Cognito and no segment.
USERNAME = "diego@example.com"
OTHER_USERNAME = "erin@example.com"
CANARY = "canary-xray-7Qw3-not-in-a-trace"
TICKET = "INC-5521 forgot password after holiday"


@pytest.fixture
def daemon():
    listener = driver.XrayDaemon()
    yield listener
    listener.stop()


@pytest.fixture
def traced_function(stack, function_binary, daemon):  # noqa: F811
    """A fresh process (so its first invocation is a cold start) that traces to `daemon`."""
    log = stack.log_path("function-tracing")
    env = driver.function_env(stack.endpoint, AWS_XRAY_DAEMON_ADDRESS=daemon.address)
    function = faultproxy.DirectFunction(function_binary, env, log)
    yield function
    function.stop()


def reset_request(username: str) -> dict:
    """The sample HTTP request for `username`, with ClientMetadata and a Reason (ticket text)."""
    event = request_for(username)
    body = json.loads(event["body"])
    body["ClientMetadata"] = {"ticket": CANARY}
    body["Reason"] = TICKET
    event["body"] = json.dumps(body)
    return event


def invoke(function, username: str, header: str) -> dict:
    answer = function.invoke(reset_request(username), faultproxy.now_ms() + 20_000, trace_id=header)
    assert answer["statusCode"] == 200, answer
    return answer


def by_name(documents: list[dict], name: str) -> list[dict]:
    return [d for d in documents if d.get("name") == name]


def ancestors(document: dict, documents: list[dict]) -> list[dict]:
    """The chain of parents of `document` among `documents`, nearest first."""
    index = {d["id"]: d for d in documents}
    chain = []
    while document.get("parent_id") in index:
        document = index[document["parent_id"]]
        chain.append(document)
    return chain


def test_one_reset_is_one_trace_with_a_subsegment_per_aws_call_and_no_personal_data(
    traced_function, daemon, users
):
    # Given a sampled trace header for the invocation
    trace_id = driver.new_trace_id()
    header = driver.trace_header(trace_id)
    lambda_segment = header.split("Parent=")[1].split(";")[0]
    # When one reset runs
    invoke(traced_function, USERNAME, header)
    documents = daemon.trace(trace_id)
    # Then every document is of the invocation's trace, a subsegment under Lambda's segment
    assert documents and all(d["trace_id"] == trace_id for d in daemon.documents()), documents
    assert all(d.get("type") == "subsegment" for d in documents if not d.get("nested")), documents
    [invocation] = by_name(documents, "invocation")
    assert invocation["parent_id"] == lambda_segment
    # sent as one datagram: every other span nested in the invocation's document
    assert len(daemon.datagrams) == 1, [d["name"] for d in documents if not d.get("nested")]
    assert not invocation.get("nested") and all(d.get("nested") for d in documents if d is not invocation)
    assert invocation["annotations"]["ColdStart"] is True
    assert invocation["annotations"]["Service"] == driver.FUNCTION
    # one record, with the annotations operators filter on
    [record] = by_name(documents, "record")
    assert ancestors(record, documents)[-1] is invocation
    annotations = record["annotations"]
    assert annotations["outcome"] == "RESET", record
    assert annotations["pool"] == driver.DEMO_POOL
    assert annotations["rule"], record
    # a subsegment per AWS call, named by service, with its operation, under the record
    calls = [d for d in documents if d.get("namespace") == "aws"]
    operations = [(d["name"], d["aws"]["operation"]) for d in calls]
    assert ("CognitoIdentityProvider", "AdminGetUser") in operations, operations
    assert ("CognitoIdentityProvider", "AdminResetUserPassword") in operations, operations
    assert any(name == "DynamoDB" for name, _ in operations), operations
    for call in calls:
        if call["name"] == "EventBridge":  # the outcome events go out once the records are done
            assert call["aws"]["operation"] == "PutEvents"
            assert ancestors(call, documents)[0] is invocation
        else:
            assert record in ancestors(call, documents), call
        assert int(call["metadata"]["attempts"]) >= 1, call
    # the guard's decisions
    names = {d["name"] for d in documents}
    assert {"guard.claim", "guard.complete"} <= names, names
    # and nothing personal anywhere in what was sent
    raw = b"".join(daemon.datagrams).decode()
    for secret in (USERNAME, "diego", CANARY, TICKET, "INC-5521", "alice"):
        assert secret not in raw, secret


def test_an_unsampled_invocation_sends_nothing(traced_function, daemon, users):
    # Given an invocation whose header says Sampled=0, then a sampled one
    unsampled = driver.new_trace_id()
    invoke(traced_function, USERNAME, driver.trace_header(unsampled, sampled=False))
    sampled = driver.new_trace_id()
    invoke(traced_function, OTHER_USERNAME, driver.trace_header(sampled))
    # When the sampled one's segments have arrived (sent after anything the first could have sent)
    daemon.trace(sampled)
    # Then none is of the unsampled trace
    trace_ids = {d["trace_id"] for d in daemon.documents()}
    assert trace_ids == {sampled}, trace_ids


def test_two_invocations_in_a_row_never_mix_their_trace_ids(traced_function, daemon, users):
    # Given two invocations on one process, each with its own trace header: an HTTP request, then
    # an SQS record (whose record runs in a task of its own, on any thread)
    first, second = driver.new_trace_id(), driver.new_trace_id()
    invoke(traced_function, USERNAME, driver.trace_header(first))
    daemon.trace(first)
    answer = traced_function.invoke(sqs_record_for(OTHER_USERNAME, "m-tracing-1"), faultproxy.now_ms() + 20_000,
                                    trace_id=driver.trace_header(second))
    assert answer == {"batchItemFailures": []}, answer
    daemon.trace(second)
    documents = daemon.documents()
    # Then each trace has its own invocation, and every span hangs under its own trace's
    for trace_id, cold in ((first, True), (second, False)):
        mine = [d for d in documents if d["trace_id"] == trace_id]
        [invocation] = by_name(mine, "invocation")
        assert invocation["annotations"]["ColdStart"] is cold
        for document in mine:
            if document is not invocation:
                assert ancestors(document, mine)[-1] is invocation, document
        [record] = by_name(mine, "record")
        assert record["annotations"]["outcome"] == "RESET", record
        assert not by_name(mine, "handle"), "the handler's span is folded into the invocation's"
    assert {d["trace_id"] for d in documents} == {first, second}


def test_a_pool_in_another_account_shows_its_assume_role_under_the_record(traced_function, daemon, users):
    # Given a fresh process (no credentials for the partner's role yet) and a sampled header
    trace_id = driver.new_trace_id()
    event = request_for(driver.PARTNER_USERS[0])
    body = json.loads(event["body"])
    body["UserPoolId"] = driver.PARTNER_POOL
    event["body"] = json.dumps(body)
    # When it resets a user of the pool that POOL_ROLES maps to a role in the other account
    answer = traced_function.invoke(event, faultproxy.now_ms() + 20_000, trace_id=driver.trace_header(trace_id))
    assert answer["statusCode"] == 200, answer
    documents = daemon.trace(trace_id)
    # Then the role's AssumeRole is an STS subsegment of the record, made inside its first Cognito
    # call (which resolves its credentials before sending)
    [record] = by_name(documents, "record")
    calls = [d for d in documents if d.get("namespace") == "aws"]
    [assume] = [d for d in calls if (d["name"], d["aws"]["operation"]) == ("STS", "AssumeRole")]
    assert record in ancestors(assume, documents), assume
    cognito = sorted((d for d in calls if d["name"] == "CognitoIdentityProvider"), key=lambda d: d["start_time"])
    assert cognito and cognito[0]["start_time"] <= assume["start_time"] <= assume["end_time"] <= cognito[0]["end_time"], (
        assume, cognito)
    # and the role's session name is not in it (no caller session name in a trace)
    raw = b"".join(daemon.datagrams).decode()
    assert driver.PARTNER_USERS[0] not in raw
