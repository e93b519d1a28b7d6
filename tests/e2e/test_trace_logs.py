"""No secret in the real function's logs at TRACE (issue 9, item 3), end to end.

The real binary runs under `cargo lambda watch` with AWS_LAMBDA_LOG_LEVEL=TRACE and the SDK's
body-logging switches on (LOG_SIGNABLE_BODY, LOG_SENSITIVE_BODIES): lambda_runtime's raw-event
line and the SDK's signing line are real here, not stand-ins. A canary in ClientMetadata must
reach Cognito and appear in no line of the function's output.
"""

from __future__ import annotations

import copy
import json

import pytest

import stack as driver

CANARY = "canary-e2e-9fK2-do-not-log"


@pytest.fixture(scope="module")
def trace_function(stack):
    try:
        return stack.start_function(
            label="function-trace",
            AWS_LAMBDA_LOG_LEVEL="TRACE",
            LOG_SIGNABLE_BODY="true",
            LOG_SENSITIVE_BODIES="true",
        )
    except driver.StackError as e:
        pytest.fail(f"function-trace did not start: {e}", pytrace=False)


def canary_bytes() -> str:
    """The canary as the SDK prints a body's bytes: `99, 97, 110, ...`."""
    return ", ".join(str(b) for b in CANARY.encode())


def test_trace_logs_of_the_real_function_carry_no_client_metadata(trace_function, users):
    # Given an HTTP request and an SQS message with a canary in ClientMetadata
    request = {"UserPoolId": driver.DEMO_POOL, "Username": "diego@example.com",
               "ClientMetadata": {"otp": CANARY}}
    http = copy.deepcopy(json.loads((driver.ROOT / "events/http-api-v2.json").read_text()))
    http["body"] = json.dumps(request)
    sqs = copy.deepcopy(json.loads((driver.ROOT / "events/sqs-standard.json").read_text()))
    sqs["Records"] = sqs["Records"][:1]
    sqs["Records"][0]["body"] = json.dumps(request | {"Username": "erin@example.com"})

    # When the function at TRACE handles them
    answer = trace_function.invoke(http)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["outcome"] == "RESET"
    assert trace_function.invoke(sqs) == {"batchItemFailures": []}
    assert users()["erin@example.com"].status == "RESET_REQUIRED"

    # Then the log is verbose (the function's own DEBUG line is there) and carries no canary
    log = trace_function.service.log.read_text(errors="replace")
    assert "implausible invocation deadline" in log, "the function did not log below INFO"
    leaks = [line for line in log.splitlines() if CANARY in line or canary_bytes() in line]
    assert not leaks, f"{len(leaks)} log line(s) carry the canary, e.g. {leaks[0][:500]}"
