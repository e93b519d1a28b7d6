"""moto server, counting what the drain benchmark's fleet asks of its DynamoDB.

The same server as `moto_server -H HOST -p PORT` (moto's own dispatcher and request handler), with
a WSGI layer that counts each DynamoDB operation by the kind of item it names (the prefix of its
`pk`: `bucket`, `key`, `user`, `answer`, ...), and two paths of its own:

- `GET /_drain/stats`: the counts since the last reset (`operations`, and of them `refused`: the
  answers 400, a conditional write's condition failing among them) and the process's CPU seconds
  (user + system) since then, as JSON;
- `POST /_drain/reset`: start counting again.

So the benchmark can say how many table operations a reset cost and how much of a core moto
needed for them (moto, one Python process, is the fleet's DynamoDB here, and its CPU is what caps
the drain on a small machine). Run with the local stack's Python (`.tools/stack/bin/python`).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import sys
import threading
from pathlib import Path

# This folder has a moto.py of its own (the benchmark's client): import the real moto.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app  # noqa: E402,E501
from werkzeug.serving import run_simple  # noqa: E402

LOCK = threading.Lock()
COUNTS: collections.Counter[str] = collections.Counter()
REFUSED: collections.Counter[str] = collections.Counter()
CPU_AT_RESET = [0.0]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def item_kind(body: bytes) -> str:
    """The kind of item a DynamoDB request names: its `pk` up to the first `#` (`tx` for a
    transaction, `-` for none)."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return "?"
    if "TransactItems" in request:
        return "tx"
    pk = (request.get("Item") or request.get("Key") or {}).get("pk", {}).get("S", "")
    return pk.split("#", 1)[0] or "-"


def counted(app):
    def layer(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_drain/stats":
            with LOCK:
                body = json.dumps({"operations": dict(COUNTS), "refused": dict(REFUSED),
                                   "cpu_s": cpu_s() - CPU_AT_RESET[0]}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/_drain/reset":
            with LOCK:
                COUNTS.clear()
                REFUSED.clear()
                CPU_AT_RESET[0] = cpu_s()
            start_response("204 No Content", [])
            return [b""]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return app(environ, start_response)
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size)
        environ["wsgi.input"] = io.BytesIO(body)
        name = "%s %s" % (target.split(".", 1)[-1], item_kind(body))

        def counting_start_response(status, headers, *rest):
            with LOCK:
                COUNTS[name] += 1
                # A refused conditional write (400 ConditionalCheckFailedException, ...).
                if status.startswith("400"):
                    REFUSED[name] += 1
            return start_response(status, headers, *rest)

        return app(environ, counting_start_response)

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, required=True)
    a = p.parse_args()
    os.environ.setdefault("MOTO_PORT", str(a.port))
    app = Dispatcher(create_backend_app)
    run_simple(a.host, a.port, counted(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
