"""Fixtures of tests/e2e/test_edges.py (imported there; conftest.py's `stack` and `users` are reused).

- `cognito_faults`: the Cognito fault proxy (tests/e2e/faultproxy.py) in front of moto, started
  once per session; every test gets it with no rule and nothing counted.
- `proxied_function`: the function under `cargo lambda watch` (through stack.start_function, like
  every other function of the session) whose Cognito calls go through the proxy, with the SDK
  allowed 3 attempts per call (COGNITO_MAX_ATTEMPTS=3, the default, set explicitly).
- `deadline_function`: the real binary behind a Runtime API that sends real deadlines, with
  DEADLINE_MARGIN_MS=MARGIN_MS, one attempt per Cognito call and Cognito behind the proxy; a
  fresh process for every test (the SDK's adaptive retry state is per process).
"""

from __future__ import annotations

import pytest

import faultproxy
import stack as driver

# The deadline margin of `deadline_function` (the function's default is 2000 ms; a little more
# here leaves room for a busy 2-core machine on each side of the window under test).
MARGIN_MS = 3000


def _start(stack, label: str, **env: str):
    try:
        return stack.start_function(label=label, **env)
    except driver.StackError as e:
        problem = str(e)
    pytest.fail(f"{label} did not start: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def _cognito_proxy(stack):
    with faultproxy.FaultProxy(stack.endpoint) as proxy:
        yield proxy


@pytest.fixture
def cognito_faults(_cognito_proxy):
    """The fault proxy, with no rule and nothing counted; its rules are dropped after the test."""
    _cognito_proxy.reset()
    yield _cognito_proxy
    _cognito_proxy.reset()


@pytest.fixture(scope="session")
def proxied_function(stack, _cognito_proxy):
    """The guarded function (30 s cooldown) whose Cognito is the fault proxy; 3 SDK attempts."""
    return _start(
        stack,
        "function-proxied",
        AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=_cognito_proxy.url,
        COGNITO_MAX_ATTEMPTS="3",
    )


@pytest.fixture(scope="session")
def function_binary(stack):
    """The freshly built `cognito-reset` binary (cargo build; a no-op when up to date)."""
    try:
        return faultproxy.build_function()
    except driver.StackError as e:
        problem = str(e)
    pytest.fail(f"the function binary could not be built: {problem}", pytrace=False)


@pytest.fixture
def deadline_function(stack, function_binary, _cognito_proxy):
    """The binary behind a Runtime API with real deadlines (see the module docstring)."""
    env = driver.function_env(
        stack.endpoint,
        DEADLINE_MARGIN_MS=str(MARGIN_MS),
        COGNITO_MAX_ATTEMPTS="1",
        AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=_cognito_proxy.url,
    )
    log = stack.log_path("function-deadline")
    try:
        function = faultproxy.DirectFunction(function_binary, env, log)
    except driver.StackError as e:
        problem = str(e)
    else:
        try:
            yield function
        finally:
            function.stop()
        return
    pytest.fail(f"the function behind the deadline Runtime API did not start: {problem}", pytrace=False)
