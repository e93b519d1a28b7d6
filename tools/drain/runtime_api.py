"""One simulated Lambda execution environment: a function process behind its own Runtime API.

The Runtime API (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) is what
lambda_runtime 1.x talks to: it long-polls `GET /2018-06-01/runtime/invocation/next` (which must
carry `Lambda-Runtime-Aws-Request-Id` and `Lambda-Runtime-Deadline-Ms`, and should carry
`Lambda-Runtime-Invoked-Function-Arn`), then posts `.../invocation/<id>/response` or
`.../invocation/<id>/error`; a failed start posts `/runtime/init/error`. As on Lambda, an
invocation that outlives the function timeout kills the process, and the next invocation starts
a fresh one (a cold start).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from httpio import Request, Response, Server

PREFIX = "/2018-06-01/runtime"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass



def sampled_trace() -> tuple[str, str]:
    """A new trace's id and the Lambda-Runtime-Trace-Id header of a sampled invocation in it."""
    trace_id = "1-%08x-%s" % (int(time.time()), uuid.uuid4().hex[:24])
    return trace_id, "Root=%s;Parent=%s;Sampled=1" % (trace_id, uuid.uuid4().hex[:16])

class StartError(Exception):
    """The function process did not come up (it exited, or never asked for an invocation)."""


@dataclass
class Result:
    kind: str  # "ok", "error" (the function reported an error), "timeout", "crash"
    body: bytes = b""
    duration_s: float = 0.0


class Instance:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 function_arn: str):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.function_arn = function_arn
        self.server = Server(self._handle, "runtime-api-" + name)
        self.proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None
        self._idle = asyncio.Event()  # a /next request is waiting
        self._next: asyncio.Future | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._killing = False
        self.starts = 0
        self.crashes = 0
        self.init_errors: list[bytes] = []
        # Init time: from spawning the process to its first `invocation/next` (the first start's,
        # and every start's).
        self.init_s: float | None = None
        self.inits_s: list[float] = []
        self._spawned_at: float | None = None
        # Lambda-Runtime-Trace-Id of every invocation; None: a fresh unsampled one each time.
        self.trace_header: str | None = None
        # The process gets SIGKILL when this one dies (prctl in the child, between fork and
        # exec). Python can only do that from a preexec_fn, which makes it fork the whole
        # interpreter and run Python in the child instead of its vfork/exec: about 5.5 ms a spawn
        # on the 2-core development machine, counted in init_s. The init benchmark turns it off
        # (a function whose Runtime API is gone ends on its own: its /next fails).
        self.die_with_parent = True

    # ---- the Runtime API --------------------------------------------------------------------

    async def _handle(self, req: Request) -> Response:
        path = req.path.split("?", 1)[0]
        if req.method == "GET" and path == PREFIX + "/invocation/next":
            if self._spawned_at is not None:
                init = time.monotonic() - self._spawned_at
                self._spawned_at = None
                self.inits_s.append(init)
                if self.init_s is None:
                    self.init_s = init
            fut = asyncio.get_running_loop().create_future()
            self._next = fut
            self._idle.set()
            try:
                request_id, event, deadline_ms = await fut
            except asyncio.CancelledError:
                return Response(410, b"", {"Connection": "close"})
            return Response(200, event, {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
                "Lambda-Runtime-Trace-Id": self.trace_header or "Root=1-%08x-%s;Parent=%s;Sampled=0" % (
                    int(time.time()), uuid.uuid4().hex[:24], uuid.uuid4().hex[:16]),
            })
        if req.method == "POST" and path.startswith(PREFIX + "/invocation/"):
            rest = path[len(PREFIX + "/invocation/"):]
            request_id, _, verb = rest.partition("/")
            fut = self._pending.pop(request_id, None)
            if verb not in ("response", "error"):
                return Response(404, b'{"errorType":"NotFound"}')
            if fut is None:
                return Response(400, b'{"errorType":"InvalidRequestID"}')
            if not fut.done():
                fut.set_result(Result("ok" if verb == "response" else "error", req.body))
            return Response(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        if req.method == "POST" and path == PREFIX + "/init/error":
            self.init_errors.append(req.body)
            return Response(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        return Response(404, b'{"errorType":"NotFound"}')

    # ---- the process --------------------------------------------------------------------------

    async def start(self, ready_timeout_s: float) -> None:
        """Starts the Runtime API and the process; returns once it asks for an invocation."""
        if self.server.server is None:
            await self.server.start()
        await self._spawn()
        await self.wait_ready(ready_timeout_s)

    async def _spawn(self) -> None:
        env = dict(self.env)
        env["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:%d" % self.server.port
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = "%s/%d" % (self.name, self.starts)
        self._idle.clear()
        self._next = None
        log = open(self.log_path, "ab")
        try:
            log.write(b"---- start %d of %s at %s\n" % (self.starts, self.name.encode(),
                                                        time.strftime("%H:%M:%S").encode()))
            log.flush()
            self._spawned_at = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
        finally:
            log.close()
        self.starts += 1
        self._killing = False
        self._watch = asyncio.create_task(self._watch_exit(self.proc))

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if proc is not self.proc or self._killing:
            return
        # an unexpected exit: whatever it was running fails, and it is not waiting any more
        self.crashes += 1
        self._idle.clear()
        self._fail_pending(Result("crash"))

    def _fail_pending(self, result: Result) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(result)
        self._pending.clear()
        if self._next is not None and not self._next.done():
            self._next.cancel()
        self._next = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    async def wait_ready(self, timeout_s: float) -> None:
        """Waits, at most timeout_s, until the process asks for its next invocation."""
        deadline = time.monotonic() + timeout_s
        while not self._idle.is_set():
            if self.proc is None or self.proc.returncode is not None:
                code = None if self.proc is None else self.proc.returncode
                raise StartError("%s exited (status %s) before asking for an invocation; log %s:\n%s"
                                 % (self.name, code, self.log_path, self.log_tail()))
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartError("%s did not ask for an invocation within %.0f s; log %s:\n%s"
                                 % (self.name, timeout_s, self.log_path, self.log_tail()))
            try:
                await asyncio.wait_for(self._idle.wait(), min(left, 0.25))
            except asyncio.TimeoutError:
                pass

    async def ensure_ready(self, timeout_s: float) -> None:
        """A fresh process if the last one died or was killed (a cold start), then wait_ready."""
        if self.proc is None or self.proc.returncode is not None:
            await self._spawn()
        await self.wait_ready(timeout_s)

    async def invoke(self, event: bytes, timeout_s: float) -> Result:
        """One invocation; the process must be waiting (ensure_ready). Kills it on timeout."""
        assert self._next is not None and not self._next.done(), "instance is not waiting"
        loop = asyncio.get_running_loop()
        request_id = str(uuid.uuid4())
        done = loop.create_future()
        self._pending[request_id] = done
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + timeout_s * 1000)
        nxt, self._next = self._next, None
        self._idle.clear()
        nxt.set_result((request_id, event, deadline_ms))
        try:
            result = await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except asyncio.TimeoutError:
            self._pending.pop(request_id, None)
            await self.kill()
            result = Result("timeout")
        result.duration_s = time.monotonic() - started
        return result

    async def kill(self, grace_s: float = 0.0) -> None:
        """Stops the process: SIGTERM and up to grace_s to exit, then SIGKILL; always reaped."""
        proc = self.proc
        if proc is None:
            return
        self._killing = True
        self._idle.clear()
        self._fail_pending(Result("crash"))
        if proc.returncode is None:
            try:
                if grace_s > 0:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), grace_s)
                    except asyncio.TimeoutError:
                        pass
                if proc.returncode is None:
                    proc.kill()
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                pass
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def close(self) -> None:
        await self.kill(grace_s=1.0)
        await self.server.close()


def env_overrides(pairs: list[str]) -> dict[str, str]:
    """The scripts' `--env NAME=VALUE` arguments (repeatable; the last of a name wins) as a dict;
    ValueError for one without `=`."""
    for kv in pairs:
        if "=" not in kv:
            raise ValueError("--env takes NAME=VALUE, not %r" % kv)
    return dict(kv.partition("=")[::2] for kv in pairs)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
