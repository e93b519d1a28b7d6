"""Fixtures for the HTTP fuzz tests: moto and the real function under `cargo lambda watch`.

Run with the stack venv's python (`make fuzz-http`); schemathesis and the OpenAPI checker run in
their own venv (.tools/schemathesis), started as subprocesses. The stack is tools/stack.py, used
as a library as the end-to-end tests do. A missing tool fails the tests; it never skips them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import stack as driver  # noqa: E402  (tools/stack.py imports only the standard library up front)

SCHEMATHESIS_BIN = ROOT / ".tools" / "schemathesis" / "bin"
ANONYMOUS_POLICY = ROOT / "policy" / "anonymous-test.json"


def pytest_configure(config):
    """SIGTERM and SIGHUP stop the session like Ctrl-C does, so the stack's teardown runs."""
    import signal

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


@pytest.fixture(scope="session")
def schemathesis_bin() -> Path:
    for tool in ("schemathesis", "python"):
        if not (SCHEMATHESIS_BIN / tool).exists():
            pytest.fail(f"{SCHEMATHESIS_BIN / tool} is missing: run `make fuzz-http`", pytrace=False)
    return SCHEMATHESIS_BIN


@pytest.fixture(scope="session")
def stack():
    """moto on a free port with the demo pools; stopped (whole process tree) at session end."""
    problem = None
    try:
        driver.check_tools()
    except driver.StackError as e:
        problem = str(e)
    if problem:
        pytest.fail(f"the fuzz tests need the local stack tools: {problem}", pytrace=False)
    with driver.Stack(name="fuzz-http") as s:
        s.seed()
        yield s


@pytest.fixture(scope="session")
def demo_function(stack):
    """The function with the demo policy: the sample events' documented world."""
    return _start(stack, "function-demo")


@pytest.fixture(scope="session")
def anonymous_function(stack):
    """The function with policy/anonymous-test.json: anonymous callers may reset in the demo pool."""
    return _start(stack, "function-anonymous", POLICY_FILE=str(ANONYMOUS_POLICY))


def _start(stack, label: str, **env: str):
    try:
        return stack.start_function(label=label, **env)
    except driver.StackError as e:
        problem = str(e)
    pytest.fail(f"{label} did not start: {problem}", pytrace=False)
