#!/usr/bin/env python3
"""A stand-in for the function in the drain harness's own tests: the Runtime API client loop of
lambda_runtime, and per record AdminGetUser then AdminResetUserPassword against AWS_ENDPOINT_URL;
a throttled record goes to batchItemFailures. STUB_MODE=sleep never answers (function timeout),
STUB_MODE=error reports every invocation as an error, STUB_MODE=exit exits at start-up. With STUB_PID_DIR, each process leaves its pid there. With
AWS_XRAY_DAEMON_ADDRESS, a sampled HTTP invocation waits STUB_TURN_WAIT_MS before each call and
sends its trace (an invocation document, a `pacing.wait` subsegment for each wait) before it
answers, as the function does."""

import http.client
import json
import os
import socket
import sys
import time
import uuid

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION"):
    os.environ[name]  # lambda_runtime refuses to start without them
mode = os.environ.get("STUB_MODE", "ok")
if os.environ.get("STUB_PID_DIR"):
    open(os.path.join(os.environ["STUB_PID_DIR"], str(os.getpid())), "w").close()
if mode == "exit":
    print("stub: exiting at start-up", flush=True)
    sys.exit(3)
endpoint = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
runtime = http.client.HTTPConnection(api, timeout=None)
daemon = os.environ.get("AWS_XRAY_DAEMON_ADDRESS")
turn_wait_s = int(os.environ.get("STUB_TURN_WAIT_MS", "20")) / 1000
cognito = http.client.HTTPConnection(endpoint, timeout=10)


def call(op, doc):
    cognito.request("POST", "/", json.dumps(doc), {
        "X-Amz-Target": "AWSCognitoIdentityProviderService." + op,
        "Content-Type": "application/x-amz-json-1.1"})
    resp = cognito.getresponse()
    body = json.loads(resp.read())
    return resp.status, body


while True:
    runtime.request("GET", "/2018-06-01/runtime/invocation/next")
    resp = runtime.getresponse()
    event = json.loads(resp.read())
    rid = resp.getheader("Lambda-Runtime-Aws-Request-Id")
    assert resp.getheader("Lambda-Runtime-Deadline-Ms").isdigit()
    assert resp.getheader("Lambda-Runtime-Invoked-Function-Arn").startswith("arn:aws:lambda:")
    if mode == "sleep":
        time.sleep(3600)
    if mode == "error":
        runtime.request("POST", "/2018-06-01/runtime/invocation/%s/error" % rid,
                        json.dumps({"errorType": "Stub", "errorMessage": "stub error"}))
        runtime.getresponse().read()
        continue
    if "Records" not in event:
        # An HTTP API request (the bench's probe): one request or a batch, each looked up and reset.
        body = json.loads(event["body"])
        items = body if isinstance(body, list) else [body]
        statuses = []
        header = resp.getheader("Lambda-Runtime-Trace-Id") or ""
        fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
        traced = daemon is not None and fields.get("Sampled") == "1"
        started, waits = time.time(), []
        for req in items:
            status = 200
            for op in ("AdminGetUser", "AdminResetUserPassword"):
                if traced:
                    t0 = time.time()
                    time.sleep(turn_wait_s)
                    waits.append({"name": "pacing.wait", "id": uuid.uuid4().hex[:16], "start_time": t0,
                                  "end_time": time.time()})
                code, _ = call(op, {"UserPoolId": req["UserPoolId"], "Username": req["Username"]})
                if code != 200:
                    status = 429
                    break
            statuses.append(status)
        if isinstance(body, list):
            answer = {"statusCode": 207, "body": json.dumps(
                {"results": [{"index": i, "status": s} for i, s in enumerate(statuses)]})}
        else:
            answer = {"statusCode": statuses[0], "body": "{}"}
        if traced:
            document = {"name": "invocation", "id": uuid.uuid4().hex[:16], "trace_id": fields["Root"],
                        "start_time": started, "end_time": time.time(), "subsegments": waits}
            host, _, port = daemon.rpartition(":")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b'{"format": "json", "version": 1}\n' + json.dumps(document).encode(), (host, int(port)))
        runtime.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, json.dumps(answer))
        runtime.getresponse().read()
        continue
    failures = []
    for record in event["Records"]:
        assert record["eventSource"] == "aws:sqs"
        req = json.loads(record["body"])
        ok = True
        for op in ("AdminGetUser", "AdminResetUserPassword"):
            status, body = call(op, {"UserPoolId": req["UserPoolId"], "Username": req["Username"]})
            if status != 200:
                ok = False
                break
        if not ok:
            failures.append({"itemIdentifier": record["messageId"]})
    runtime.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid,
                    json.dumps({"batchItemFailures": failures}))
    runtime.getresponse().read()
