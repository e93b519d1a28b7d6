"""A simulated SQS standard queue with a redrive policy, for the drain benchmark.

Pure bookkeeping over an injected clock (no I/O): receive makes messages invisible for the
visibility timeout and counts the receive; delete removes them; a message that is not deleted
becomes visible again when its visibility timeout ends; a message about to be received more than
`max_receive_count` times goes to the dead-letter list instead, as SQS's redrive policy does.
"""

from __future__ import annotations

import heapq
import time
import uuid
from dataclasses import dataclass, field


@dataclass
class Message:
    seq: int
    message_id: str
    body: str
    sent_ms: int
    receive_count: int = 0
    first_receive_ms: int = 0
    receipt: str = ""
    generation: int = 0  # bumped on every receive; stale heap entries are skipped
    deleted: bool = False
    dead: bool = False


@dataclass
class SimQueue:
    visibility_s: float
    max_receive_count: int
    clock: object = time.monotonic
    messages: dict = field(default_factory=dict)  # message_id -> Message
    dead_letters: list = field(default_factory=list)
    receives: int = 0
    _heap: list = field(default_factory=list)  # (visible_at, seq, message_id, generation)
    _open: int = 0  # neither deleted nor dead-lettered

    def send(self, body: str) -> Message:
        seq = len(self.messages)
        m = Message(seq=seq, message_id=str(uuid.uuid4()), body=body, sent_ms=int(time.time() * 1000))
        self.messages[m.message_id] = m
        heapq.heappush(self._heap, (self.clock(), seq, m.message_id, m.generation))
        self._open += 1
        return m

    @property
    def done(self) -> bool:
        return self._open == 0

    def _top(self):
        """The first live heap entry (stale ones dropped), or None."""
        while self._heap:
            visible_at, _seq, mid, gen = self._heap[0]
            m = self.messages[mid]
            if m.deleted or m.dead or gen != m.generation:
                heapq.heappop(self._heap)
                continue
            return self._heap[0]
        return None

    def next_visible_at(self) -> float | None:
        top = self._top()
        return None if top is None else top[0]

    def receive(self, max_n: int) -> list[Message]:
        """Up to max_n visible messages, now invisible for the visibility timeout."""
        now = self.clock()
        out: list[Message] = []
        while len(out) < max_n:
            top = self._top()
            if top is None or top[0] > now:
                break
            heapq.heappop(self._heap)
            m = self.messages[top[2]]
            if m.receive_count >= self.max_receive_count:
                m.dead = True
                self._open -= 1
                self.dead_letters.append(m)
                continue
            m.receive_count += 1
            self.receives += 1
            if m.receive_count == 1:
                m.first_receive_ms = int(time.time() * 1000)
            m.generation += 1
            m.receipt = "%s#%d" % (m.message_id, m.generation)
            heapq.heappush(self._heap, (now + self.visibility_s, m.seq, m.message_id, m.generation))
            out.append(m)
        return out

    def delete(self, m: Message) -> None:
        if not (m.deleted or m.dead):
            m.deleted = True
            self._open -= 1
