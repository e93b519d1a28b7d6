"""moto server whose DynamoDB serves one request at a time, so a conditional write is atomic.

DynamoDB applies each conditional write atomically: of two concurrent `attribute_not_exists(pk)`
puts one fails, and two `total < :limit` updates cannot both pass the limit. moto server runs
every request on its own thread, and its DynamoDB backend takes no lock: a conditional write reads
the item, parses and evaluates its condition (plain Python), then writes, and a thread switch in
between lets two writes pass a condition only one of them should. With moto 5.2.5 and the
interpreter's switch interval set to 1 µs to make that switch likely, 7 of 200 rounds of four
concurrent conditional puts had two winners and 14 of 200 rounds of four conditional updates went
past their limit (tests/e2e/test_moto_atomic.py holds that probe). At the default interval it is
rare, and a test then fails for moto's sake: CI once saw a caller's budget of 2 admit 3 resets.

So this server is moto's own dispatcher and request handler with one WSGI layer: every DynamoDB
request (`X-Amz-Target: DynamoDB_...`) runs under one lock. The other services are unchanged.
Each request's work is still done by moto; DynamoDB's requests no longer overlap one another.

Run with the local stack's Python: `.tools/stack/bin/python tools/moto_atomic.py -H HOST -p PORT`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

DYNAMODB = threading.Lock()


def atomic_dynamodb(app):
    """`app` with each DynamoDB request served whole (its body read out) under one lock."""

    def layer(environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with DYNAMODB:
            answer = app(environ, start_response)
            try:
                return [b"".join(answer)]
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()

    return layer


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, which finds each host's backend once.

    moto's own looks the backend up on every request, under the one lock every request takes:
    it lists moto's package folder and tests each of its ~160 entries with `isdir`, twice for a
    DynamoDB request. Replaying a drain's 1,333 DynamoDB requests in-process, finding it once took
    moto's CPU from 2.1 to 1.8 ms an operation; in the drain itself, where every request waits for
    that lock, from 4.0 to 2.7 ms (2026-12-07). The answer depends only on the host and on moto's
    installed folder, which does not change while the server runs; what each request does with
    the backend is unchanged.
    """

    def __init__(self, create_app) -> None:
        super().__init__(create_app)
        self.backend_of_host: dict[object, object] = {}

    def get_backend_for_host(self, host):  # called with self.lock held
        if host not in self.backend_of_host:
            self.backend_of_host[host] = super().get_backend_for_host(host)
        return self.backend_of_host[host]


def serve(description: str, layer=lambda app: app) -> None:
    """Parse `-H HOST -p PORT` and serve moto there, DynamoDB atomic, wrapped in `layer`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, required=True)
    p.add_argument("--switch-interval-us", type=float, default=None,
                   help="the interpreter's thread switch interval (tests: a small one makes races likely)")
    p.add_argument("--unlocked", action="store_true",
                   help="serve DynamoDB as moto does, without the lock (the test that shows why it is here)")
    a = p.parse_args()
    if a.switch_interval_us is not None:
        sys.setswitchinterval(a.switch_interval_us / 1e6)
    os.environ.setdefault("MOTO_PORT", str(a.port))
    app = Dispatcher(create_backend_app)
    served = app if a.unlocked else atomic_dynamodb(app)
    run_simple(a.host, a.port, layer(served), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(__doc__.split("\n\n")[0])
