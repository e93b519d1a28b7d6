"""Fixtures of tests/e2e/test_holes.py (imported there; conftest.py's `stack` and `users` and
conftest_edges.py's Cognito proxy are reused).

- `dynamodb_faults`: the fault proxy (tests/e2e/faultproxy.py) in front of moto's DynamoDB, started
  once per session; every test gets it with no rule and nothing counted.
- `start_direct`: starts the real binary behind the Runtime API with real deadlines
  (faultproxy.DirectFunction), its DynamoDB calls through `dynamodb_faults` and its Cognito calls
  through `cognito_faults`, one attempt per Cognito call, with the test's own settings (cooldown,
  policy file, margin); a fresh process per call (the SDK's retry state is per process), each
  stopped at the end of the test. The guard's client keeps production's settings (3 attempts).
"""

from __future__ import annotations

import pytest

import faultproxy
import stack as driver


@pytest.fixture(scope="session")
def _dynamodb_proxy(stack):
    with faultproxy.FaultProxy(stack.endpoint) as proxy:
        yield proxy


@pytest.fixture
def dynamodb_faults(_dynamodb_proxy):
    """The DynamoDB fault proxy, with no rule and nothing counted; its rules are dropped after."""
    _dynamodb_proxy.reset()
    yield _dynamodb_proxy
    _dynamodb_proxy.reset()


@pytest.fixture
def start_direct(stack, function_binary, _dynamodb_proxy, _cognito_proxy):
    """`start_direct(label, **env)`: a DirectFunction with `env` over the local stack's defaults."""
    started: list[faultproxy.DirectFunction] = []

    def start(label: str, **env: str) -> faultproxy.DirectFunction:
        merged = driver.function_env(
            stack.endpoint,
            **{
                "COGNITO_MAX_ATTEMPTS": "1",
                "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": _cognito_proxy.url,
                "AWS_ENDPOINT_URL_DYNAMODB": _dynamodb_proxy.url,
                **env,
            },
        )
        try:
            function = faultproxy.DirectFunction(function_binary, merged, stack.log_path(label))
        except driver.StackError as e:
            pytest.fail(f"{label} did not start: {e}", pytrace=False)
        started.append(function)
        return function

    yield start
    for function in started:
        function.stop()
