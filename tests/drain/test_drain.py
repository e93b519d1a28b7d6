"""Tests of the drain benchmark's harness (tools/drain/), standard library only:

    python3 -m unittest discover -s tests/drain -v      (or: pytest tests/drain)

The simulated queue, the fake Cognito's protocol and quotas, and whole runs of the harness with a
Python stand-in for the function (tests/drain/stub_function.py), so they need no Rust build.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tools" / "drain"))

import bench  # noqa: E402
from fake_cognito import FakeCognito, TokenBucket  # noqa: E402
from queue_sim import SimQueue  # noqa: E402

STUB = HERE / "stub_function.py"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class TokenBucketTest(unittest.TestCase):
    def test_admits_the_burst_then_the_rate(self):
        clock = Clock()
        b = TokenBucket(rate=20, capacity=20, clock=clock)
        self.assertEqual(sum(b.take() for _ in range(50)), 20)
        clock.t += 0.5
        self.assertEqual(sum(b.take() for _ in range(50)), 10)

    def test_rate_zero_is_unlimited(self):
        b = TokenBucket(rate=0, capacity=0, clock=Clock())
        self.assertTrue(all(b.take() for _ in range(1000)))


class SimQueueTest(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.q = SimQueue(visibility_s=30, max_receive_count=2, clock=self.clock)
        for i in range(15):
            self.q.send("m%d" % i)

    def test_receive_hides_messages_for_the_visibility_timeout(self):
        first = self.q.receive(10)
        self.assertEqual([m.body for m in first], ["m%d" % i for i in range(10)])
        self.assertEqual(len(self.q.receive(10)), 5)
        self.assertEqual(self.q.receive(10), [])
        self.assertEqual(self.q.next_visible_at(), self.clock.t + 30)
        self.clock.t += 30
        again = self.q.receive(10)
        self.assertEqual([m.body for m in again], ["m%d" % i for i in range(10)])
        self.assertTrue(all(m.receive_count == 2 for m in again))

    def test_deleted_messages_never_come_back_and_done_when_all_deleted(self):
        for m in self.q.receive(10) + self.q.receive(10):
            self.q.delete(m)
        self.assertTrue(self.q.done)
        self.clock.t += 100
        self.assertEqual(self.q.receive(10), [])
        self.assertIsNone(self.q.next_visible_at())

    def test_a_message_received_max_receive_count_times_is_dead_lettered_on_the_next_receive(self):
        self.q.receive(10)
        self.q.receive(10)
        self.clock.t += 30
        self.assertEqual(len(self.q.receive(20)), 15)
        self.clock.t += 30
        self.assertEqual(self.q.receive(20), [])
        self.assertEqual(len(self.q.dead_letters), 15)
        self.assertTrue(self.q.done)
        self.assertEqual(self.q.receives, 30)


class ResponseParsingTest(unittest.TestCase):
    def setUp(self):
        q = SimQueue(visibility_s=30, max_receive_count=5)
        for i in range(3):
            q.send("m%d" % i)
        self.batch = q.receive(10)

    def test_partial_batch_response(self):
        ids = [m.message_id for m in self.batch]
        self.assertEqual(bench.failed_ids(b'{"batchItemFailures":[]}', self.batch), set())
        self.assertEqual(bench.failed_ids(b"null", self.batch), set())
        self.assertEqual(bench.failed_ids(b"{}", self.batch), set())
        body = json.dumps({"batchItemFailures": [{"itemIdentifier": ids[1]}]}).encode()
        self.assertEqual(bench.failed_ids(body, self.batch), {ids[1]})

    def test_an_invalid_response_fails_the_whole_batch(self):
        self.assertIsNone(bench.failed_ids(b'{"batchItemFailures":[{"itemIdentifier":"nope"}]}', self.batch))
        self.assertIsNone(bench.failed_ids(b'{"batchItemFailures":[{"itemIdentifier":""}]}', self.batch))
        self.assertIsNone(bench.failed_ids(b"not json", self.batch))

    def test_sqs_event_shape(self):
        event = json.loads(bench.sqs_event(self.batch))
        r = event["Records"][0]
        self.assertEqual(r["eventSource"], "aws:sqs")
        self.assertEqual(r["eventSourceARN"], bench.QUEUE_ARN)
        self.assertEqual(r["attributes"]["ApproximateReceiveCount"], "1")
        self.assertEqual(r["messageId"], self.batch[0].message_id)


class RatesTest(unittest.TestCase):
    def test_per_instance_rate_never_exceeds_the_quota_in_total(self):
        self.assertEqual(bench.per_instance_rate(20, 2), "10")
        self.assertEqual(bench.per_instance_rate(20, 8), "2.5")
        self.assertEqual(bench.per_instance_rate(20, 3), "6.666")
        self.assertEqual(bench.per_instance_rate(60, 7), "8.571")

    def test_retry_codes_from_text_and_json_logs(self):
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "instance-0.log").write_text(
                ' WARN record will be retried id=a code="deadline" error.cause_chain=x\n'
                '{"level":"WARN","fields":{"message":"record will be retried","code":"throttled"}}\n'
                ' INFO record done outcome="RETRY" code="deadline"\n')
            self.assertEqual(bench.retry_codes(Path(tmp)), {"deadline": 1, "throttled": 1})

    def test_max_in_window(self):
        self.assertEqual(bench.max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]), 3)
        self.assertEqual(bench.max_in_window([]), 0)


class FakeCognitoTest(unittest.TestCase):
    def call(self, port, op, doc):
        req = urllib.request.Request("http://127.0.0.1:%d/" % port, data=json.dumps(doc).encode(), headers={
            "X-Amz-Target": "AWSCognitoIdentityProviderService." + op,
            "Content-Type": "application/x-amz-json-1.1"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def test_protocol_and_quota(self):
        async def scenario():
            fake = FakeCognito(reset_rps=2, read_rps=100, latency_s=0, burst_s=1)
            port = await fake.start()
            try:
                user = {"UserPoolId": "us-west-2_drainpool1", "Username": "user-1@example.com"}
                got = await asyncio.to_thread(self.call, port, "AdminGetUser", user)
                groups = await asyncio.to_thread(self.call, port, "AdminListGroupsForUser", user)
                resets = [await asyncio.to_thread(self.call, port, "AdminResetUserPassword", user) for _ in range(3)]
                unknown = await asyncio.to_thread(self.call, port, "DeleteUserPool", user)
                return got, groups, resets, unknown, fake.counters
            finally:
                await fake.close()

        got, groups, resets, unknown, counters = asyncio.run(scenario())
        status, headers, body = got
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/x-amz-json-1.1")
        self.assertEqual(body["Username"], "user-1@example.com")
        self.assertIn({"Name": "email_verified", "Value": "true"}, body["UserAttributes"])
        self.assertTrue(body["Enabled"])
        self.assertEqual(groups[2]["Groups"][0]["GroupName"], "staff")
        self.assertEqual([r[0] for r in resets], [200, 200, 400])
        self.assertEqual(resets[2][1]["x-amzn-ErrorType"], "TooManyRequestsException")
        self.assertEqual(resets[2][2]["__type"], "TooManyRequestsException")
        self.assertEqual(unknown[0], 400)
        self.assertEqual(counters.resets["user-1@example.com"], 2)
        self.assertEqual(counters.throttled["AdminResetUserPassword"], 1)
        self.assertEqual(counters.total_calls, 5)


def run_bench(*args, env=None):
    with tempfile.TemporaryDirectory() as tmp:
        e = dict(os.environ)
        cmd = [sys.executable, str(ROOT / "tools" / "drain" / "bench.py"), "--binary", str(STUB),
               "--run-dir", tmp, "--start-timeout", "10", *args]
        for k, v in (env or {}).items():
            cmd += ["--env", "%s=%s" % (k, v)]
        p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=120)
        results = Path(tmp) / "results.json"
        runs = json.loads(results.read_text())["runs"] if results.exists() else []
        return p, runs


class HarnessTest(unittest.TestCase):
    """Whole runs with the stub function; fast settings (high quotas, short timeouts)."""

    FAST = ["--latency-ms", "1", "--function-timeout", "1", "--visibility-timeout", "1.5"]

    def test_a_run_within_quota_drains_everything_once(self):
        p, runs = run_bench("-n", "60", "-m", "3", "--modes", "configured", "--reset-quota", "1000",
                            "--read-quota", "1000", "--check", "--max-ratio", "100", *self.FAST)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        (r,) = runs
        self.assertEqual((r["dead_lettered"], r["reset_twice"], r["not_reset"], r["throttled"]), (0, 0, 0, 0))
        self.assertEqual(r["receives"], 60)
        self.assertEqual(r["calls"], 120)
        self.assertEqual(r["reset_rps"], "333.333")
        self.assertRegex(p.stdout.splitlines()[-1], r"^drain: \d+\.\d\dx ideal, 0 dead-lettered, 0 reset twice$")

    def test_throttled_records_are_redelivered_after_the_visibility_timeout(self):
        p, runs = run_bench("-n", "40", "-m", "2", "--modes", "off", "--reset-quota", "10", "--read-quota",
                            "1000", "--burst-s", "1", "--max-receive-count", "10", *self.FAST)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        (r,) = runs
        self.assertGreater(r["throttled"], 0)
        self.assertGreater(r["receives"], 40)
        self.assertEqual((r["dead_lettered"], r["reset_twice"], r["not_reset"]), (0, 0, 0))

    def test_failed_invocations_dead_letter_after_max_receive_count_and_check_fails(self):
        p, runs = run_bench("-n", "20", "-m", "2", "--modes", "configured", "--max-receive-count", "2",
                            "--check", *self.FAST, env={"STUB_MODE": "error"})
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        (r,) = runs
        self.assertEqual(r["dead_lettered"], 20)
        self.assertEqual(r["receives"], 40)
        self.assertEqual(r["invocation_errors"], 4)
        self.assertIn("CHECK FAILED", p.stdout)
        self.assertTrue(p.stdout.splitlines()[-1].startswith("drain: "))
        self.assertIn(" 20 dead-lettered, 0 reset twice", p.stdout.splitlines()[-1])

    def test_an_invocation_past_the_timeout_kills_the_instance_and_the_next_one_cold_starts(self):
        p, runs = run_bench("-n", "10", "-m", "1", "--modes", "off", "--max-receive-count", "2",
                            *self.FAST, env={"STUB_MODE": "sleep"})
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        (r,) = runs
        self.assertEqual(r["timeouts"], 2)
        self.assertGreaterEqual(r["cold_starts"], 2)
        self.assertEqual(r["dead_lettered"], 10)

    def test_the_probe_times_a_lone_http_batch_and_requests_during_the_drain(self):
        p, runs = run_bench("-n", "60", "-m", "2", "--modes", "configured", "--reset-quota", "1000",
                            "--read-quota", "1000", "--probe", "--probe-interval", "0.05", *self.FAST)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        (r,) = runs
        self.assertEqual(r["lone_batch_statuses"], [200] * 10)
        self.assertGreater(r["lone_batch_s"], 0)
        self.assertGreater(r["probe_idle_ms"], 0)
        self.assertGreater(len(r["probe_ms"]), 0)
        self.assertEqual(r["probe_not_ok"], 0)
        self.assertLessEqual(r["probe_p50_ms"], r["probe_p99_ms"])
        # the probe's users are not the drain's: nobody reset twice, everyone once
        self.assertEqual((r["reset_twice"], r["not_reset"]), (0, 0))
        self.assertEqual(len(r["init_ms"]), 2)
        self.assertIn("HTTP beside the drain", p.stdout)
        # the issue's figures, one line each: the probe's p99 added wait and the drain's ratio
        self.assertAlmostEqual(r["probe_added_p99_ms"], r["probe_p99_ms"] - r["probe_idle_ms"])
        self.assertRegex(p.stdout, r"(?m)^probe: p99 added wait -?\d+\.\d ms \(M=2, configured; goal <= 100 ms: "
                                   r"(met|missed)\), 0 of \d+ not 200$")
        self.assertRegex(p.stdout, r"(?m)^ratio: M=2 configured \d+\.\d{3}x$")
        self.assertGreater(r["last_reset_s"], r["first_reset_s"])
        # each request's wait for its turns, from its trace: the stub's two waits of 20 ms, inside
        # the request's own time
        self.assertEqual(len(r["probe_token_ms"]), len(r["probe_ms"]))
        for wait, ms in zip(r["probe_token_ms"], r["probe_ms"]):
            self.assertGreaterEqual(wait, 40)
            self.assertLessEqual(wait, ms)
        self.assertEqual(len(r["probe_idle_token_ms"]), 5)
        self.assertRegex(p.stdout, r"(?m)^probe: p99 wait for a turn \d+\.\d ms \(M=2, configured; its traces' "
                                   r"pacing.wait; goal <= 100 ms: (met|missed)\)$")

    def test_the_shared_mode_puts_the_guard_table_in_moto(self):
        p, runs = run_bench("-n", "30", "-m", "2", "--modes", "shared,instance", "--reset-quota", "1000",
                            "--read-quota", "1000", *self.FAST)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        shared, instance = runs
        self.assertTrue(shared["table"] and instance["table"])
        self.assertEqual((shared["max_instances"], shared["reset_rps"]), (5, "shared"))
        self.assertEqual(instance["reset_rps"], "200")
        self.assertEqual((shared["dead_lettered"], shared["reset_twice"], shared["not_reset"]), (0, 0, 0))
        self.assertIn("shared (table, MAX_INSTANCES=5)", p.stdout)

    def test_without_moto_a_table_mode_stops_the_bench(self):
        p, runs = run_bench("-n", "10", "-m", "1", "--modes", "shared", "--moto-server", "/nonexistent/moto",
                            *self.FAST)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("make tools", p.stdout)
        self.assertEqual(runs, [])

    def test_a_function_that_cannot_start_stops_the_bench_with_its_log(self):
        p, runs = run_bench("-n", "10", "-m", "2", "--modes", "off", *self.FAST, env={"STUB_MODE": "exit"})
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("exited (status 3) before asking for an invocation", p.stdout)
        self.assertIn("stub: exiting at start-up", p.stdout)
        self.assertEqual(runs, [])


class MotoCountedTest(unittest.TestCase):
    """tools/drain/moto_counted.py: moto, counting each DynamoDB operation by the kind of item."""

    def test_operations_are_counted_by_item_kind_until_reset(self):
        from moto import Moto, MotoError

        server = ROOT / ".tools" / "stack" / "bin" / "moto_server"
        if not server.is_file():
            self.skipTest("make tools installs moto into .tools/stack/")

        async def run() -> tuple[dict, dict]:
            with tempfile.TemporaryDirectory() as tmp:
                moto = Moto(server, Path(tmp) / "moto.log", counted=True)
                await moto.start()
                try:
                    moto.create_guard_table("t")
                    moto.reset_stats()
                    put = {"TableName": "t", "Item": {"pk": {"S": "key#1"}}}
                    moto.call("PutItem", put)
                    moto.call("PutItem", put)
                    moto.call("UpdateItem", {"TableName": "t", "Key": {"pk": {"S": "bucket#reads"}},
                                             "UpdateExpression": "SET n = :n",
                                             "ExpressionAttributeValues": {":n": {"N": "1"}}})
                    # A conditional write whose condition fails: counted, and counted as refused.
                    with self.assertRaises(MotoError):
                        moto.call("PutItem", {**put, "ConditionExpression": "attribute_not_exists(pk)"})
                    counted = moto.stats()
                    moto.reset_stats()
                    return counted, moto.stats()
                finally:
                    await moto.close()

        counted, after_reset = asyncio.run(run())
        self.assertEqual(counted["operations"], {"PutItem key": 3, "UpdateItem bucket": 1})
        self.assertEqual(counted["refused"], {"PutItem key": 1})
        self.assertGreater(counted["cpu_s"], 0.0)
        self.assertEqual(after_reset["operations"], {})

    def test_the_load_line_gives_operations_per_reset_and_moto_s_share_of_a_core(self):
        r = bench.RunResult(instances=2, mode="shared", reset_rps="shared", read_rps="shared", requests=100,
                            ideal_s=5.0, drain_s=10.0, table_ops={"PutItem key": 100, "UpdateItem bucket": 150},
                            table_refused={"UpdateItem bucket": 50}, table_cpu_s=5.0)
        self.assertEqual(bench.table_load(r),
                         "guard table (moto): 250 operations, 2.50 per reset (bucket 1.50 of which 0.50 refused, "
                         "key 1.00); moto's CPU 5.0 s, 50% of one core over the drain, 20.0 ms an operation")

    def test_the_dispatcher_finds_backends_as_moto_does_and_lists_moto_s_folder_once_a_host(self):
        python = ROOT / ".tools" / "stack" / "bin" / "python"
        if not python.is_file():
            self.skipTest("make tools installs moto into .tools/stack/")
        # In a process of its own (tools/moto_atomic.py: the dispatcher of every local moto).
        script = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import moto_atomic as mc
hosts = [None, "moto_api", "dynamodb.us-west-2.amazonaws.com", "sqs.us-east-1.amazonaws.com",
         "cognito-idp.us-west-2.amazonaws.com", "nothing.example.com"]
expected = [mc.DomainDispatcherApplication(mc.create_backend_app).get_backend_for_host(h) for h in hosts]
listed = [0]
listdir = os.listdir
def counting(path):
    listed[0] += 1
    return listdir(path)
os.listdir = counting
fast = mc.Dispatcher(mc.create_backend_app)
first = [fast.get_backend_for_host(h) for h in hosts]
after_first = listed[0]
again = [fast.get_backend_for_host(h) for h in hosts * 2]
print(json.dumps({"expected": expected, "first": first, "again": again,
                  "after_first": after_first, "after_again": listed[0]}))
"""
        out = subprocess.run([str(python), "-c", script, str(ROOT / "tools")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=True)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertIn("dynamodb", seen["expected"])
        self.assertEqual(seen["first"], seen["expected"])
        self.assertEqual(seen["again"], seen["expected"] * 2)
        self.assertGreater(seen["after_first"], 0)  # moto's own lookup lists its folder
        self.assertEqual(seen["after_again"], seen["after_first"])  # and the dispatcher never again


class InterruptTest(unittest.TestCase):
    """Every function process the bench started is gone after SIGINT, SIGTERM, even SIGKILL."""

    def interrupt(self, sig):
        with tempfile.TemporaryDirectory() as tmp:
            pids = Path(tmp) / "pids"
            pids.mkdir()
            cmd = [sys.executable, str(ROOT / "tools" / "drain" / "bench.py"), "--binary", str(STUB),
                   "--run-dir", tmp, "-n", "400", "-m", "3", "--env", "STUB_PID_DIR=%s" % pids]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                deadline = time.monotonic() + 20
                while len(list(pids.iterdir())) < 3:  # the three instances are up
                    self.assertLess(time.monotonic(), deadline, "instances did not start")
                    self.assertIsNone(p.poll())
                    time.sleep(0.05)
                p.send_signal(sig)
                out, _ = p.communicate(timeout=20)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            started = [int(f.name) for f in pids.iterdir()]
            deadline = time.monotonic() + 5
            while any(alive(pid) for pid in started) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual([pid for pid in started if alive(pid)], [])
            return p.returncode, out

    def test_sigint(self):
        rc, out = self.interrupt(signal.SIGINT)
        self.assertEqual(rc, 130, out)
        self.assertNotIn("Traceback", out)

    def test_sigterm(self):
        rc, out = self.interrupt(signal.SIGTERM)
        self.assertEqual(rc, 130, out)
        self.assertNotIn("Traceback", out)

    def test_sigkill_of_the_bench_takes_its_instances_with_it(self):
        rc, _ = self.interrupt(signal.SIGKILL)
        self.assertEqual(rc, -signal.SIGKILL)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
