"""Where the function reads its TLS trust roots from (src/aws/roots.rs, issue 26's cold start).

With neither `SSL_CERT_FILE` nor `SSL_CERT_DIR` set, the function reads the system's bundle file
alone, not the certificate directories beside it; with either set, it leaves the choice to them.
The start-up line names what was read (`tls_roots`), and a reset goes through either way. The real
binary runs behind the Runtime API emulator of tests/e2e/faultproxy.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import faultproxy
import stack as driver
from conftest_edges import function_binary  # noqa: F401  (fixture)
from test_edges import request_for

BUNDLE_SUFFIX = " (the system's bundle)"


def start_and_reset(stack, function_binary, name: str, user: str, **extra: str) -> str:  # noqa: F811
    """One reset through the binary; the `tls_roots` of its start-up line."""
    log = stack.log_path(name)
    env = driver.function_env(stack.endpoint, AWS_LAMBDA_LOG_FORMAT="JSON", **extra)
    function = faultproxy.DirectFunction(function_binary, env, log)
    try:
        answer = function.invoke(request_for(user), faultproxy.now_ms() + 20_000)
    finally:
        function.stop()
    assert answer["statusCode"] == 200, answer
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"configuration loaded"' in line]
    assert len(lines) == 1, log.read_text()
    return lines[0]["fields"]["tls_roots"]


def test_with_nothing_set_the_roots_are_the_systems_bundle_alone(stack, users, function_binary, monkeypatch):  # noqa: F811
    # The function's environment is the test's (tools/stack.py's base_env): neither variable in it.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    roots = start_and_reset(stack, function_binary, "function-roots-default", "diego@example.com")
    assert roots.endswith(BUNDLE_SUFFIX), roots
    bundle = Path(roots[: -len(BUNDLE_SUFFIX)])
    assert bundle.is_file() and b"-----BEGIN CERTIFICATE-----" in bundle.read_bytes(), roots


def test_a_root_variable_that_is_set_is_left_to_choose(stack, users, function_binary, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    system = start_and_reset(stack, function_binary, "function-roots-probe", "diego@example.com")
    assert system.endswith(BUNDLE_SUFFIX), system
    # A directory of the operator's own (holding the system's roots: with no valid root at all,
    # the SDK's debug build panics at its first connector, whatever chose them). The function
    # must not replace it by the bundle.
    (tmp_path / "roots.pem").write_bytes(Path(system[: -len(BUNDLE_SUFFIX)]).read_bytes())
    roots = start_and_reset(stack, function_binary, "function-roots-dir", "erin@example.com",
                            SSL_CERT_DIR=str(tmp_path))
    assert roots == "SSL_CERT_FILE / SSL_CERT_DIR", roots
