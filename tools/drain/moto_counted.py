"""moto server, counting what the drain benchmark's fleet asks of its DynamoDB.

The local stack's moto (tools/moto_atomic.py: moto's own dispatcher and request handler, each
DynamoDB request served under one lock so a conditional write is atomic), with a WSGI layer that
counts each DynamoDB operation by the kind of item it names (the prefix of its
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

import collections
import io
import json
import sys
import threading
import time
from pathlib import Path

# This folder has a moto.py of its own (the benchmark's client): import the real moto.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

sys.path.insert(0, str(HERE.parent))
from moto_atomic import serve  # noqa: E402  (tools/moto_atomic.py: moto, its DynamoDB atomic)

LOCK = threading.Lock()
COUNTS: collections.Counter[str] = collections.Counter()
REFUSED: collections.Counter[str] = collections.Counter()
CPU_AT_RESET = [0.0]


def cpu_s() -> float:
    """The process's CPU seconds (user + system), to the nanosecond: `os.times()` counts in clock
    ticks (10 ms), which a handful of requests (about 2 ms each) can fall short of."""
    return time.process_time()


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


def main() -> None:
    serve(__doc__.split("\n\n")[0], counted)


if __name__ == "__main__":
    main()
