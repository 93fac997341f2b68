"""The HTTP server's own answers in the API's error shape.

uvicorn answers a request its parser cannot read (a malformed request line or header, a
request line past the parser's limits) by itself, before the application sees it, with a
plain-text `400 Invalid HTTP request received.`. `JsonErrors` is the server's protocol
(regward.server.feed_protocol's, uvicorn's httptools protocol with the feed's polls) with that
answer as `{"detail": ...}`, the shape of every other error of the API:

    uvicorn.run(app, http=JsonErrors, ...)
"""

from __future__ import annotations

import json

from regward.server.feed_protocol import FeedProtocol

UNREADABLE = json.dumps(
    {
        "detail": "the server cannot read this request as HTTP/1.1 (a malformed request line "
        "or header, or a request line of more than about 64 KiB); send a well-formed request"
    }
).encode()


class JsonErrors(FeedProtocol):
    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(UNREADABLE)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + UNREADABLE)
        self.transport.close()
