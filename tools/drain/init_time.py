#!/usr/bin/env python3
"""Init time of the release binary: from spawning the process to its first Runtime API
`invocation/next`, the part of a cold start that is the function's own; and the first
invocation after it (a cold start is both).

Each configuration starts the binary --starts times, one at a time, behind its own Runtime API
(tools/drain/runtime_api.py), and prints the median, the 90th percentile and the fastest start.
The configurations add AWS clients one by one: Cognito alone (an inline policy, no table); with
the guard table (DynamoDB); with the outcome events (EventBridge); and with the policy in Parameter
Store (SSM, read at start-up from moto server, so that configuration includes one local
GetParameter round trip). No call reaches AWS. Standard library only (moto from .tools/stack/).

The first invocation: two more configurations (Cognito alone, without and with tracing configured:
AWS_XRAY_DAEMON_ADDRESS at a local UDP socket, each invocation's trace header sampled) answer one
SQS reset against an instant fake Cognito (tools/drain/fake_cognito.py, no latency) right after
their init; the time from handing the event over to the answer is the first invocation.

The function is spawned plainly (Python's vfork and exec): the drain benchmarks' PDEATHSIG, set from
a preexec_fn, makes Python fork the whole interpreter, about 5.5 ms of every init on the 2-core
development machine that is not the function's (--die-with-parent measures that way).

    python3 tools/drain/init_time.py                       # make bench-init
    python3 tools/drain/init_time.py --starts 50 --binary target/release/cognito-reset
    python3 tools/drain/init_time.py --only first          # the two first-invocation configurations
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_cognito import FakeCognito  # noqa: E402
from moto import Moto, MotoError  # noqa: E402
from runtime_api import Instance, StartError, env_overrides, sampled_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
POLICY = json.dumps({"version": 1, "rules": [{"name": "init", "callers": ["*"], "userPools": ["*"],
                                             "users": ["*"]}]}, separators=(",", ":"))
PARAMETER = "/cognito-reset/init-bench"
FUNCTION_ARN = "arn:aws:lambda:us-west-2:123456789012:function:cognito-reset-init"
POOL_ID = "us-west-2_initpool1"
QUEUE_ARN = "arn:aws:sqs:us-west-2:123456789012:init-queue"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))]


def base_env(endpoint: str, run_dir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(run_dir),
        "AWS_LAMBDA_FUNCTION_NAME": "cognito-reset-init",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/cognito-reset-init",
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "AKIDINITBENCHDUMMY",
        "AWS_SECRET_ACCESS_KEY": "init-bench-dummy-secret",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(run_dir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(run_dir / "aws-credentials"),
        "NO_COLOR": "1",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
    }


def put_parameter(moto: Moto) -> None:
    request = urllib.request.Request(moto.endpoint + "/", method="POST", data=json.dumps({
        "Name": PARAMETER, "Value": POLICY, "Type": "String", "Overwrite": True}).encode(), headers={
        "X-Amz-Target": "AmazonSSM.PutParameter", "Content-Type": "application/x-amz-json-1.1",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDINITBENCHDUMMY/20240101/us-west-2/ssm/aws4_request, "
                         "SignedHeaders=host, Signature=00"})
    with urllib.request.urlopen(request, timeout=10) as r:
        r.read()


def policy_reads_ms(log_path: Path) -> list[float]:
    """The policy's first read at each start, from the function's "configuration loaded" line."""
    reads = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            fields = json.loads(line).get("fields", {})
        except (ValueError, AttributeError):
            continue
        if isinstance(fields, dict) and "policy_read_us" in fields:
            reads.append(float(fields["policy_read_us"]) / 1000)
    return reads


async def measure(name: str, argv: list[str], env: dict, starts: int, run_dir: Path,
                  die_with_parent: bool) -> tuple[list[float], list[float]]:
    """Each start's init (ms), and each start's init less the policy's first read (ms)."""
    times = []
    log_path = run_dir / ("init-%s.log" % name.replace(" ", "-").replace("+", "and"))
    log_path.unlink(missing_ok=True)
    for i in range(starts):
        instance = Instance("init-%d" % i, argv, env, log_path, FUNCTION_ARN)
        instance.die_with_parent = die_with_parent
        try:
            await instance.start(30)
            times.append(instance.init_s * 1000)
        finally:
            await instance.close()
    reads = policy_reads_ms(log_path)
    if len(reads) != len(times):
        raise StartError("%s: %d starts but %d 'configuration loaded' lines with policy_read_us in %s"
                         % (name, len(times), len(reads), log_path))
    return times, [t - r for t, r in zip(times, reads)]


def reset_event() -> bytes:
    """One SQS record asking to reset one user of the fake Cognito's pool."""
    now_ms = int(time.time() * 1000)
    return json.dumps({"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": "init", "md5OfBody": "",
        "body": json.dumps({"UserPoolId": POOL_ID, "Username": "cold@example.com"}),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(now_ms),
                       "SenderId": "AROAEXAMPLEID:init", "ApproximateFirstReceiveTimestamp": str(now_ms)},
        "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-west-2"}]}).encode()


async def measure_first(name: str, argv: list[str], env: dict, starts: int, run_dir: Path,
                        traced: bool, die_with_parent: bool) -> tuple[list[float], list[float]]:
    """Each start's init and first invocation (ms): one SQS reset, answered RESET."""
    inits, firsts = [], []
    log_path = run_dir / ("first-%s.log" % ("traced" if traced else "plain"))
    log_path.unlink(missing_ok=True)
    for i in range(starts):
        instance = Instance("first-%d" % i, argv, env, log_path, FUNCTION_ARN)
        instance.die_with_parent = die_with_parent
        if traced:
            instance.trace_header = sampled_trace()[1]
        try:
            await instance.start(30)
            result = await instance.invoke(reset_event(), 30)
            if result.kind != "ok" or b"batchItemFailures\":[]" not in result.body.replace(b" ", b""):
                raise StartError("%s: the first invocation ended %s: %r" % (name, result.kind, result.body[:300]))
            inits.append(instance.init_s * 1000)
            firsts.append(result.duration_s * 1000)
        finally:
            await instance.close()
    return inits, firsts


async def main_async(a: argparse.Namespace) -> int:
    run_dir = Path(a.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for empty in ("aws-config", "aws-credentials"):
        (run_dir / empty).write_text("")
    moto = Moto(Path(a.moto_server), run_dir / "moto.log")
    try:
        await moto.start()
        put_parameter(moto)
        env = base_env(moto.endpoint, run_dir)
        env.update(env_overrides(a.env))
        configs = [
            ("Cognito", {"POLICY": POLICY}),
            ("Cognito + DynamoDB", {"POLICY": POLICY, "GUARD_TABLE": "init-guard"}),
            ("Cognito + DynamoDB + EventBridge",
             {"POLICY": POLICY, "GUARD_TABLE": "init-guard", "EVENT_BUS": "init-bus"}),
            ("Cognito + DynamoDB + EventBridge + SSM (reads the policy)",
             {"POLICY_PARAMETER": PARAMETER, "GUARD_TABLE": "init-guard", "EVENT_BUS": "init-bus"}),
        ]
        argv = [sys.executable, a.binary] if a.binary.endswith(".py") else [a.binary]
        print("init time of %s: spawn to first /next, %d starts each, one at a time, %d CPUs%s"
              % (a.binary, a.starts, os.cpu_count() or 0,
                 ", spawned with PDEATHSIG (the harness's fork counted in init)" if a.die_with_parent else ""),
              flush=True)
        if a.only != "first":
            print("%-58s  %9s  %9s  %9s  %18s" % ("clients", "median ms", "p90 ms", "min ms",
                                                  "less the read, ms"))
        results = {}
        for name, extra in configs if a.only in ("all", "init") else []:
            times, less_read = await measure(name, argv, {**env, **extra}, a.starts, run_dir, a.die_with_parent)
            results[name] = {"init_ms": times, "init_less_policy_read_ms": less_read}
            print("%-58s  %9.2f  %9.2f  %9.2f  %18.2f" % (name, percentile(times, 50), percentile(times, 90),
                                                       min(times), percentile(less_read, 50)), flush=True)
        # The first invocation, against an instant fake Cognito; without and with tracing.
        fake = FakeCognito(reset_rps=0, read_rps=0, latency_s=0, pool_id=POOL_ID)
        await fake.start()
        daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for every start's datagrams: they are counted once all starts are done.
        daemon.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        daemon.bind(("127.0.0.1", 0))
        daemon.setblocking(False)
        first_policy = json.dumps({"version": 1, "rules": [{"name": "init", "callers": [QUEUE_ARN],
                                                            "userPools": [POOL_ID], "users": ["*"]}]})
        first_env = {**env, "POLICY": first_policy, "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": fake.endpoint}
        print("\nfirst invocation: one SQS reset against an instant fake Cognito, right after init; "
              "%d starts each" % a.starts)
        print("%-58s  %9s  %14s  %14s  %16s" % ("configuration", "init ms", "1st invoke ms", "init + 1st ms",
                                                 "datagrams recvd"))
        try:
            for name, extra, traced in [
                ("Cognito", {}, False),
                ("Cognito, tracing configured (sampled)",
                 {"AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:%d" % daemon.getsockname()[1]}, True),
            ] if a.only in ("all", "first") else []:
                fake.reset_counters()
                inits, firsts = await measure_first(name, argv, {**first_env, **extra}, a.starts, run_dir, traced,
                                                    a.die_with_parent)
                resets = sum(fake.counters.resets.values())
                if resets != a.starts:  # every first invocation a real reset, not a refusal
                    raise StartError("%s: %d starts but %d AdminResetUserPassword calls" % (name, a.starts, resets))
                received = 0
                while True:
                    try:
                        daemon.recv(65535)
                        received += 1
                    except BlockingIOError:
                        break
                totals = [i + f for i, f in zip(inits, firsts)]
                results[name + " / first invocation"] = {"init_ms": inits, "first_invocation_ms": firsts}
                print("%-58s  %9.2f  %14.2f  %14.2f  %16d" % (name, percentile(inits, 50), percentile(firsts, 50),
                                                            percentile(totals, 50), received), flush=True)
        finally:
            daemon.close()
            await fake.close()
        (run_dir / "init-results.json").write_text(json.dumps(results, indent=2))
        inits = [r for r in results.values() if "init_less_policy_read_ms" in r]
        if not inits:
            return 0
        worst = max(percentile(r["init_ms"], 50) for r in inits)
        worst_less_read = max(percentile(r["init_less_policy_read_ms"], 50) for r in inits)
        print("init: median %.2f ms at most (the slowest configuration); %.2f ms at most less the policy's"
              " first read (the one network call at start-up, SSM only)" % (worst, worst_less_read))
        return 1 if a.max_ms is not None and worst > a.max_ms else 0
    except (MotoError, StartError) as e:
        print("init-time: %s" % e)
        return 2
    finally:
        await moto.close()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "cognito-reset"))
    p.add_argument("--starts", type=int, default=30)
    p.add_argument("--moto-server", default=str(ROOT / ".tools" / "stack" / "bin" / "moto_server"))
    p.add_argument("--run-dir", default=str(ROOT / ".run" / "init"))
    p.add_argument("--max-ms", type=float, default=None, help="exit 1 if a configuration's median is above this")
    p.add_argument("--die-with-parent", action="store_true",
                   help="spawn as the drain benchmarks do (PDEATHSIG from a preexec_fn): adds the harness's own "
                        "fork, about 5.5 ms here, to every init (this script's figures before December 7)")
    p.add_argument("--only", choices=("all", "init", "first"), default="all",
                   help="the four init configurations only (init), the two first-invocation ones only (first)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="one more variable for every start (e.g. SSL_CERT_DIR=/etc/ssl/certs: the TLS roots read "
                        "from the directories as well, as before src/aws/roots.rs)")
    a = p.parse_args(argv)
    try:
        env_overrides(a.env)
    except ValueError as e:
        p.error(str(e))
    if not Path(a.binary).is_file():
        print("init-time: %s not found; build it with: cargo build --release --locked --bin cognito-reset" % a.binary)
        return 2
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
