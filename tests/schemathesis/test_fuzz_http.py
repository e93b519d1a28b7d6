"""The real function's HTTP answers against openapi.yaml (issue 9, item 8).

1. Every HTTP sample event in events/ is sent to the real binary (under `cargo lambda watch`,
   against moto, with the demo policy) and each answer is checked against the document.
2. schemathesis generates requests from the document (valid and invalid ones) and sends them to
   the function URL endpoint of `cargo lambda watch` (`/lambda-url/cognito-reset/`), with a policy
   that admits anonymous callers to the demo pool. Every answer must have a documented status,
   content type, headers and body; so no 5xx other than the documented 502/503 bodies, and no
   crash of the function (the emulator would answer an undocumented 500). The run is bounded by
   --max-examples and a wall-clock timeout.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import stack as driver  # tools/stack.py, put on sys.path by conftest.py

ROOT = driver.ROOT
EVENTS = ROOT / "events"
CHECKER = ROOT / "tests" / "openapi" / "openapi_check.py"
DOCUMENT = ROOT / "openapi.yaml"
HOOKS = Path(__file__).resolve().parent / "hooks.py"
# Wall-clock cap of the schemathesis run (it normally takes well under a minute).
FUZZ_TIMEOUT_S = 240
MAX_EXAMPLES = 150
SEED = 20261127
CHECKS = ",".join(
    [
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)


def http_samples() -> list[Path]:
    """The HTTP sample events (SQS and unsupported events answer with no HTTP response)."""
    samples = []
    for path in sorted(EVENTS.glob("*.json")) + sorted((EVENTS / "malformed").glob("*.json")):
        event = json.loads(path.read_text())
        if "Records" not in event and ("httpMethod" in event or "requestContext" in event):
            samples.append(path)
    return samples


def as_answer(name: str, response: dict) -> dict:
    headers = response.get("headers") or {
        k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items() if v
    }
    return {"name": name, "statusCode": response["statusCode"], "headers": headers, "body": response.get("body")}


def test_sample_events_get_answers_that_conform_to_openapi(stack, demo_function, schemathesis_bin, tmp_path):
    # Given the demo users, when every HTTP sample event is sent to the real binary
    stack.seed()
    answers = []
    for path in http_samples():
        response = demo_function.invoke(path)
        assert "statusCode" in response, f"{path.name}: not an HTTP answer: {response}"
        answers.append(as_answer(str(path.relative_to(EVENTS)), response))
    # then the answers cover the documented shapes
    statuses = {a["statusCode"] for a in answers}
    assert {200, 207, 400, 403, 405, 413, 415} <= statuses, statuses
    # (Which items of the batch succeed depends on what ran before it, e.g. a cooldown after the
    # single-request samples reset diego; every status is covered in-process by
    # tests/it/openapi.rs.)
    batch = next(a for a in answers if a["name"] == "http-api-v2-batch.json")
    item_statuses = {item["status"] for item in json.loads(batch["body"])["results"]}
    assert {403, 409, 422} <= item_statuses, item_statuses
    # and every one conforms to openapi.yaml
    recorded = tmp_path / "answers.json"
    recorded.write_text(json.dumps(answers, indent=1))
    result = subprocess.run(
        [str(schemathesis_bin / "python"), str(CHECKER), str(recorded)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_function_url_endpoint_answers_a_valid_request(stack, anonymous_function):
    # The function URL endpoint of cargo lambda watch parses the function's answer as a function
    # URL response: if it cannot (e.g. no `cookies` field), it answers 500 by itself.
    stack.seed()
    url = f"http://{driver.LOOPBACK}:{anonymous_function.port}/lambda-url/{driver.FUNCTION}/reset"
    body = json.dumps({"UserPoolId": driver.DEMO_POOL, "Username": "diego@example.com"}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    assert status == 200, (
        f"POST {url} answered {status} {text}: cargo lambda watch could not turn the function's "
        "answer into an HTTP response (it needs a function URL response: statusCode, headers, "
        f"body, isBase64Encoded and cookies)\nfunction log:\n{anonymous_function.service.log_tail(30)}"
    )
    assert json.loads(text)["outcome"] == "RESET"


def test_schemathesis_finds_no_undocumented_answer(anonymous_function, schemathesis_bin, tmp_path):
    url = f"http://{driver.LOOPBACK}:{anonymous_function.port}/lambda-url/{driver.FUNCTION}"
    junit = tmp_path / "junit.xml"
    command = [
        str(schemathesis_bin / "schemathesis"),
        "run",
        str(DOCUMENT),
        "--url",
        url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--output-sanitize",
        "false",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=FUZZ_TIMEOUT_S,
            cwd=tmp_path,
            env=driver.base_env()
            | {"NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false", "SCHEMATHESIS_HOOKS": str(HOOKS)},
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"schemathesis ran over {FUZZ_TIMEOUT_S}s:\n{e.stdout}") from None
    elapsed = time.monotonic() - started
    print(result.stdout[-6000:])
    assert result.returncode == 0, (
        f"schemathesis found answers that do not conform to openapi.yaml (exit {result.returncode}):\n"
        f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}\nfunction log:\n{anonymous_function.service.log_tail(60)}"
    )
    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert cases, f"schemathesis ran no test case:\n{result.stdout}"
    print(f"schemathesis: {len(cases)} operation(s) tested in {elapsed:.0f}s")
