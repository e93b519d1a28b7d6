"""The audit trail survives Lambda's log-level filter, or the function does not start (issue 15).

Lambda filters a JSON log line by its `level` and counts a line without a valid `level` as INFO
(AWS docs, "Log-level filtering"). The audit line is INFO and the EMF document has no level, so a
level above INFO would drop both: the function refuses to start with such a level rather than
reset without an audit trail. The real binary runs behind the Runtime API emulator of
tests/e2e/faultproxy.py, with Lambda's variables.
"""

from __future__ import annotations

import json
import subprocess
import time

import faultproxy
import stack as driver
from conftest_edges import function_binary  # noqa: F401  (fixture)
from test_edges import request_for

LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
START_TIMEOUT_S = 30.0


def lambda_filter(lines: list[str], level: str) -> list[str]:
    """The lines Lambda keeps at `level`: JSON lines with a lower `level` are dropped; any other
    line (not JSON, no `level`, an invalid one) counts as INFO."""
    floor = LEVELS.index(level)

    def rank(line: str) -> int:
        try:
            value = json.loads(line)
        except ValueError:
            return LEVELS.index("INFO")
        found = value.get("level") if isinstance(value, dict) else None
        return LEVELS.index(found.upper()) if isinstance(found, str) and found.upper() in LEVELS else LEVELS.index("INFO")

    return [line for line in lines if rank(line) >= floor]


def lambda_env(stack, level: str) -> dict[str, str]:
    return driver.function_env(stack.endpoint, AWS_LAMBDA_LOG_LEVEL=level, AWS_LAMBDA_LOG_FORMAT="JSON")


def test_above_info_the_function_refuses_to_start_and_names_the_setting(stack, function_binary):  # noqa: F811
    api = faultproxy.RuntimeApi()
    try:
        env = driver.base_env() | lambda_env(stack, "WARN") | {"AWS_LAMBDA_RUNTIME_API": api.address}
        done = subprocess.run(
            [str(function_binary)], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
    finally:
        api.stop()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "AWS_LAMBDA_LOG_LEVEL" in output and "audit" in output, output
    assert not api.waiting()


def test_at_info_the_audit_line_and_the_metrics_pass_lambdas_filter(stack, users, function_binary):  # noqa: F811
    log = stack.log_path("function-log-level")
    function = faultproxy.DirectFunction(function_binary, lambda_env(stack, "INFO"), log)
    try:
        answer = function.invoke(request_for("diego@example.com"), faultproxy.now_ms() + 20_000)
        assert answer["statusCode"] == 200, answer
        # The EMF document is written after the response: wait for it (bounded).
        limit = time.monotonic() + 10
        while True:
            lines = log.read_text().splitlines()
            kept = lambda_filter(lines, "INFO")
            audit = [line for line in kept if '"record done"' in line]
            emf = [line for line in kept if '"_aws"' in line]
            if (audit and emf) or time.monotonic() > limit:
                break
            time.sleep(0.05)
    finally:
        function.stop()
    assert len(audit) == 1, "\n".join(lines)
    assert json.loads(audit[0])["level"] == "INFO"
    assert len(emf) == 1 and json.loads(emf[0])["Records"] == 1, "\n".join(lines)
