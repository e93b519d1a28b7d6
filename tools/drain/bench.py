#!/usr/bin/env python3
"""Drain benchmark (issue 11): how fast a mass reset drains through SQS at Cognito's quota.

On loopback only: a fake Cognito with per-category token buckets, a simulated SQS queue with a
redrive policy, and a simulated event source mapping that runs up to M instances of the real
release binary, each its own process behind its own Lambda Runtime API. Every instance count is
run "configured" (COGNITO_RESET_RPS / COGNITO_READ_RPS = quota / M, as docs/mass-reset.md prescribes)
and, unless --modes says otherwise, "limiter off" (both 0). With the guard table in the loop (moto
server, from the local stack's venv): "shared" (the fleet's pacing buckets in the guard table,
MAX_INSTANCES = --max-instances whatever M) and "instance" (the same table, PACING=instance: each
instance at quota / MAX_INSTANCES). --probe adds an instance that takes HTTP requests: one lone
batch of 10 before the drain, then one request every --probe-interval during it. Standard library
only (moto excepted).

    python3 tools/drain/bench.py --requests 2000 --instances 2,4,8
    python3 tools/drain/bench.py --requests 300 --instances 4 --modes configured --check
    python3 tools/drain/bench.py --requests 600 --instances 2,4,8 --modes shared --probe

The last line is for the last configured run:
    drain: <ratio>x ideal, <n> dead-lettered, <n> reset twice
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import platform
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_cognito import READS, RECOVERY, FakeCognito  # noqa: E402
from moto import Moto, MotoError  # noqa: E402
from queue_sim import Message, SimQueue  # noqa: E402
from runtime_api import Instance, StartError, env_overrides, sampled_trace  # noqa: E402

# The local stack's stand-in for the X-Ray daemon (tools/stack.py, standard library only): the
# probe's traces tell how long each of its requests waited for its turns.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stack import StackError, XrayDaemon  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
POOL_ID = "us-west-2_drainpool1"
REGION = "us-west-2"
ACCOUNT = "123456789012"
QUEUE_ARN = "arn:aws:sqs:%s:%s:drain-queue" % (REGION, ACCOUNT)
FUNCTION_NAME = "cognito-reset-drain"
FUNCTION_ARN = "arn:aws:lambda:%s:%s:function:%s" % (REGION, ACCOUNT, FUNCTION_NAME)
PROBE_ARN = "arn:aws:sts::%s:assumed-role/drain-probe/bench" % ACCOUNT
POLICY = {"version": 1, "rules": [{"name": "drain", "callers": [QUEUE_ARN], "userPools": [POOL_ID],
                                   "users": ["*"]},
                                  {"name": "probe", "callers": [PROBE_ARN], "userPools": [POOL_ID],
                                   "users": ["probe-*"]}]}
MODES = ("configured", "off", "shared", "instance")
# Modes with the guard table in the loop.
TABLE_MODES = ("shared", "instance")
# Modes held to the goal (the others are the comparison).
GOAL_MODES = ("configured", "shared")
LABELS = {"configured": "configured", "off": "limiter off", "shared": "shared", "instance": "per instance"}


@dataclass
class RunResult:
    instances: int
    mode: str
    reset_rps: str
    read_rps: str
    requests: int
    ideal_s: float
    drain_s: float = 0.0
    ratio: float = 0.0
    calls: int = 0
    calls_by_op: dict = field(default_factory=dict)
    throttled: int = 0
    throttled_by_op: dict = field(default_factory=dict)
    throttled_pct: float = 0.0
    receives: int = 0
    receives_per_message: float = 0.0
    dead_lettered: int = 0
    reset_twice: int = 0
    reset_twice_users: list = field(default_factory=list)  # the first 20, for the logs
    not_reset: int = 0  # deleted from the queue without ever being reset
    max_resets_per_s: int = 0  # most successful resets in any sliding one-second window
    max_reads_per_s: int = 0
    invocations: int = 0
    invocation_errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    cold_starts: int = 0
    bad_responses: int = 0  # responses that were not a valid partial batch response
    retries_by_code: dict = field(default_factory=dict)  # from the function's "will be retried" log lines
    run_dir: str = ""
    max_instances: int = 0  # MAX_INSTANCES given to the function
    table: bool = False  # the guard table (moto) in the loop
    bucket_items: int = 0  # pacing bucket items left in the guard table
    table_ops: dict = field(default_factory=dict)  # "PutItem key": n, ... during the drain (moto_counted.py)
    table_refused: dict = field(default_factory=dict)  # of them, answered 400 (a condition failed, ...)
    table_cpu_s: float = 0.0  # moto's CPU seconds during the drain
    init_ms: list = field(default_factory=list)  # each instance's start to its first /next
    # --probe: an HTTP instance beside the drain
    lone_batch_s: float = 0.0  # one HTTP batch of 10 against the idle fleet
    lone_batch_statuses: list = field(default_factory=list)
    probe_idle_ms: float = 0.0  # median latency of single requests against the idle fleet
    probe_ms: list = field(default_factory=list)  # latencies of single requests during the drain
    probe_p50_ms: float = 0.0
    probe_p99_ms: float = 0.0
    probe_max_ms: float = 0.0
    probe_not_ok: int = 0  # probe answers other than 200
    probe_added_p99_ms: float = 0.0  # p99 during the drain less the idle median: the added wait
    # The same requests' waits for their turns: the `pacing.wait` spans of each one's trace (the
    # probe instance is traced, every invocation sampled, to a local daemon); None: no trace came.
    probe_idle_token_ms: list = field(default_factory=list)
    probe_token_ms: list = field(default_factory=list)
    probe_token_p99_ms: float = 0.0
    # where the drain's time went: the first and last admitted reset (s after the first receive)
    first_reset_s: float = 0.0
    last_reset_s: float = 0.0


def per_instance_rate(quota: float, instances: int) -> str:
    """quota / instances, rounded down to 3 decimals so that instances x rate <= quota."""
    r = math.floor(quota / instances * 1000) / 1000
    text = ("%.3f" % r).rstrip("0").rstrip(".")
    return text or "0"


def sqs_event(batch: list[Message]) -> bytes:
    now_ms = int(time.time() * 1000)
    return json.dumps({"Records": [{
        "messageId": m.message_id,
        "receiptHandle": m.receipt,
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": str(m.receive_count),
            "SentTimestamp": str(m.sent_ms),
            "SenderId": "AROAEXAMPLEID:drain-bench",
            "ApproximateFirstReceiveTimestamp": str(m.first_receive_ms or now_ms),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": REGION,
    } for m in batch]}).encode()


def failed_ids(body: bytes, batch: list[Message]) -> set[str] | None:
    """The message ids a partial batch response hands back; None if the response is invalid
    (Lambda then treats the whole batch as failed)."""
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        return None
    if doc is None or doc == {}:
        return set()
    if not isinstance(doc, dict):
        return None
    items = doc.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    ids = {m.message_id for m in batch}
    out = set()
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not ident or ident not in ids:
            return None
        out.add(ident)
    return out


def http_event(body: object, request_id: str) -> bytes:
    """An API Gateway HTTP API (payload 2.0) request from the probe's IAM role."""
    return json.dumps({
        "version": "2.0", "routeKey": "POST /reset", "rawPath": "/reset", "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "drainbench.execute-api.%s.amazonaws.com" % REGION},
        "requestContext": {
            "accountId": ACCOUNT, "apiId": "drainbench", "domainName": "drainbench.execute-api.%s.amazonaws.com" % REGION,
            "domainPrefix": "drainbench", "requestId": request_id, "routeKey": "POST /reset", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
            "http": {"method": "POST", "path": "/reset", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1",
                     "userAgent": "drain-probe"},
            "authorizer": {"iam": {"accessKey": "ASIADRAINPROBE", "accountId": ACCOUNT, "callerId": "AROADRAIN:bench",
                                   "cognitoIdentity": None, "principalOrgId": None, "userArn": PROBE_ARN,
                                   "userId": "AROADRAIN:bench"}},
        },
        "isBase64Encoded": False,
        "body": json.dumps(body),
    }).encode()


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def max_in_window(stamps: list[float], window_s: float = 1.0) -> int:
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.instances: list[Instance] = []
        self.moto: Moto | None = None
        self.daemon: XrayDaemon | None = None

    def function_env(self, cognito_endpoint: str, instances: int, reset_rps: str, read_rps: str,
                     run_dir: Path, mode: str = "configured", table: str | None = None) -> dict:
        a = self.args
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(run_dir),
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + FUNCTION_NAME,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "AKIDDRAINBENCHDUMMY",
            "AWS_SECRET_ACCESS_KEY": "drain-bench-dummy-secret",
            "AWS_ENDPOINT_URL": cognito_endpoint,  # every AWS call goes to the fake, never to AWS
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(run_dir / "aws-config"),  # empty: no profile from this machine
            "AWS_SHARED_CREDENTIALS_FILE": str(run_dir / "aws-credentials"),
            "NO_COLOR": "1",
            "POLICY": json.dumps(POLICY, separators=(",", ":")),
            "RUST_LOG": a.log_level,
            # docs/mass-reset.md's settings for this instance count, and the per-instance rates outright
            "MAX_INSTANCES": str(instances),
            "COGNITO_RESET_QUOTA": "%g" % a.reset_quota,
            "COGNITO_READ_QUOTA": "%g" % a.read_quota,
            "COGNITO_RESET_RPS": reset_rps,
            "COGNITO_READ_RPS": read_rps,
            "MAX_RECEIVE_COUNT": str(a.max_receive_count),
        }
        if re.fullmatch(r"[A-Za-z]+", a.log_level):
            # A level, as Lambda's logging config sets it; directives go in RUST_LOG alone (the
            # function reads RUST_LOG only without AWS_LAMBDA_LOG_LEVEL).
            env["AWS_LAMBDA_LOG_LEVEL"] = a.log_level
        if mode in TABLE_MODES:
            # The guard (and the fleet's buckets) in moto; the static share is quota / MAX_INSTANCES.
            assert self.moto is not None and table is not None
            env["GUARD_TABLE"] = table
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self.moto.endpoint
            env["MAX_INSTANCES"] = str(a.max_instances)
            env["PACING"] = "shared" if mode == "shared" else "instance"
            del env["COGNITO_RESET_RPS"], env["COGNITO_READ_RPS"]
        env.update(env_overrides(a.env))
        return env

    async def run_one(self, m: int, mode: str) -> RunResult:
        a = self.args
        if mode == "configured":
            reset_rps, read_rps = per_instance_rate(a.reset_quota, m), per_instance_rate(a.read_quota, m)
        elif mode == "shared":
            reset_rps, read_rps = "shared", "shared"
        elif mode == "instance":
            reset_rps = per_instance_rate(a.reset_quota, a.max_instances)
            read_rps = per_instance_rate(a.read_quota, a.max_instances)
        else:
            reset_rps = read_rps = "unlimited"
        overrides = env_overrides(a.env)  # --env wins, and is shown
        reset_rps = overrides.get("COGNITO_RESET_RPS", reset_rps)
        read_rps = overrides.get("COGNITO_READ_RPS", read_rps)
        run_dir = Path(a.run_dir) / ("m%d-%s" % (m, mode))
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in run_dir.glob("instance-*.log"):
            old.unlink()
        for empty in ("aws-config", "aws-credentials"):
            (run_dir / empty).write_text("")
        table = "drain-guard-m%d-%s-%d" % (m, mode, int(time.time() * 1000)) if mode in TABLE_MODES else None
        res = RunResult(instances=m, mode=mode, reset_rps=reset_rps, read_rps=read_rps,
                        requests=a.requests, ideal_s=a.requests / a.reset_quota, run_dir=str(run_dir),
                        max_instances=a.max_instances if mode in TABLE_MODES else m,
                        table=table is not None)
        log("run: %d instances, %s (reset/read rps %s/%s, MAX_INSTANCES=%d%s), %d requests, ideal %.1f s"
            % (m, LABELS[mode], reset_rps, read_rps, res.max_instances,
               ", guard table %s in moto" % table if table else "", a.requests, res.ideal_s))
        if table:
            assert self.moto is not None
            await asyncio.to_thread(self.moto.create_guard_table, table)
            await asyncio.to_thread(self.moto.reset_stats)

        cognito = FakeCognito(reset_rps=a.reset_quota, read_rps=a.read_quota, latency_s=a.latency_ms / 1000,
                              burst_s=a.burst_s, pool_id=POOL_ID)
        await cognito.start()
        try:
            env = self.function_env(cognito.endpoint, m, reset_rps, read_rps, run_dir, mode, table)
            argv = [sys.executable, str(a.binary)] if str(a.binary).endswith(".py") else [str(a.binary)]
            self.instances = [Instance("instance-%d" % i, argv, env,
                                       run_dir / ("instance-%d.log" % i), FUNCTION_ARN) for i in range(m)]
            probe = None
            if a.probe:
                self.daemon = XrayDaemon()
                probe_env = {**env, "AWS_XRAY_DAEMON_ADDRESS": self.daemon.address}
                probe = Instance("probe", argv, probe_env, run_dir / "probe.log", FUNCTION_ARN)
            await asyncio.gather(*(inst.start(a.start_timeout) for inst in self.instances))
            res.init_ms = [round(inst.init_s * 1000, 2) for inst in self.instances if inst.init_s is not None]
            if probe is not None:
                self.instances.append(probe)
                await probe.start(a.start_timeout)
                await self.idle_probes(probe, res)
            cognito.reset_counters()  # start-up makes no Cognito call, but count from here anyway
            queue = SimQueue(visibility_s=a.visibility_timeout, max_receive_count=a.max_receive_count)
            for i in range(a.requests):
                queue.send(json.dumps({"UserPoolId": POOL_ID, "Username": "user-%d@example.com" % i}))
            changed = asyncio.Event()

            async def poller(inst: Instance) -> None:
                nonlocal changed
                while True:
                    await inst.ensure_ready(a.start_timeout)
                    while True:
                        batch = queue.receive(a.batch_size)
                        if batch or queue.done:
                            break
                        ev = changed
                        nxt = queue.next_visible_at()
                        wait = 1.0 if nxt is None else max(0.0, nxt - time.monotonic())
                        try:
                            await asyncio.wait_for(ev.wait(), min(wait, 1.0))
                        except asyncio.TimeoutError:
                            pass
                    if not batch:
                        return
                    result = await inst.invoke(sqs_event(batch), a.function_timeout)
                    res.invocations += 1
                    failed = None
                    if result.kind == "ok":
                        failed = failed_ids(result.body, batch)
                        if failed is None:
                            res.bad_responses += 1
                    elif result.kind == "error":
                        res.invocation_errors += 1
                    elif result.kind == "timeout":
                        res.timeouts += 1
                    if failed is not None:
                        for msg in batch:
                            if msg.message_id not in failed:
                                queue.delete(msg)
                    changed.set()
                    changed = asyncio.Event()

            t0 = time.monotonic()
            pollers = [asyncio.create_task(poller(inst)) for inst in self.instances if inst is not probe]
            probing = asyncio.create_task(self.probe_during(probe, res, queue)) if probe is not None else None
            try:
                done, pending = await asyncio.wait(pollers, timeout=a.run_timeout,
                                                   return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for p in pollers:
                    p.cancel()
                await asyncio.gather(*pollers, return_exceptions=True)
            for p in done:
                if p.exception() is not None:
                    raise p.exception()
            if pending:
                raise StartError("the run did not drain within --run-timeout %.0f s" % a.run_timeout)
            res.drain_s = time.monotonic() - t0
            if probing is not None:
                await probing
            if table:
                assert self.moto is not None
                stats = await asyncio.to_thread(self.moto.stats)
                if stats is not None:
                    res.table_ops, res.table_refused = stats["operations"], stats["refused"]
                    res.table_cpu_s = stats["cpu_s"]
                items = await asyncio.to_thread(self.moto.items, table)
                res.bucket_items = sum(1 for i in items if i["pk"]["S"].startswith("bucket#"))
        finally:
            for inst in self.instances:
                res.crashes += inst.crashes
                res.cold_starts += max(0, inst.starts - 1)
            await self.stop_instances()
            await cognito.close()
            if self.daemon is not None:
                self.daemon.stop()
                # The probe's segments, for a look at where a slow request's time went.
                (run_dir / "probe-traces.json").write_text(json.dumps(self.daemon.documents()))
                self.daemon = None

        c = cognito.counters
        res.ratio = res.drain_s / res.ideal_s
        res.calls = c.total_calls
        res.calls_by_op = dict(c.calls)
        res.throttled = c.total_throttled
        res.throttled_by_op = dict(c.throttled)
        res.throttled_pct = 100.0 * res.throttled / res.calls if res.calls else 0.0
        res.receives = queue.receives
        res.receives_per_message = queue.receives / a.requests if a.requests else 0.0
        res.dead_lettered = len(queue.dead_letters)
        twice = sorted((u for u, n in c.resets.items() if n > 1), key=lambda u: int(u.split("-")[1].split("@")[0]))
        res.reset_twice = len(twice)
        res.reset_twice_users = twice[:20]
        dead_users = {json.loads(m.body)["Username"] for m in queue.dead_letters}
        res.not_reset = sum(1 for i in range(a.requests)
                            if c.resets["user-%d@example.com" % i] == 0
                            and "user-%d@example.com" % i not in dead_users)
        res.max_resets_per_s = max_in_window(c.admitted.get(RECOVERY, []))
        res.max_reads_per_s = max_in_window(c.admitted.get(READS, []))
        resets = c.admitted.get(RECOVERY, [])
        if resets:
            res.first_reset_s = min(resets) - t0
            res.last_reset_s = max(resets) - t0
        res.retries_by_code = retry_codes(run_dir)
        report(res)
        return res

    async def idle_probes(self, probe: Instance, res: RunResult) -> None:
        """Against the idle fleet: one HTTP batch of 10, then single requests (the baseline)."""
        a = self.args
        batch = [{"UserPoolId": POOL_ID, "Username": "probe-batch-%d@example.com" % i} for i in range(10)]
        result, _ = await self.probe_invoke(probe, http_event(batch, "lone-batch"))
        res.lone_batch_s = result.duration_s
        try:
            res.lone_batch_statuses = [r.get("status") for r in json.loads(json.loads(result.body)["body"])["results"]]
        except (ValueError, KeyError, TypeError):
            res.lone_batch_statuses = ["invalid: %s" % result.kind]
        idle = []
        for i in range(5):
            await asyncio.sleep(0.2)
            await probe.ensure_ready(a.start_timeout)
            body = {"UserPoolId": POOL_ID, "Username": "probe-idle-%d@example.com" % i}
            result, token_ms = await self.probe_invoke(probe, http_event(body, "idle-%d" % i))
            idle.append(result.duration_s)
            res.probe_idle_token_ms.append(token_ms)
        res.probe_idle_ms = 1000 * percentile(idle, 50)
        log("  idle fleet: a lone HTTP batch of 10 took %.3f s (10 / quota = %.3f s), statuses %s; "
            "a single request %.1f ms (median of 5)"
            % (res.lone_batch_s, 10 / a.reset_quota, res.lone_batch_statuses, res.probe_idle_ms))

    async def probe_during(self, probe: Instance, res: RunResult, queue: SimQueue) -> None:
        """One HTTP request every --probe-interval until the queue is drained."""
        a = self.args
        n = 0
        while not queue.done:
            await asyncio.sleep(a.probe_interval)
            if queue.done:
                break
            await probe.ensure_ready(a.start_timeout)
            body = {"UserPoolId": POOL_ID, "Username": "probe-%d@example.com" % n}
            result, token_ms = await self.probe_invoke(probe, http_event(body, "probe-%d" % n))
            n += 1
            res.probe_ms.append(round(result.duration_s * 1000, 2))
            res.probe_token_ms.append(token_ms)
            status = None
            if result.kind == "ok":
                try:
                    status = json.loads(result.body).get("statusCode")
                except ValueError:
                    pass
            if status != 200:
                res.probe_not_ok += 1
        res.probe_p50_ms = percentile(res.probe_ms, 50)
        res.probe_p99_ms = percentile(res.probe_ms, 99)
        res.probe_max_ms = max(res.probe_ms, default=0.0)
        res.probe_added_p99_ms = res.probe_p99_ms - res.probe_idle_ms
        # A request whose trace did not come counts as its whole latency: never less than it waited.
        waits = [w if w is not None else ms for w, ms in zip(res.probe_token_ms, res.probe_ms)]
        res.probe_token_p99_ms = percentile(waits, 99)

    async def probe_invoke(self, probe: Instance, event: bytes):
        """One sampled invocation of the probe: its result, and how long it waited for its turns
        (ms: the sum of its trace's `pacing.wait` spans, the lease writes that gave a turn
        included; None when its trace did not reach the daemon)."""
        trace_id, probe.trace_header = sampled_trace()
        result = await probe.invoke(event, self.args.function_timeout)
        assert self.daemon is not None
        try:
            # The flush precedes the answer; the wait is for the listener's thread.
            documents = await asyncio.to_thread(self.daemon.trace, trace_id, 5.0)
        except StackError:
            return result, None
        waits = [d["end_time"] - d["start_time"] for d in documents
                 if d.get("name") == "pacing.wait" and "end_time" in d]
        return result, round(1000 * sum(waits), 2)

    async def stop_instances(self) -> None:
        if self.instances:
            await asyncio.gather(*(inst.close() for inst in self.instances), return_exceptions=True)
        self.instances = []


RETRY_LINE = re.compile(r'will be retried.*?\bcode"?[=:]\s*"?([A-Za-z-]+)')


def retry_codes(run_dir: Path) -> dict:
    """RETRY records by code, counted in the function's warn-level log lines (best effort: it
    depends on the function's log format)."""
    codes: collections.Counter = collections.Counter()
    for path in sorted(run_dir.glob("instance-*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                m = RETRY_LINE.search(line)
                if m:
                    codes[m.group(1)] += 1
    return dict(codes)


def log(msg: str) -> None:
    print(msg, flush=True)


def report(r: RunResult) -> None:
    ops = ", ".join("%s %d/%d" % (op, r.throttled_by_op.get(op, 0), n) for op, n in sorted(r.calls_by_op.items()))
    log("  drain %.1f s = %.2fx ideal (%.1f s); Cognito calls %d, throttled %d (%.1f%%) [throttled/calls: %s]"
        % (r.drain_s, r.ratio, r.ideal_s, r.calls, r.throttled, r.throttled_pct, ops or "none"))
    log("  receives %d (%.2f per message), dead-lettered %d, reset twice %d, never reset %d; "
        "invocations %d (errors %d, timeouts %d, crashes %d, cold restarts %d, invalid responses %d); "
        "most admitted in any 1 s window: resets %d, reads %d"
        % (r.receives, r.receives_per_message, r.dead_lettered, r.reset_twice, r.not_reset, r.invocations,
           r.invocation_errors, r.timeouts, r.crashes, r.cold_starts, r.bad_responses, r.max_resets_per_s,
           r.max_reads_per_s))
    if r.retries_by_code:
        log("  records handed back (function log): %s"
            % ", ".join("%s %d" % kv for kv in sorted(r.retries_by_code.items())))
    if r.reset_twice_users:
        log("  reset twice: %s%s" % (", ".join(r.reset_twice_users), " ..." if r.reset_twice > 20 else ""))
    if r.init_ms:
        log("  init (process start to first /next): median %.1f ms, max %.1f ms over %d instances"
            % (percentile(r.init_ms, 50), max(r.init_ms), len(r.init_ms)))
    if r.last_reset_s:
        # the spacing alone: one reset every 1.02 / quota (the pacers' 2% slack, src/pacing.rs SPACING)
        timeline = (r.requests - 1) * 1.02 * r.ideal_s / r.requests
        log("  resets: first %.2f s after the first receive, last at %.2f s (span %.2f s; the pacing's "
            "spacing alone %.2f s), last message done %.2f s after it"
            % (r.first_reset_s, r.last_reset_s, r.last_reset_s - r.first_reset_s, timeline,
               r.drain_s - r.last_reset_s))
    if r.table:
        log("  pacing bucket items in the guard table: %d" % r.bucket_items)
    if r.table_ops:
        log("  " + table_load(r))
    if r.probe_ms:
        log("  HTTP probe during the drain: %d requests, p50 %.1f ms, p99 %.1f ms, max %.1f ms "
            "(idle %.1f ms: p99 added wait %.1f ms), %d not 200"
            % (len(r.probe_ms), r.probe_p50_ms, r.probe_p99_ms, r.probe_max_ms, r.probe_idle_ms,
               r.probe_p99_ms - r.probe_idle_ms, r.probe_not_ok))
        waits = [w for w in r.probe_token_ms if w is not None]
        idle = [w for w in r.probe_idle_token_ms if w is not None]
        log("  their waits for a turn (pacing.wait in their traces): p50 %.1f ms, p99 %.1f ms, max %.1f ms "
            "(idle: max %.1f ms); %d of %d traces came"
            % (percentile(waits, 50), r.probe_token_p99_ms, max(waits, default=0.0), max(idle, default=0.0),
               len(waits), len(r.probe_token_ms)))


def by_item_kind(counts: dict[str, int]) -> dict[str, int]:
    """moto_counted.py's "<operation> <item kind>" counts, summed by item kind."""
    kinds: dict[str, int] = {}
    for op, n in counts.items():
        kind = op.split(" ", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + n
    return kinds


def table_load(r: RunResult) -> str:
    """The guard table's load during the drain: operations per reset by item kind, and moto's CPU."""
    total = sum(r.table_ops.values())
    kinds, refused = by_item_kind(r.table_ops), by_item_kind(r.table_refused)

    def share(kind: str, n: int) -> str:
        text = "%s %.2f" % (kind, n / r.requests)
        return text + (" of which %.2f refused" % (refused[kind] / r.requests) if refused.get(kind) else "")

    per = ", ".join(share(k, n) for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    busy = 100.0 * r.table_cpu_s / r.drain_s if r.drain_s else 0.0
    return ("guard table (moto): %d operations, %.2f per reset (%s); moto's CPU %.1f s, %.0f%% of one core "
            "over the drain, %.1f ms an operation"
            % (total, total / r.requests if r.requests else 0.0, per, r.table_cpu_s, busy,
               1000.0 * r.table_cpu_s / total if total else 0.0))


def goal_misses(r: RunResult, goal: argparse.Namespace) -> list[str]:
    """What keeps a run from the issue's goal for the full run (<= 1.15x ideal, nothing
    dead-lettered or reset twice, under 5% of Cognito calls throttled)."""
    misses = []
    if r.ratio > goal.goal_ratio:
        misses.append("%.2fx ideal > %.2fx" % (r.ratio, goal.goal_ratio))
    if r.dead_lettered:
        misses.append("%d dead-lettered" % r.dead_lettered)
    if r.reset_twice:
        misses.append("%d reset twice" % r.reset_twice)
    if r.not_reset:
        misses.append("%d never reset" % r.not_reset)
    if r.throttled_pct >= goal.goal_throttled_pct:
        misses.append("%.1f%% throttled >= %.1f%%" % (r.throttled_pct, goal.goal_throttled_pct))
    return misses


def summary(results: list[RunResult], goal: argparse.Namespace) -> None:
    head = ("M", "mode", "reset/read rps", "drain s", "ideal s", "ratio", "calls", "throttled", "thr %",
            "recv/msg", "DLQ", "twice", "never", "errors", "timeouts", "goal")
    rows = [head]
    for r in results:
        mode = LABELS[r.mode] + (" (table, MAX_INSTANCES=%d)" % r.max_instances if r.table else "")
        rows.append((str(r.instances), mode,
                     "%s/%s" % (r.reset_rps, r.read_rps), "%.1f" % r.drain_s, "%.1f" % r.ideal_s,
                     "%.2fx" % r.ratio, str(r.calls), str(r.throttled), "%.1f" % r.throttled_pct,
                     "%.2f" % r.receives_per_message, str(r.dead_lettered), str(r.reset_twice),
                     str(r.not_reset), str(r.invocation_errors), str(r.timeouts),
                     ("met" if not goal_misses(r, goal) else "missed") if r.mode in GOAL_MODES else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    log("")
    for n, row in enumerate(rows):
        log("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            log("  ".join("-" * w for w in widths))
    probed = [r for r in results if r.probe_ms or r.lone_batch_statuses]
    if probed:
        log("")
        log("HTTP beside the drain (--probe): a lone batch of 10 against the idle fleet, then one request every "
            "%.1f s during the drain" % goal.probe_interval)
        head = ("M", "mode", "lone batch s", "10/quota s", "idle ms", "p50 ms", "p99 ms", "max ms", "added p99 ms",
                "turn wait p99 ms", "not 200")
        rows = [head]
        for r in probed:
            rows.append((str(r.instances), LABELS[r.mode], "%.3f" % r.lone_batch_s, "%.3f" % (10 / goal.reset_quota),
                         "%.1f" % r.probe_idle_ms, "%.1f" % r.probe_p50_ms, "%.1f" % r.probe_p99_ms,
                         "%.1f" % r.probe_max_ms, "%.1f" % (r.probe_p99_ms - r.probe_idle_ms),
                         "%.1f" % r.probe_token_p99_ms, str(r.probe_not_ok)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        for n, row in enumerate(rows):
            log("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if n == 0:
                log("  ".join("-" * w for w in widths))


def check(results: list[RunResult], max_ratio: float, max_throttled_pct: float | None) -> list[str]:
    problems = []
    for r in results:
        if r.mode not in GOAL_MODES:
            continue
        tag = "%d instances, %s" % (r.instances, LABELS[r.mode])
        if r.dead_lettered:
            problems.append("%s: %d dead-lettered" % (tag, r.dead_lettered))
        if r.reset_twice:
            problems.append("%s: %d users reset twice" % (tag, r.reset_twice))
        if r.not_reset:
            problems.append("%s: %d requests acknowledged without a reset" % (tag, r.not_reset))
        if r.ratio > max_ratio:
            problems.append("%s: drain took %.2fx ideal (limit %.2fx)" % (tag, r.ratio, max_ratio))
        if max_throttled_pct is not None and r.throttled_pct > max_throttled_pct:
            problems.append("%s: %.1f%% of Cognito calls throttled (limit %.1f%%)"
                            % (tag, r.throttled_pct, max_throttled_pct))
    return problems


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--requests", "-n", type=int, default=2000, help="queued reset requests (distinct users)")
    p.add_argument("--instances", "-m", default="2,4,8",
                   help="comma-separated instance counts (the event source mapping's MaximumConcurrency)")
    p.add_argument("--modes", default="off,configured",
                   help="comma-separated, run in this order for each instance count: configured "
                        "(per-instance rates = quota / M), off (both rates unlimited), shared (the guard "
                        "table in moto and the fleet's pacing buckets in it, MAX_INSTANCES = --max-instances) "
                        "and/or instance (the same table, PACING=instance: quota / --max-instances each)")
    p.add_argument("--max-instances", type=int, default=5,
                   help="MAX_INSTANCES of the shared and instance modes (the template's default)")
    p.add_argument("--moto-server", default=str(ROOT / ".tools" / "stack" / "bin" / "moto_server"),
                   help="moto server for the guard table (make tools installs it)")
    p.add_argument("--moto-uncounted", action="store_true",
                   help="run --moto-server itself, not through tools/drain/moto_counted.py (which counts the table's "
                        "operations and moto's CPU for the `guard table (moto):` line)")
    p.add_argument("--probe", action="store_true",
                   help="an extra instance for HTTP requests: a lone batch of 10 before the drain, then one "
                        "request every --probe-interval during it; reports the latencies")
    p.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probe requests")
    p.add_argument("--goal-added-wait-ms", type=float, default=100.0,
                   help="the issue's goal for the probe: p99 latency during the drain less the idle median")
    p.add_argument("--reset-quota", type=float, default=20.0, help="Cognito account-recovery quota, requests/s")
    p.add_argument("--read-quota", type=float, default=60.0, help="Cognito user-read quota, requests/s")
    p.add_argument("--burst-s", type=float, default=1.0,
                   help="token bucket capacity of the fake Cognito, in seconds of quota")
    p.add_argument("--latency-ms", type=float, default=20.0, help="latency of every fake Cognito answer")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--function-timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--visibility-timeout", type=float, default=None,
                   help="seconds (default: 6 x the function timeout)")
    p.add_argument("--max-receive-count", type=int, default=5)
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "cognito-reset"))
    p.add_argument("--run-dir", default=str(ROOT / ".run" / "drain"), help="instance logs and results.json")
    p.add_argument(
        "--log-level",
        default="info",
        help="the function's AWS_LAMBDA_LOG_LEVEL and RUST_LOG (a level: INFO at most, above it the function "
             "does not start), or RUST_LOG directives alone (e.g. info,cognito_reset::limiter=debug: the "
             "interactive leases' borrow decisions)",
    )
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the function (repeatable)")
    p.add_argument("--start-timeout", type=float, default=30.0,
                   help="seconds for an instance to ask for its first invocation")
    p.add_argument("--run-timeout", type=float, default=None,
                   help="seconds before a run is abandoned (default: 10 x ideal + 5 visibility timeouts)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a configured run dead-letters, resets a user twice, acknowledges a "
                        "request without a reset, or drains slower than --max-ratio x ideal")
    p.add_argument("--max-ratio", type=float, default=1.5)
    p.add_argument("--max-throttled-pct", type=float, default=None,
                   help="with --check: also fail above this share of throttled Cognito calls")
    p.add_argument("--goal-ratio", type=float, default=1.15,
                   help="the issue's goal for the full run, shown in the table's goal column")
    p.add_argument("--goal-throttled-pct", type=float, default=5.0,
                   help="the issue's goal: throttled answers under this share of all Cognito calls")
    a = p.parse_args(argv)
    try:
        a.instance_counts = [int(x) for x in a.instances.split(",") if x.strip()]
    except ValueError:
        p.error("--instances: comma-separated integers")
    a.mode_list = [x.strip() for x in a.modes.split(",") if x.strip()]
    if a.max_instances < 1 or a.probe_interval <= 0:
        p.error("--max-instances >= 1, --probe-interval > 0")
    if not a.instance_counts or any(m < 1 for m in a.instance_counts):
        p.error("--instances: at least one, each >= 1")
    if not a.mode_list or any(x not in MODES for x in a.mode_list):
        p.error("--modes: a comma-separated subset of %s" % ",".join(MODES))
    if a.requests < 1 or a.reset_quota <= 0 or a.read_quota <= 0 or not 1 <= a.batch_size <= 10:
        p.error("--requests >= 1, quotas > 0, 1 <= --batch-size <= 10")
    if a.visibility_timeout is None:
        a.visibility_timeout = 6 * a.function_timeout
    if a.run_timeout is None:
        a.run_timeout = 10 * a.requests / a.reset_quota + 5 * a.visibility_timeout * a.max_receive_count
    try:
        env_overrides(a.env)
    except ValueError as e:
        p.error(str(e))
    return a


async def main_async(a: argparse.Namespace) -> int:
    bench = Bench(a)
    results: list[RunResult] = []
    if any(mode in TABLE_MODES for mode in a.mode_list):
        Path(a.run_dir).mkdir(parents=True, exist_ok=True)
        bench.moto = Moto(Path(a.moto_server), Path(a.run_dir) / "moto.log", counted=not a.moto_uncounted)
        try:
            await bench.moto.start()
        except MotoError as e:
            log("drain-bench: %s" % e)
            return 2
    log("drain bench: %d requests, reset quota %g/s, read quota %g/s, latency %g ms, batch %d, "
        "function timeout %g s, visibility %g s, maxReceiveCount %d; %s, %d CPUs"
        % (a.requests, a.reset_quota, a.read_quota, a.latency_ms, a.batch_size, a.function_timeout,
           a.visibility_timeout, a.max_receive_count, a.binary, os.cpu_count() or 0))
    try:
        for m in a.instance_counts:
            for mode in a.mode_list:
                results.append(await bench.run_one(m, mode))
    except (StartError, MotoError) as e:
        log("drain-bench: %s" % e)
        return 2
    finally:
        await bench.stop_instances()
        if bench.moto is not None:
            await bench.moto.close()
    out = Path(a.run_dir) / "results.json"
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "args": {k: v for k, v in vars(a).items()},
                               "runs": [asdict(r) for r in results]}, indent=2, default=str))
    summary(results, a)
    configured = [r for r in results if r.mode in GOAL_MODES]
    log("goal (configured and shared runs): <= %.2fx ideal, 0 dead-lettered, 0 reset twice, < %g%% of calls throttled"
        % (a.goal_ratio, a.goal_throttled_pct))
    for r in configured:
        misses = goal_misses(r, a)
        if misses:
            log("  %d instances: missed: %s" % (r.instances, "; ".join(misses)))
    problems = check(results, a.max_ratio, a.max_throttled_pct) if a.check else []
    for p in problems:
        log("CHECK FAILED: " + p)
    if configured:
        log("ratio: %s" % ", ".join("M=%d %s %.3fx" % (r.instances, LABELS[r.mode], r.ratio) for r in configured))
    for r in results:
        if r.probe_ms:
            log("probe: p99 added wait %.1f ms (M=%d, %s; goal <= %g ms: %s), %d of %d not 200"
                % (r.probe_added_p99_ms, r.instances, LABELS[r.mode], a.goal_added_wait_ms,
                   "met" if r.probe_added_p99_ms <= a.goal_added_wait_ms else "missed", r.probe_not_ok,
                   len(r.probe_ms)))
            log("probe: p99 wait for a turn %.1f ms (M=%d, %s; its traces' pacing.wait; goal <= %g ms: %s)"
                % (r.probe_token_p99_ms, r.instances, LABELS[r.mode], a.goal_added_wait_ms,
                   "met" if r.probe_token_p99_ms <= a.goal_added_wait_ms else "missed"))
    last = configured[-1] if configured else results[-1]
    if not configured:
        log("(no configured or shared run; the last line is for the last run)")
    log("drain: %.2fx ideal, %d dead-lettered, %d reset twice" % (last.ratio, last.dead_lettered, last.reset_twice))
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    if not Path(a.binary).is_file():
        log("drain-bench: %s not found; build it with: nice -n 10 cargo build --release --locked "
            "--bin cognito-reset" % a.binary)
        return 2
    Path(a.run_dir).mkdir(parents=True, exist_ok=True)

    async def runner() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await main_async(a)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("drain-bench: interrupted; every process it started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
