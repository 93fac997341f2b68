"""A webhook receiver on 127.0.0.1 for tests: real HTTP, answers from a list of status codes.

    with Receiver([500, 200], per_delivery=True) as receiver:
        ...  # point a webhook at receiver.url
        receiver.codes = [200]  # a receiver that was failing recovers

Each POST is answered with the next of `codes` (then the last one again): counted over every
POST, or, with `per_delivery=True`, over the POSTs of its `X-Regward-Delivery` id, so each
delivery fails the same way whichever server process sends it. Every POST is kept with the
status it got (`received`), and a POST that arrives while another one of the same delivery
is still being answered is remembered in `overlapping` (two senders holding one delivery).
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import threading


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def delivery(self) -> str:
        return self.headers.get("x-regward-delivery", "")


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections of a burst of deliveries


class Receiver:
    def __init__(self, codes: list[int], port: int = 0, *, per_delivery: bool = False) -> None:
        self.codes = codes
        self.per_delivery = per_delivery
        self.received: list[Received] = []
        self.overlapping: list[str] = []
        self._lock = threading.Lock()
        self._answering: collections.Counter[str] = collections.Counter()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                item = Received(
                    {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                item.status = receiver._arrived(item)
                try:
                    self.send_response(item.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                finally:
                    with receiver._lock:
                        receiver._answering[item.delivery] -= 1

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _arrived(self, item: Received) -> int:
        """Keep `item`; the status it is answered with."""
        with self._lock:
            if self._answering[item.delivery] and self.per_delivery:
                self.overlapping.append(item.delivery)
            self._answering[item.delivery] += 1
            self.received.append(item)
            seen = (
                sum(1 for r in self.received if r.delivery == item.delivery)
                if self.per_delivery
                else len(self.received)
            )
            return self.codes[min(seen, len(self.codes)) - 1]

    def of(self, delivery: int | str) -> list[Received]:
        """The POSTs of one delivery, in the order they came."""
        with self._lock:
            return [r for r in self.received if r.delivery == str(delivery)]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
