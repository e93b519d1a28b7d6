"""A fake Amazon Cognito user pools endpoint that enforces per-category quotas, for the drain benchmark.

AWS JSON 1.1 protocol: POST / with `X-Amz-Target: AWSCognitoIdentityProviderService.<Operation>`
and a JSON body; answers `application/x-amz-json-1.1`, errors as HTTP 400 with `__type` and
`x-amzn-ErrorType`. SigV4 signatures are not checked. Each quota category (user reads;
account recovery) has a token bucket; a call beyond it is answered `TooManyRequestsException`
without effect. Every answer, throttled or not, takes the configured latency.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field

from httpio import Request, Response, Server

TARGET_PREFIX = "AWSCognitoIdentityProviderService."

READS = "reads"
RECOVERY = "account-recovery"

CATEGORY = {
    "AdminGetUser": READS,
    "AdminListGroupsForUser": READS,
    "AdminResetUserPassword": RECOVERY,
}


class TokenBucket:
    """`rate` tokens per second, at most `capacity` stored; starts full. rate <= 0: unlimited."""

    def __init__(self, rate: float, capacity: float, clock=time.monotonic):
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Counters:
    calls: collections.Counter = field(default_factory=collections.Counter)  # by operation
    throttled: collections.Counter = field(default_factory=collections.Counter)  # by operation
    resets: collections.Counter = field(default_factory=collections.Counter)  # by username
    other_errors: collections.Counter = field(default_factory=collections.Counter)  # by __type
    # monotonic arrival time of every admitted call, by category (for the peak-rate figure)
    admitted: dict = field(default_factory=lambda: collections.defaultdict(list))

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_throttled(self) -> int:
        return sum(self.throttled.values())


def sub_of(username: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(username.encode()).digest()[:16], version=4))


class FakeCognito:
    def __init__(self, reset_rps: float = 20.0, read_rps: float = 60.0, latency_s: float = 0.020,
                 burst_s: float = 1.0, pool_id: str = "us-west-2_drainpool1",
                 groups: tuple[str, ...] = ("staff",)):
        self.latency_s = latency_s
        self.pool_id = pool_id
        self.groups = list(groups)
        self.buckets = {
            READS: TokenBucket(read_rps, read_rps * burst_s),
            RECOVERY: TokenBucket(reset_rps, reset_rps * burst_s),
        }
        self.counters = Counters()
        self.started = time.monotonic()
        self.server = Server(self.handle, "fake-cognito")

    async def start(self) -> int:
        return await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.server.port

    def reset_counters(self) -> None:
        self.counters = Counters()
        self.started = time.monotonic()
        for b in self.buckets.values():
            b.tokens, b.stamp = b.capacity, b.clock()

    async def handle(self, req: Request) -> Response:
        target = req.headers.get("x-amz-target", "")
        op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        if req.method != "POST" or op not in CATEGORY:
            return error(400, "UnknownOperationException", "unknown operation %r" % target)
        self.counters.calls[op] += 1
        category = CATEGORY[op]
        admitted = self.buckets[category].take()
        if admitted:
            self.counters.admitted[category].append(time.monotonic())
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if not admitted:
            self.counters.throttled[op] += 1
            return error(400, "TooManyRequestsException", "Rate exceeded")
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            return error(400, "SerializationException", "body is not JSON")
        pool = body.get("UserPoolId")
        username = body.get("Username")
        if pool != self.pool_id:
            self.counters.other_errors["ResourceNotFoundException"] += 1
            return error(400, "ResourceNotFoundException", "User pool %s does not exist." % pool)
        if not isinstance(username, str) or not username:
            self.counters.other_errors["InvalidParameterException"] += 1
            return error(400, "InvalidParameterException", "Username is required")
        if op == "AdminGetUser":
            return ok({
                "Username": username,
                "UserAttributes": [
                    {"Name": "email", "Value": username},
                    {"Name": "sub", "Value": sub_of(username)},
                    {"Name": "email_verified", "Value": "true"},
                ],
                "Enabled": True,
                "UserStatus": "CONFIRMED",
            })
        if op == "AdminListGroupsForUser":
            return ok({"Groups": [{"GroupName": g, "UserPoolId": self.pool_id} for g in self.groups]})
        self.counters.resets[username] += 1
        return ok({})


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}


def ok(doc: dict) -> Response:
    return Response(200, json.dumps(doc).encode(), _headers())


def error(status: int, type_: str, message: str) -> Response:
    h = _headers()
    h["x-amzn-ErrorType"] = type_
    return Response(status, json.dumps({"__type": type_, "message": message}).encode(), h)
