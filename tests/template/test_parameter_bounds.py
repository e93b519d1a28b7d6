"""The template refuses nothing the function refuses, and the reverse (issue 24, part F).

Each numeric parameter of template.yaml that reaches the function's environment is set to its
MinValue and to its MaxValue (every other parameter at its default), the template is resolved as
CloudFormation would deploy it (test_template.Stack, after the SAM transform), and the real debug
binary is started with exactly that environment behind a Lambda Runtime API emulator
(tests/e2e/faultproxy.DirectFunction): it must reach its first `/next` (the configuration was
accepted). One step past each bound (MinValue − 1, MaxValue + 1) the function must refuse to start,
unless the template is narrower for a reason of its own (REVERSE_EXCEPTIONS, each with its reason).

The function is started offline: the SDK's endpoints point at a loopback port, which answers SSM's
GetParameter with the demo policy (PolicySource=Parameter reads it at start-up) and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from test_template import TRANSLATED, Stack, raw_template

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests" / "e2e")]

import faultproxy  # noqa: E402  (standard library only, like tools/stack.py)
import stack as driver  # noqa: E402

PARAMETER = "/cognito-reset/policy"
DEMO_POLICY = json.dumps(json.loads((ROOT / "policy" / "demo.json").read_text()), separators=(",", ":"))
INLINE = {"PolicySource": "Inline", "Policy": DEMO_POLICY}
FROM_PARAMETER = {"PolicySource": "Parameter", "PolicyParameterName": PARAMETER, "Policy": ""}
# What CloudFormation fills in for the resources and pseudo parameters the environment names.
REFERENCES = {"GuardTable": "cognito-reset-guard", "AWS::AccountId": "123456789012"}

# Numeric parameters that never reach the function (the API's throttling, the event source
# mapping's batch and concurrency): nothing for the function to refuse.
NOT_THE_FUNCTIONS = {"ApiThrottleRate", "ApiThrottleBurst", "BatchSize", "MaximumConcurrency"}
# Parameters whose variable is set only with another parameter's value.
NEEDS = {"PolicyRefreshSeconds": FROM_PARAMETER, "PolicyMaxAgeSeconds": FROM_PARAMETER}
# One step past a bound that the function accepts but the template refuses, on purpose.
REVERSE_EXCEPTIONS = {
    ("MaxInstances", "MinValue"): (
        "MAX_INSTANCES=1 is a valid fleet of one for the function; the template's reserved "
        "concurrency must admit the SQS event source's MaximumConcurrency, whose minimum is 2"
    ),
}


def numeric_parameters() -> dict[str, dict[str, Any]]:
    return {
        name: p for name, p in TRANSLATED["Parameters"].items()
        if p["Type"] == "Number" and ("MinValue" in p or "MaxValue" in p)
    }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            yield node["Ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def variables_of_parameters() -> dict[str, list[str]]:
    """Parameter -> the function's environment variables whose value refers to it (template.yaml)."""
    (function,) = [r for r in raw_template()["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    variables = function["Properties"]["Environment"]["Variables"]
    found: dict[str, list[str]] = {}
    for variable, value in variables.items():
        for ref in _refs(value):
            found.setdefault(ref, []).append(variable)
    return found


MAPPED = variables_of_parameters()
CASES = [
    (name, bound)
    for name in sorted(numeric_parameters())
    if name not in NOT_THE_FUNCTIONS
    for bound in ("MinValue", "MaxValue")
    if bound in TRANSLATED["Parameters"][name]
]


def environment(**params: Any) -> dict[str, str]:
    """The function's environment as CloudFormation would set it for these parameter values."""
    stack = Stack(TRANSLATED, **params)
    (function,) = [r for r in stack.resources.values() if r["Type"] == "AWS::Lambda::Function"]
    env = {}
    for variable, value in function["Properties"]["Environment"]["Variables"].items():
        if isinstance(value, dict) and set(value) == {"Ref"}:
            value = REFERENCES[value["Ref"]]
        assert not isinstance(value, (dict, list)), f"{variable}: unresolved {value!r}"
        env[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class _FakeSsm(BaseHTTPRequestHandler):
    """Answers every request as SSM's GetParameter of the demo policy (version 1)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"Parameter": {
            "Name": PARAMETER, "Type": "String", "Value": DEMO_POLICY, "Version": 1,
            "ARN": f"arn:aws:ssm:us-west-2:123456789012:parameter{PARAMETER}",
        }}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSsm)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def binary() -> Path:
    """The debug `cognito-reset` (built with the features every debug build here uses)."""
    argv = ["cargo", "build", "--locked", "--features", "enqueue", "--bin", driver.FUNCTION,
            "--message-format=json-render-diagnostics"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, "\n".join(done.stderr.splitlines()[-30:])
    for line in done.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message.get("target", {}).get("name") == driver.FUNCTION:
            return Path(message["executable"])
    pytest.fail("cargo reported no cognito-reset executable")


def start(binary: Path, endpoint: str, env: dict[str, str], log: Path) -> str | None:
    """None when the function reached its first /next; otherwise why it did not."""
    env = env | {
        "AWS_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
    }
    try:
        function = faultproxy.DirectFunction(binary, env, log)
    except driver.StackError as e:
        return str(e)
    function.stop()
    return None


def params_at(name: str, value: int) -> dict[str, Any]:
    return {**NEEDS.get(name, INLINE), name: value}


def test_every_numeric_parameter_that_reaches_the_function_is_checked():
    numeric = set(numeric_parameters())
    assert NOT_THE_FUNCTIONS <= numeric
    for name in numeric - NOT_THE_FUNCTIONS:
        assert MAPPED.get(name), f"{name} is in no variable of the function's environment"
    for name in NOT_THE_FUNCTIONS:
        assert name not in MAPPED, f"{name} reaches the function: check its bounds here too"
    # the deadline margin and the quotas are among them, at least
    assert {"DeadlineMarginMs", "IdempotencyTtlSeconds", "CognitoResetQuota"} <= {n for n, _ in CASES}


@pytest.mark.parametrize("name, bound", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_the_function_starts_with_a_parameter_at_its_bound(name, bound, binary, endpoint, tmp_path):
    value = TRANSLATED["Parameters"][name][bound]
    env = environment(**params_at(name, value))
    for variable in MAPPED[name]:
        # the bound really reaches the function (0 = off: a variable that is then left out)
        assert env.get(variable) == str(value) or (value == 0 and variable not in env), (variable, env)

    problem = start(binary, endpoint, env, tmp_path / "function.log")

    assert problem is None, f"{name}={value} ({bound}) deploys, but the function does not start: {problem}"


@pytest.mark.parametrize("name, bound", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_the_function_refuses_one_step_past_a_bound(name, bound, binary, endpoint, tmp_path):
    if (name, bound) in REVERSE_EXCEPTIONS:
        past = TRANSLATED["Parameters"][name][bound] + (-1 if bound == "MinValue" else 1)
        env = environment(**params_at(name, past))
        assert start(binary, endpoint, env, tmp_path / "function.log") is None, (
            f"{name}={past} is a listed exception ({REVERSE_EXCEPTIONS[(name, bound)]}), "
            "but the function refuses it: drop the exception"
        )
        return
    value = TRANSLATED["Parameters"][name][bound] + (-1 if bound == "MinValue" else 1)
    env = environment(**params_at(name, value))

    problem = start(binary, endpoint, env, tmp_path / "function.log")

    assert problem is not None, (
        f"{name}={value} is one step past the template's {bound}, and the function accepts it: "
        "widen the template or narrow the function"
    )
    assert "invalid configuration" in problem or "exited with status" in problem, problem
