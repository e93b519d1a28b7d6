"""reset-enqueue against moto's SQS (issue 19): 500 users on a standard and a FIFO queue, twice
(no duplicates); a bad line (nothing sent); --wait against the real function draining the queue,
with the outcome events routed to the results queue by the bus's rule.

The binary is target/debug/reset-enqueue (`make e2e` builds it with --features enqueue).
"""

from __future__ import annotations

import csv
import json

import pytest

import stack as driver

USERS = 500


def _csv(path, names, header="username"):
    path.write_text(header + "\n" + "\n".join(names) + "\n")
    return path


def _drain_bodies(stack, url) -> list[dict]:
    """Every message on the queue (received and deleted), as parsed bodies."""
    sqs = driver.aws_client("sqs", stack.endpoint)
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        bodies += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


@pytest.mark.parametrize("queue", ["enqueue-standard", "enqueue.fifo"])
def test_500_users_are_enqueued_once_even_when_the_command_runs_twice(stack, users, tmp_path, queue):
    url = driver.create_request_queue(stack.endpoint, queue)
    names = [f"user{i:04d}@example.com" for i in range(USERS)]
    path = _csv(tmp_path / "users.csv", names)
    # The demo pool sends with Cognito's default sender: past the preflight's 50 users only with
    # --allow-default-email (these users need not exist: nothing drains the queue).
    args = ["--queue-url", url, "--user-pool-id", driver.DEMO_POOL, "--reason", "INC-1",
            "--allow-default-email", str(path)]

    first = driver.run_enqueue(stack.endpoint, args)
    assert first.returncode == 0, first.stderr
    assert f"sent {USERS}, already sent 0, failed 0" in first.stdout
    second = driver.run_enqueue(stack.endpoint, args)
    assert second.returncode == 0, second.stderr
    assert f"sent 0, already sent {USERS}, failed 0" in second.stdout

    bodies = _drain_bodies(stack, url)
    assert sorted(b["Username"] for b in bodies) == names  # each exactly once
    assert {b["UserPoolId"] for b in bodies} == {driver.DEMO_POOL}
    assert {b["Reason"] for b in bodies} == {"INC-1"}


def test_fifo_messages_carry_a_group_per_user_and_a_deduplication_id(stack, users, tmp_path):
    url = driver.create_request_queue(stack.endpoint, "enqueue-ids.fifo")
    path = _csv(tmp_path / "users.csv", ["alice@example.com", "bob@example.com"])
    result = driver.run_enqueue(stack.endpoint, ["--queue-url", url, "--user-pool-id", driver.DEMO_POOL, str(path)])
    assert result.returncode == 0, result.stderr
    sqs = driver.aws_client("sqs", stack.endpoint)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    groups = {m["Attributes"]["MessageGroupId"] for m in got}
    dedups = {m["Attributes"]["MessageDeduplicationId"] for m in got}
    assert len(got) == 2 and len(groups) == 2 and len(dedups) == 2


def test_a_bad_line_means_nothing_is_sent_and_every_bad_line_is_named(stack, users, tmp_path):
    url = driver.create_request_queue(stack.endpoint, "enqueue-bad")
    names = [f"user{i:04d}@example.com" for i in range(20)]
    names[4] = "has space@example.com"
    names[11] = '"unterminated'
    path = _csv(tmp_path / "users.csv", names)
    result = driver.run_enqueue(stack.endpoint, ["--queue-url", url, "--user-pool-id", driver.DEMO_POOL, str(path)])
    assert result.returncode == 2
    assert "line 6: " in result.stderr and "whitespace" in result.stderr
    assert "line 13: " in result.stderr
    assert "nothing was sent" in result.stderr
    assert _drain_bodies(stack, url) == []
    assert not (tmp_path / "users.csv.enqueue-state.jsonl").exists()


def test_wait_reports_every_users_outcome_from_the_function_draining_the_queue(stack, users, function, tmp_path):
    # Given 12 users the demo policy's ticket-queue rule allows, one it denies and one that does
    # not exist, and the function draining the queue the policy names.
    emails = driver.seed_mass_users(stack.endpoint, 12)
    url = driver.create_request_queue(stack.endpoint)
    path = _csv(tmp_path / "users.csv", emails + ["admin@example.com", "ghost@example.com"])
    report = tmp_path / "report.csv"
    drainer = driver.Drainer(stack.endpoint, function, url)
    drainer.start()
    try:
        # When reset-enqueue sends them and waits for their outcomes.
        result = driver.run_enqueue(stack.endpoint, [
            "--queue-url", url, "--user-pool-id", driver.DEMO_POOL, "--reason", "INC-7",
            "--wait", "--results-queue", driver.results_queue_url(stack.endpoint), "--timeout", "120",
            "--report", str(report), str(path),
        ])
    finally:
        drainer.stop()
    # Then the report lists every user with the function's outcome; not all RESET: exit 1.
    assert result.returncode == 1, result.stdout + result.stderr
    with report.open() as f:
        rows = {r["username"]: (r["outcome"], r["code"]) for r in csv.DictReader(f)}
    assert rows == {
        **{e: ("RESET", "") for e in emails},
        "admin@example.com": ("REJECTED", "denied-user"),
        "ghost@example.com": ("REJECTED", "user-not-found"),
    }
    table = [line.split() for line in result.stdout.splitlines()]
    assert ["RESET", "12"] in table and ["REJECTED", "denied-user", "1"] in table
    assert all(count == 1 for (pool, user), count in stack.reset_calls().items() if user in emails)
    assert sum(stack.reset_calls().values()) == 12

    # And a second --wait of the same command sends nothing and reports from the state file.
    again = driver.run_enqueue(stack.endpoint, [
        "--queue-url", url, "--user-pool-id", driver.DEMO_POOL, "--reason", "INC-7",
        "--wait", "--results-queue", driver.results_queue_url(stack.endpoint), "--timeout", "5",
        "--report", str(report), str(path),
    ])
    assert "sent 0, already sent 14" in again.stdout
    assert ["RESET", "12"] in [line.split() for line in again.stdout.splitlines()]


def test_wait_exits_0_when_every_user_is_reset(stack, users, function, tmp_path):
    emails = driver.seed_mass_users(stack.endpoint, 3, prefix="ok")
    url = driver.create_request_queue(stack.endpoint)
    path = _csv(tmp_path / "users.csv", emails)
    drainer = driver.Drainer(stack.endpoint, function, url)
    drainer.start()
    try:
        result = driver.run_enqueue(stack.endpoint, [
            "--queue-url", url, "--user-pool-id", driver.DEMO_POOL, "--wait",
            "--results-queue", driver.results_queue_url(stack.endpoint), "--timeout", "120", str(path),
        ])
    finally:
        drainer.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "users.csv.report.csv").exists()
