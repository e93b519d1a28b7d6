"""Fixtures for the end-to-end tests: one local stack per session, reseeded before every test.

The stack is tools/stack.py, the driver behind `make demo`: moto server as Cognito and DynamoDB and
the real `cognito-reset` binary under `cargo lambda watch`. Each function configuration (normal, dry
run, Cognito unreachable, the guard's variants) is its own watch process, started once and stopped at
the end of the session. Every function is guarded: GUARD_TABLE names moto's guard table, which the
reseed before each test creates anew (empty), with the local stack's 30 s cooldown unless stated.
A missing tool fails the tests with a message; it never skips them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import stack as driver  # noqa: E402  (tools/stack.py imports only the standard library up front)


def pytest_configure(config):
    """SIGTERM and SIGHUP stop the session like Ctrl-C does, so the stack's teardown runs.

    SIGINT is set too: a shell starts background jobs with it ignored.
    """
    import signal

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


@pytest.fixture(scope="session")
def stack():
    """moto on a free port, with the demo pools; stopped (whole process tree) at session end."""
    problem = None
    try:
        driver.check_tools()
    except driver.StackError as e:
        problem = str(e)
    if problem:
        pytest.fail(f"the end-to-end tests need the local stack tools: {problem}", pytrace=False)
    with driver.Stack(name="e2e") as s:
        yield s


@pytest.fixture(scope="session")
def function(stack):
    """The function with the demo policy, pointed at moto."""
    return _start(stack, "function")


@pytest.fixture(scope="session")
def dry_run_function(stack):
    """The same function with DRY_RUN=true."""
    return _start(stack, "function-dry-run", DRY_RUN="true")


@pytest.fixture(scope="session")
def unreachable_function(stack):
    """Cognito down, the guard up: the SDK's service-specific endpoint sends Cognito's calls to a
    loopback port where nothing listens, while DynamoDB (AWS_ENDPOINT_URL) is still moto."""
    closed = driver.free_port()
    return _start(
        stack,
        "function-unreachable",
        AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=f"http://127.0.0.1:{closed}",
        COGNITO_MAX_ATTEMPTS="1",
        COGNITO_TIMEOUT_MS="500",
    )


@pytest.fixture(scope="session")
def concurrent_function(stack):
    """The guarded function with up to 10 processes at once (Lambda's execution environments)."""
    return _start(stack, "function-concurrent", concurrency=10)


@pytest.fixture(scope="session")
def no_cooldown_function(stack):
    """RESET_COOLDOWN_SECONDS=0: only the idempotency keys stand between a repeat and a reset."""
    return _start(stack, "function-no-cooldown", RESET_COOLDOWN_SECONDS="0")


@pytest.fixture(scope="session")
def short_cooldown_function(stack):
    """RESET_COOLDOWN_SECONDS=2, to watch a cooldown end."""
    return _start(stack, "function-short-cooldown", RESET_COOLDOWN_SECONDS="2")


@pytest.fixture(scope="session")
def missing_table_function(stack):
    """GUARD_TABLE names a table that does not exist: the guard is unavailable."""
    return _start(stack, "function-missing-table", GUARD_TABLE="cognito-reset-no-such-table")


def _start(stack, label: str, concurrency: int = 1, **env: str):
    try:
        return stack.start_function(label=label, concurrency=concurrency, **env)
    except driver.StackError as e:
        problem = str(e)
    pytest.fail(f"{label} did not start: {problem}", pytrace=False)


@pytest.fixture
def users(stack):
    """Reseed moto (pool ids stay fixed, the guard table is empty, the recording of requests starts
    afresh) and return a reader of the demo users' current state."""
    stack.seed()
    return stack.user_states
