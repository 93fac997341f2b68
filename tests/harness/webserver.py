"""An ordinary (non-registry) server for the transparent tests: every path answers
`hello from the web` over plain HTTP and TLS, and a server-first port sends a banner before
reading anything (as SSH or SMTP do). `/echo` over plain HTTP is a WebSocket echo
(tests/harness/websocket.py).

    python -m tests.harness.webserver ADDRESS --http 80 --https 443 CERT KEY --banner 2222
"""

from __future__ import annotations

import argparse
import http.server
import socketserver
import ssl
import threading

from tests.harness.websocket import serve_echo

BODY = b"hello from the web\n"
BANNER = b"220 banner from a server that speaks first\r\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if self.path == "/echo" and (self.headers.get("Upgrade") or "").lower() == "websocket":
            assert key is not None
            serve_echo(self.rfile, self.wfile, key)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(BANNER)
        self.request.recv(1024)


class _Threading(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--http", type=int)
    parser.add_argument("--https", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--banner", type=int)
    args = parser.parse_args()
    servers: list[socketserver.BaseServer] = []
    if args.http:
        servers.append(http.server.ThreadingHTTPServer((args.address, args.http), _Handler))
    if args.https:
        secure = http.server.ThreadingHTTPServer((args.address, args.https), _Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        # busybox wget sends no signature_algorithms: TLS 1.2 then means SHA-1 signatures,
        # which OpenSSL allows only at security level 0 (Go servers accept it as it is).
        context.set_ciphers("ALL:@SECLEVEL=0")
        secure.socket = context.wrap_socket(secure.socket, server_side=True)
        servers.append(secure)
    if args.banner:
        servers.append(_Threading((args.address, args.banner), _Banner))
    threads = [threading.Thread(target=server.serve_forever) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
