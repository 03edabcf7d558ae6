# A generic HTTP worker written with Python's standard library only, shaped
# like many real inference servers and unlike the hive's own test workers:
#
#   - it prints nothing, ever (in particular not when it becomes ready), so
#     a supervisor can only learn readiness by probing;
#   - GET /health answers 503 while it "loads" and 200 once ready;
#   - it answers HTTP/1.0 and closes the connection after every answer, so
#     every probe costs a new TCP connection;
#   - SIGTERM exits 0 at once, unless PYW_IGNORE_TERM=1.
#
# Usage: python3 worker.py --port P [anything else is ignored]
# Environment (all optional):
#   PYW_START_FILE  written with the CLOCK_REALTIME nanoseconds taken by the
#                   script's first instruction (launch cost)
#   PYW_LOAD_MS     how long it loads (default 0)
#   PYW_READY_FILE  written with the nanoseconds at which /health turned 200
#   PYW_IGNORE_TERM 1: ignore SIGTERM
import time

T0 = time.time_ns()  # the first instruction: everything below comes after

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


def stamp(var, ns):
    path = os.environ.get(var)
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(ns))
        os.rename(tmp, path)


stamp("PYW_START_FILE", T0)

if os.environ.get("PYW_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

port = 0
args = sys.argv[1:]
for i, a in enumerate(args):
    if a == "--port" and i + 1 < len(args):
        port = int(args[i + 1])

ready = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one answer per connection, then close

    def do_GET(self):
        if self.path == "/health":
            code, body = (200, b'{"status":"ok"}') if ready else (503, b'{"status":"loading"}')
        else:
            code, body = 404, b'{"error":"not found"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # silent


server = HTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()

load = int(os.environ.get("PYW_LOAD_MS", "0") or 0)
if load > 0:
    time.sleep(load / 1000)
ready = True
stamp("PYW_READY_FILE", time.time_ns())

while True:
    time.sleep(3600)
