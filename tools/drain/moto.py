"""moto server as the drain benchmark's DynamoDB: the guard table (and the fleet's pacing buckets in
it) on loopback. Standard library only: moto comes from the local stack's venv
(`make tools` installs it into .tools/stack/), and is spoken to in DynamoDB's JSON 1.0 protocol.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from runtime_api import _die_with_parent

# moto routes a request to a service by the credential scope of its (unchecked) signature.
AUTHORIZATION = ("AWS4-HMAC-SHA256 Credential=AKIDDRAINBENCHDUMMY/20240101/us-west-2/dynamodb/aws4_request, "
                 "SignedHeaders=host, Signature=00")


class MotoError(Exception):
    """moto did not start, or refused a call."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto server; with `counted`, run through tools/drain/moto_counted.py (the same server,
    counting the operations it serves: `stats`, `reset_stats`) by the Python beside `executable`."""

    def __init__(self, executable: Path, log_path: Path, counted: bool = False):
        self.executable = executable
        self.log_path = log_path
        self.counted = counted
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    async def start(self, timeout_s: float = 30.0) -> None:
        if not self.executable.is_file():
            raise MotoError("%s not found: `make tools` installs moto into .tools/stack/" % self.executable)
        self.port = free_port()
        command = [str(self.executable)]
        if self.counted:
            command = [str(self.executable.parent / "python"), str(Path(__file__).with_name("moto_counted.py"))]
        log = open(self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command, "-H", "127.0.0.1", "-p", str(self.port),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent)
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.proc.returncode is not None:
                raise MotoError("moto exited (status %s); log %s" % (self.proc.returncode, self.log_path))
            try:
                await asyncio.to_thread(self.call, "ListTables", {})
                return
            except (OSError, MotoError):
                if loop.time() > deadline:
                    raise MotoError("moto did not answer within %.0f s; log %s" % (timeout_s, self.log_path))
                await asyncio.sleep(0.2)

    def call(self, operation: str, body: dict) -> dict:
        """One DynamoDB call (blocking)."""
        request = urllib.request.Request(self.endpoint + "/", data=json.dumps(body).encode(), method="POST",
                                         headers={"X-Amz-Target": "DynamoDB_20120810." + operation,
                                                  "Content-Type": "application/x-amz-json-1.0",
                                                  "Authorization": AUTHORIZATION})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise MotoError("%s: HTTP %d %s" % (operation, e.code, e.read()[:300])) from e

    def stats(self) -> dict | None:
        """What moto_counted.py counted since the last reset_stats: {"operations": {"PutItem key":
        n, ...}, "refused": {...} (of them, answered 400), "cpu_s": moto's CPU seconds}; None when
        not counted."""
        if not self.counted:
            return None
        with urllib.request.urlopen(self.endpoint + "/_drain/stats", timeout=10) as r:
            return json.loads(r.read())

    def reset_stats(self) -> None:
        if self.counted:
            urllib.request.urlopen(urllib.request.Request(self.endpoint + "/_drain/reset", data=b"", method="POST"),
                                   timeout=10).close()

    def create_guard_table(self, name: str) -> None:
        """The guard table as the template creates it: `pk` (S) hash key, on demand."""
        self.call("CreateTable", {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        })

    def items(self, table: str) -> list[dict]:
        """Every item of `table`, as DynamoDB JSON."""
        items, start = [], None
        while True:
            body = {"TableName": table, "ConsistentRead": True}
            if start:
                body["ExclusiveStartKey"] = start
            page = self.call("Scan", body)
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
