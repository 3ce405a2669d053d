# The function's own HTTP server for the mode=http tests (tests/common/upstream.rs):
# `python3 http_upstream.py PORT STATE_DIR [DEFAULT_ROUTE]`.
#
# It reports what it received (so that tests can assert what the watchdog forwarded), misbehaves on
# request (slow, crashing, truncated or garbage answers), streams events, echoes WebSocket messages,
# and leaves marker files in STATE_DIR for what tests cannot see from outside (when it got SIGTERM,
# when a slow answer was complete, when a client went away), and a line per request (method and
# path) in STATE_DIR/requests. The route is the path's last segment; a path without a route of its
# own gets DEFAULT_ROUTE (`inspect` unless given).
#
# Environment: LISTEN_AFTER=<file> waits for that file before listening; IGNORE_TERM=1 ignores
# SIGTERM.

import base64
import gzip
import hashlib
import os
import signal
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PORT = int(sys.argv[1])
STATE = sys.argv[2]
DEFAULT_ROUTE = sys.argv[3] if len(sys.argv) > 3 else "inspect"


def mark(name, text=""):
    tmp = os.path.join(STATE, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(STATE, name))


def wait_file(path, limit=30):
    end = time.time() + limit
    while not os.path.exists(path) and time.time() < end:
        time.sleep(0.01)


def on_term(signum, frame):
    mark("sigterm", repr(time.time()))
    os._exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else on_term)
print("upstream says hello on stdout", flush=True)
print("upstream says hello on stderr", file=sys.stderr, flush=True)
if os.environ.get("LISTEN_AFTER"):
    wait_file(os.environ["LISTEN_AFTER"], limit=3600)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def __getattr__(self, name):
        # Every method, standard or not, is handled the same way.
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        # In pieces: a Content-Length far beyond what arrives must not be allocated up front.
        length, data = int(self.headers.get("Content-Length") or 0), b""
        while len(data) < length:
            piece = self.rfile.read1(min(length - len(data), 1 << 16))
            if not piece:
                break
            data += piece
        return data

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def handle_any(self):
        # One handler per connection: this counts the connection's requests.
        self.on_connection = getattr(self, "on_connection", 0) + 1
        with open(os.path.join(STATE, "requests"), "a") as f:
            f.write("%s %s\n" % (self.command, self.path))
        path, _, query = self.path.partition("?")
        args = {k: v[0] for k, v in parse_qs(query).items()}
        route = path.rsplit("/", 1)[-1]
        if route == "stall":
            # Neither reads the body nor answers: the watchdog's upload blocks once the buffers are full.
            time.sleep(float(args.get("s", "60")))
            self.close_connection = True
            return
        body = self.read_body()
        default = getattr(self, "route_" + DEFAULT_ROUTE)
        getattr(self, "route_" + route.replace("-", "_"), default)(args, body)

    def route_inspect(self, args, body):
        lines = ["method " + self.command, "path " + self.path, "length %d" % len(body)]
        lines += ["header %s: %s" % (k, v) for k, v in self.headers.items()]
        self.reply(200, "\n".join(lines).encode(), [("Content-Type", "text/plain")])

    def route_mirror(self, args, body):
        self.reply(200, body, [("Content-Type", "application/octet-stream")])

    def route_status(self, args, body):
        code = int(args.get("code", "200"))
        headers = [("X-Reply", "yes"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        if code == 302:
            headers.append(("Location", "/elsewhere"))
        self.reply(code, b"status %d" % code, headers)

    def route_hop(self, args, body):
        self.reply(200, b"hop", [
            ("Connection", "X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("X-Visible", "1"),
        ])

    def route_healthz(self, args, body):
        self.reply(204)

    def route_slow(self, args, body):
        mark("slow-started")
        time.sleep(int(args.get("ms", "1000")) / 1000)
        mark("slow-answered", repr(time.time()))
        self.reply(200, b"slow done")

    def route_hold(self, args, body):
        # Waits until the client (the watchdog) closes the connection.
        mark("holding")
        self.connection.settimeout(20)
        try:
            gone = self.connection.recv(1) == b""
        except OSError:
            gone = False
        if gone:
            mark("gone")
        self.close_connection = True

    def route_crash(self, args, body):
        os._exit(int(args.get("code", "3")))

    def route_close(self, args, body):
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_garbage(self, args, body):
        self.wfile.write(b"this is not HTTP\r\n\r\n")
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_truncated(self, args, body):
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"only ten b")
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_truncated_chunked(self, args, body):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.chunk(b"first chunk")
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_idle_close(self, args, body):
        # Answers, then closes the connection once it has been idle for `ms`, without having said
        # `Connection: close`, as servers with a short keep-alive timeout do.
        self.reply(200, b"idle close")
        self.connection.settimeout(int(args.get("ms", "0")) / 1000)

    def route_peer(self, args, body):
        # The port the watchdog's connection comes from: the same port, the same connection.
        self.reply(200, str(self.client_address[1]).encode())

    def route_close_reused(self, args, body):
        # Answers the first request on a connection. A later one is noted and the connection
        # closed without an answer, as by a server whose keep-alive timeout ran out as it came.
        reused = self.on_connection > 1
        with open(os.path.join(STATE, "close-reused"), "a") as f:
            f.write("%s %d %s\n" % (self.command, len(body), "closed" if reused else "answered"))
        if not reused:
            return self.reply(200, b"first on its connection")
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_length_and_chunked(self, args, body):
        # Conflicting framing: Transfer-Encoding wins (RFC 9112 6.3), so the body is all 11 bytes.
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.chunk(b"hello")
        self.chunk(b" world")
        self.chunk(b"")

    def route_gzip_chunked(self, args, body):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "gzip, chunked")
        self.end_headers()
        self.chunk(gzip.compress(b"hello, compressed"))
        self.chunk(b"")

    def route_stream(self, args, body):
        # Event one, then event two once the test creates the file `go`, then the end.
        self.send_response(200)
        self.send_header("Content-Type", args.get("type", "text/event-stream"))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.chunk(b"data: one\n\n")
        wait_file(os.path.join(STATE, args.get("go", "go")))
        self.chunk(b"data: two\n\n")
        self.chunk(b"")

    def route_ws(self, args, body):
        key = self.headers["Sec-WebSocket-Key"]
        magic = key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(magic).digest()).decode())
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                return
            reply = b"echo: " + data
            size = bytes([len(reply)]) if len(reply) < 126 else b"\x7e" + struct.pack(">H", len(reply))
            self.wfile.write(bytes([0x80 | opcode]) + size + reply)
            self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
