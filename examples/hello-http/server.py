"""The canonical function as a long-running HTTP server, for fwatchdog's mode=http.

The watchdog starts this program once and forwards every request to upstream_url. The server
listens on that URL's port: both sides read the same variable, so they cannot disagree. Unlike a
fork-mode function it keeps state between requests (the X-Served counter) and chooses its own
status codes and headers. Standard library only.
"""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = 0
    lock = threading.Lock()

    def do_POST(self):
        said = self.read_body()
        with Hello.lock:
            Hello.served += 1
            served = Hello.served
        self.reply(200, b"Hello, http. You said: " + said, [("X-Served", str(served))])

    def do_GET(self):
        self.reply(405, b"POST something to me\n", [("Allow", "POST")])

    def read_body(self):
        # A proxy may forward the body chunked, which http.server does not decode itself.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return bytes(body)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body, headers):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def main():
    url = os.environ.get("http_upstream_url") or os.environ.get("upstream_url") or "http://127.0.0.1:5000"
    server = ThreadingHTTPServer(("127.0.0.1", urlsplit(url).port or 80), Hello)
    print(f"Listening on {url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
