"""The canonical function: fwatchdog writes the request body to STDIN and answers with STDOUT.
An exception (a non-zero exit) becomes a 500."""

import sys


def handle(request: bytes) -> bytes:
    return b"Hello, Python. You said: " + request


if __name__ == "__main__":
    sys.stdout.buffer.write(handle(sys.stdin.buffer.read()))
