"""Loopback helpers for the edge-case end-to-end tests (tests/e2e/test_edges.py). Standard library only.

- `FaultProxy`: an HTTP proxy between the function and moto's Cognito. The function's
  AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER points at it; it reads each request's `X-Amz-Target`
  (`AWSCognitoIdentityProviderService.AdminResetUserPassword`, ...), counts it, and answers as the
  test's rule for that operation says: forward to moto, forward and hold the answer (for N ms, or
  until a wall-clock moment), answer `TooManyRequestsException` without forwarding, or forward and
  then answer `InternalErrorException` (the reset happened, the answer says it failed).
- The same proxy in front of moto's DynamoDB (the function's AWS_ENDPOINT_URL_DYNAMODB): its
  operations are the `X-Amz-Target`s `DynamoDB_20120810.<Operation>` (`PutItem`, `UpdateItem`, ...).
  `add_rule` adds rules that apply to the first N requests of an operation whose body contains a
  given text (the guard's user items are `user#...`, its keys `key#...`), among them "forward, then
  answer 500" (the write landed, its answer is lost) and "forward, then cut the connection".
  then answer `InternalErrorException` (the reset happened, the answer says it failed). For what
  moto does not model (issue 25): answer Cognito's `LimitExceededException` with its real message
  (`limit_exceeded`), a Lambda trigger's failure (`trigger_failure`), or forward and change fields
  of moto's JSON answer (`patched`: e.g. a user's `UserStatus` `EXTERNAL_PROVIDER`).
- `RuntimeApi` and `DirectFunction`: the real `cognito-reset` binary behind a small Lambda Runtime
  API emulator that sends a real `Lambda-Runtime-Deadline-Ms` (now + N ms), which
  `cargo lambda watch` does not (it sends its timeout, which the function reads as 15 minutes).

Every server binds 127.0.0.1 on a port the OS picks, serves each connection on its own thread, and
stops with its connections closed; every wait is bounded. Nothing here reaches beyond loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import stack as driver

LOOPBACK = "127.0.0.1"
COGNITO_TARGET = driver.COGNITO_TARGET  # "AWSCognitoIdentityProviderService."
DYNAMODB_TARGET = "DynamoDB_20120810."
JSON_11 = "application/x-amz-json-1.1"
JSON_10 = "application/x-amz-json-1.0"  # DynamoDB's protocol
UPSTREAM_TIMEOUT_S = 30.0
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
}


def now_ms() -> int:
    return int(time.time() * 1000)


# ---- the fault proxy in front of Cognito --------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What the proxy does with one operation's requests.

    `forward`: send the request to moto first. `delay_ms`: then hold the answer this long.
    `answer_at_ms`: hold the answer until this wall-clock moment (epoch ms), at the earliest.
    `status` and `error`: answer with this status and AWS JSON error body (`__type`, `message`)
    instead of moto's answer (or without asking moto at all, with `forward=False`).
    `patch`: (field, value) pairs set in moto's JSON answer (top-level fields) before it is passed on.
    """

    forward: bool = True
    delay_ms: int = 0
    answer_at_ms: int | None = None
    status: int | None = None
    error: tuple[str, str] | None = None
    # `cut`: give no answer at all: close the connection (after forwarding, when `forward`).
    cut: bool = False
    patch: tuple[tuple[str, str], ...] = ()


FORWARD = Rule()


def delayed(ms: int) -> Rule:
    """Forward, then hold the answer `ms` milliseconds."""
    return Rule(delay_ms=ms)


def throttled(answer_at_ms: int | None = None) -> Rule:
    """400 TooManyRequestsException without forwarding (optionally answered at a wall-clock moment)."""
    return Rule(
        forward=False,
        answer_at_ms=answer_at_ms,
        status=400,
        error=("TooManyRequestsException", "Rate exceeded"),
    )


def answered_at(answer_at_ms: int) -> Rule:
    """Forward, then hold moto's answer until the wall-clock moment `answer_at_ms` (epoch ms)."""
    return Rule(answer_at_ms=answer_at_ms)


def internal_error_after_forwarding() -> Rule:
    """Forward (moto performs it), then answer 500 InternalErrorException instead of moto's answer."""
    return Rule(status=500, error=("InternalErrorException", "boom"))


def server_error_after_forwarding() -> Rule:
    """DynamoDB: forward (moto performs the write), then answer 500 InternalServerError: the write
    landed and its answer is lost, so the SDK retries it."""
    return Rule(status=500, error=("InternalServerError", "injected after the write"))


def cut_after_forwarding() -> Rule:
    """Forward (moto performs it), then close the connection without an answer."""
    return Rule(cut=True)


def server_error() -> Rule:
    """DynamoDB: 500 InternalServerError without forwarding (the write did not land)."""
    return Rule(forward=False, status=500, error=("InternalServerError", "injected, not forwarded"))


@dataclass
class Matching:
    """A rule for the first `times` requests of `operation` whose body contains `body_contains`
    (every one with `times` None); `used` counts the requests it answered."""

    operation: str
    rule: Rule
    body_contains: bytes | None = None
    times: int | None = None
    used: int = 0

    def takes(self, operation: str, body: bytes) -> bool:
        return (
            operation == self.operation
            and (self.body_contains is None or self.body_contains in body)
            and (self.times is None or self.used < self.times)
        )
# Cognito's messages for its limits, as real Cognito sends them (quoted in issue 25).
DAILY_EMAIL_LIMIT = (
    "Exceeded daily email limit for the operation or the account. If a higher limit is required, "
    "please configure your user pool to use your own Amazon SES configuration for sending email."
)
ATTEMPT_LIMIT = "Attempt limit exceeded, please try after some time."


def limit_exceeded(message: str) -> Rule:
    """400 LimitExceededException with `message`, without forwarding (Cognito sent nothing)."""
    return Rule(forward=False, status=400, error=("LimitExceededException", message))


def trigger_failure(kind: str, forward: bool = False) -> Rule:
    """400 `kind` (UserLambdaValidationException, ...), as Cognito answers a pool trigger's
    failure; `forward=True`: moto performs the call first (the trigger ran, then failed)."""
    return Rule(forward=forward, status=400, error=(kind, f"CustomMessage failed with error {kind}."))


def patched(**fields: str) -> Rule:
    """Forward, then set these top-level fields in moto's JSON answer (e.g. UserStatus)."""
    return Rule(patch=tuple(fields.items()))


@dataclass
class Seen:
    """One request the proxy received: its operation, when it came and when it was answered."""

    operation: str
    arrived_ms: int
    answered_ms: int = 0
    status: int = 0
    forwarded: bool = False
    # The body as received, and whether an `add_rule` rule answered it (and cut: no answer).
    body: bytes = b""
    faulted: bool = False
    cut: bool = False


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _ProxyHandler)


class _TrackedHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1; its connection is tracked so that stopping the server closes it."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, *_args) -> None:  # quiet: the tests report what matters
        pass

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class _ProxyHandler(_TrackedHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server spelling
        self.server.proxy._handle(self)

    do_GET = do_POST  # noqa: N815


class FaultProxy:
    """The Cognito fault proxy (see the module docstring); a context manager.

    Rules are per operation (`AdminResetUserPassword`, ...); an operation without a rule is
    forwarded unchanged. `reset()` drops every rule and everything counted.
    """

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or LOOPBACK
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self._matching: list[Matching] = []
        self._seen: list[Seen] = []
        self._stopping = threading.Event()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> FaultProxy:
        self._server = _ProxyServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        """Stop serving, release held answers, close every connection; the port is free after."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the tests use --

    def set_rule(self, operation: str, rule: Rule) -> None:
        with self._lock:
            self._rules[operation] = rule

    def add_rule(
        self, operation: str, rule: Rule, *, body_contains: str | None = None, times: int | None = None
    ) -> Matching:
        """`rule` for the first `times` requests of `operation` (all, with None) whose body contains
        `body_contains`; checked in the order added, before `set_rule`'s rules. The returned
        `Matching` counts (`used`) the requests it answered."""
        matching = Matching(operation, rule, body_contains.encode() if body_contains else None, times)
        with self._lock:
            self._matching.append(matching)
        return matching

    def clear_rules(self) -> None:
        """Drop every rule (set_rule's and add_rule's); keep what was counted."""
        with self._lock:
            self._rules.clear()
            self._matching.clear()

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._matching.clear()
            self._seen.clear()

    def seen(self, operation: str | None = None) -> list[Seen]:
        """The requests received since the last reset (of `operation`), in arrival order."""
        with self._lock:
            return [s for s in self._seen if operation is None or s.operation == operation]

    def count(self, operation: str) -> int:
        return len(self.seen(operation))

    # -- serving --

    def _handle(self, handler: _ProxyHandler) -> None:
        body = handler.read_body()
        target = handler.headers.get("x-amz-target", "")
        operation = target
        for prefix in (COGNITO_TARGET, DYNAMODB_TARGET):
            if target.startswith(prefix):
                operation = target[len(prefix):]
        seen = Seen(operation=operation, arrived_ms=now_ms(), body=body)
        with self._lock:
            self._seen.append(seen)
            rule = self._rules.get(operation, FORWARD)
            for matching in self._matching:
                if matching.takes(operation, body):
                    matching.used += 1
                    rule, seen.faulted = matching.rule, True
                    break
        content_type = JSON_10 if target.startswith(DYNAMODB_TARGET) else JSON_11
        status, headers, answer = 502, [("Content-Type", content_type)], b'{"__type":"ProxyError"}'
        if rule.forward:
            try:
                status, headers, answer = self._forward(handler, body)
                seen.forwarded = True
            except OSError as e:
                answer = json.dumps({"__type": "ProxyError", "message": str(e)}).encode()
        if rule.cut:
            seen.cut = True
            seen.answered_ms = now_ms()
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if rule.patch and seen.forwarded and 200 <= status < 300:
            with contextlib.suppress(ValueError):
                document = json.loads(answer or b"{}")
                document.update(dict(rule.patch))
                answer = json.dumps(document).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "x-amz-crc32"]
        if rule.status is not None:
            kind, message = rule.error or ("InternalErrorException", "injected")
            status = rule.status
            answer = json.dumps({"__type": kind, "message": message}).encode()
            headers = [
                ("Content-Type", content_type),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                ("x-amzn-ErrorType", kind),
            ]
        hold_until = time.monotonic() + rule.delay_ms / 1000
        if rule.answer_at_ms is not None:
            hold_until = max(hold_until, time.monotonic() + (rule.answer_at_ms - now_ms()) / 1000)
        left = hold_until - time.monotonic()
        if left > 0:
            self._stopping.wait(left)  # the fault itself: the answer is late (a stop ends it)
        seen.status = status
        seen.answered_ms = now_ms()
        with contextlib.suppress(OSError):
            handler.answer(status, answer, headers)

    def _forward(self, handler: _ProxyHandler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            headers["Content-Length"] = str(len(body))
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, answer
        finally:
            conn.close()


# ---- a Lambda Runtime API with real deadlines ------------------------------------------------------

RUNTIME_PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = f"arn:aws:lambda:{driver.REGION}:123456789012:function:{driver.FUNCTION}"


@dataclass
class Invocation:
    request_id: str
    event: bytes
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    kind: str = ""  # "response" or "error"
    body: bytes = b""
    trace_id: str | None = None  # Lambda-Runtime-Trace-Id; None: a fresh unsampled one


class _RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, api: RuntimeApi):
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _RuntimeHandler)


class _RuntimeHandler(_TrackedHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.api._get(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.api._post(self)


class RuntimeApi:
    """The Lambda Runtime API for one function process, one invocation at a time.

    `GET .../invocation/next` long-polls until `invoke()` hands it an event, with
    `Lambda-Runtime-Deadline-Ms` set to the deadline the test chose (epoch milliseconds, as Lambda
    sends it); `POST .../invocation/<id>/response|error` ends the invocation.
    """

    def __init__(self):
        self._queue: queue.Queue[Invocation] = queue.Queue()
        self._pending: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._waiting = threading.Event()  # a /next request is waiting
        self._stopping = threading.Event()
        self.init_errors: list[bytes] = []
        self._server = _RuntimeServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def waiting(self) -> bool:
        """Whether the function process is asking for its next invocation."""
        return self._waiting.is_set()

    def submit(self, event: dict, deadline_ms: int, trace_id: str | None = None) -> Invocation:
        invocation = Invocation(str(uuid.uuid4()), json.dumps(event).encode(), deadline_ms, trace_id=trace_id)
        with self._lock:
            self._pending[invocation.request_id] = invocation
        self._queue.put(invocation)
        return invocation

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        with self._server.connections_lock:
            for conn in list(self._server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)

    def _get(self, handler: _RuntimeHandler) -> None:
        if handler.path.split("?", 1)[0] != RUNTIME_PREFIX + "/invocation/next":
            handler.answer(404, b'{"errorType":"NotFound"}', [("Content-Type", "application/json")])
            return
        self._waiting.set()
        try:
            while True:
                if self._stopping.is_set():
                    handler.close_connection = True
                    return
                try:
                    invocation = self._queue.get(timeout=0.2)
                    break
                except queue.Empty:
                    continue
        finally:
            self._waiting.clear()
        handler.answer(200, invocation.event, [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN),
            ("Lambda-Runtime-Trace-Id",
             invocation.trace_id or f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"),
        ])

    def _post(self, handler: _RuntimeHandler) -> None:
        body = handler.read_body()
        path = handler.path.split("?", 1)[0]
        accepted = (202, b'{"status":"OK"}', [("Content-Type", "application/json")])
        if path == RUNTIME_PREFIX + "/init/error":
            self.init_errors.append(body)
            handler.answer(*accepted)
            return
        rest = path[len(RUNTIME_PREFIX + "/invocation/"):] if path.startswith(RUNTIME_PREFIX + "/invocation/") else ""
        request_id, _, verb = rest.partition("/")
        with self._lock:
            invocation = self._pending.pop(request_id, None) if verb in ("response", "error") else None
        if invocation is None:
            handler.answer(400, b'{"errorType":"InvalidRequestID"}', [("Content-Type", "application/json")])
            return
        invocation.kind, invocation.body = verb, body
        invocation.done.set()
        handler.answer(*accepted)


def build_function() -> Path:
    """`cargo build --locked --bin cognito-reset` (a no-op when up to date); the binary's path, as
    cargo reports it (so CARGO_TARGET_DIR is honoured). Bounded like the stack's cold start."""
    # --features enqueue, as every debug build here (the Makefile's ENQUEUE): another feature set
    # recompiles tokio and the whole AWS SDK above it.
    argv = ["cargo", "build", "--locked", "--features", "enqueue", "--bin", driver.FUNCTION,
            "--message-format=json-render-diagnostics"]
    try:
        done = subprocess.run(
            argv, cwd=driver.ROOT, env=driver.base_env(), capture_output=True, text=True,
            timeout=driver.FUNCTION_READY_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise driver.StackError(f"{' '.join(argv)} did not finish within {driver.FUNCTION_READY_TIMEOUT_S:.0f}s") from None
    executable = None
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if message.get("reason") == "compiler-artifact" and message.get("executable") \
                    and message.get("target", {}).get("name") == driver.FUNCTION:
                executable = message["executable"]
    if done.returncode != 0 or executable is None:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise driver.StackError(f"{' '.join(argv)} failed (status {done.returncode}):\n{tail}")
    return Path(executable)


class DirectFunction:
    """The `cognito-reset` binary as its own process behind a `RuntimeApi`: one execution
    environment whose invocations carry the deadline the test chooses."""

    READY_TIMEOUT_S = 60.0

    def __init__(self, binary: Path, env: dict[str, str], log: Path):
        self.api = RuntimeApi()
        self.log = log
        environment = driver.base_env() | env | {
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_LAMBDA_FUNCTION_NAME": driver.FUNCTION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{driver.FUNCTION}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "edges/direct",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        try:
            self.service = driver._spawn("cognito-reset (direct)", [str(binary)], environment, self.api.port, log)
        except BaseException:
            self.api.stop()
            raise
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while not self.api.waiting():
            code = self.service.proc.poll()
            if code is not None:
                raise driver.StackError(
                    f"{driver.FUNCTION} exited with status {code} before asking for an invocation:\n"
                    f"{self.service.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise driver.StackError(
                    f"{driver.FUNCTION} did not ask for an invocation within {self.READY_TIMEOUT_S:.0f}s:\n"
                    f"{self.service.log_tail()}"
                )
            time.sleep(0.05)

    def invoke(self, event: dict, deadline_ms: int, timeout: float = driver.INVOKE_TIMEOUT_S,
               trace_id: str | None = None) -> dict:
        """One invocation whose deadline is `deadline_ms` (epoch ms); the function's answer.

        Waits for the answer at most until the deadline plus a few seconds (and `timeout`), failing
        early if the process exits.
        """
        self._wait_ready()
        invocation = self.api.submit(event, deadline_ms, trace_id)
        limit = min(time.monotonic() + timeout, time.monotonic() + (deadline_ms - now_ms()) / 1000 + 5.0)
        while not invocation.done.wait(0.05):
            if self.service.proc.poll() is not None:
                raise driver.StackError(f"{driver.FUNCTION} exited during an invoke:\n{self.service.log_tail()}")
            if time.monotonic() > limit:
                raise driver.StackError(
                    f"{driver.FUNCTION} did not answer by its deadline (+5 s):\n{self.service.log_tail()}"
                )
        if invocation.kind != "response":
            raise driver.StackError(f"{driver.FUNCTION} reported an error: {invocation.body[:500]!r}")
        return json.loads(invocation.body)

    def stop(self) -> None:
        try:
            self.api.stop()
        finally:
            self.service.stop()
