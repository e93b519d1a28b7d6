"""The local stack's DynamoDB keeps a conditional write atomic, as DynamoDB does (tools/moto_atomic.py).

The guard's correctness under concurrency (a claim, a caller's budget, the pacing bucket) rests on
DynamoDB applying each conditional write atomically. moto server does not: its requests run on
threads and a write's read, condition and update are not done under a lock. The probe: rounds of
four concurrent conditional puts of one new item (`attribute_not_exists(pk)`: one may win) and four
concurrent conditional updates of it (`n < 2`: one may add), with the server's thread switch
interval at 1 µs so that a switch inside a write is likely. Plain moto fails the probe (the second
test, so that a probe that could not see a race would show); the stack's moto passes it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import boto3
import pytest
from botocore.config import Config

import stack as driver

ROUNDS = 60
WRITERS = 4


@contextmanager
def moto(atomic: bool, tmp_path):
    service, url = driver.start_moto(tmp_path / "moto.log", tmp_path / "recording.jsonl",
                                     atomic=atomic, switch_interval_us=1)
    try:
        yield url
    finally:
        service.stop()


def races(url: str) -> tuple[int, int]:
    """(rounds where more than one put won, rounds where more than one update passed `n < 2`)."""
    config = Config(retries={"max_attempts": 1}, max_pool_connections=WRITERS)
    clients = [boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                            aws_secret_access_key="x", config=config) for _ in range(WRITERS)]
    clients[0].create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")

    def together(write) -> int:
        """How many of WRITERS concurrent calls of `write(client)` succeeded."""
        wins = []
        start = threading.Barrier(WRITERS)

        def one(client):
            start.wait()
            try:
                write(client)
                wins.append(client)
            except client.exceptions.ConditionalCheckFailedException:
                pass

        threads = [threading.Thread(target=one, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(wins)

    double_puts = over_updates = 0
    for i in range(ROUNDS):
        key = {"pk": {"S": f"item#{i}"}}
        double_puts += together(lambda c: c.put_item(
            TableName="t", Item={**key, "n": {"N": "1"}}, ConditionExpression="attribute_not_exists(pk)")) > 1
        over_updates += together(lambda c: c.update_item(
            TableName="t", Key=key, UpdateExpression="ADD n :one", ConditionExpression="n < :limit",
            ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": "2"}})) > 1
    return double_puts, over_updates


def test_the_stacks_moto_lets_one_of_concurrent_conditional_writes_pass(tmp_path):
    with moto(True, tmp_path) as url:
        assert races(url) == (0, 0)


def test_plain_moto_lets_more_than_one_pass(tmp_path):
    # (what the stack's moto is for: if this ever passes no race, the probe above proves nothing)
    with moto(False, tmp_path) as url:
        double_puts, over_updates = races(url)
    if double_puts + over_updates == 0:
        pytest.fail(f"plain moto passed {ROUNDS} rounds without a race: the probe no longer sees one")
