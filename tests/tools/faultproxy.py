#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""faultproxy.py - an HTTP reverse proxy on 127.0.0.1 in front of a registry that
injects faults into selected requests, for the registry fault tests.

  faultproxy.py --upstream 127.0.0.1:PORT --control FILE --log FILE
                [--port N] [--notify FIFO] [--stall SECONDS] [--retry-after SECONDS]

  --port N        listen port (default 0: any free port)
  --notify FIFO   once listening, write the port number and a newline there
  --log FILE      one tab-separated line per request, written when it ends (stalls:
                  when the stall begins):
                  unix_time seq method path range fault status body_bytes_sent seconds
                  (range "-" if none, fault "-" if none, status "-" if nothing was sent)
  --stall S       how long a stall lasts before the proxy closes the connection (default 8)

The control FILE is re-read whenever it changes (a missing file means "pass"). Lines:
  pass                      no faults (default)
  always KIND               every eligible request gets KIND
  every N KIND[,KIND...]    every Nth eligible request gets a fault, cycling through the kinds
  queue KIND [KIND...]      the next eligible requests get these kinds, in order, one each;
                            then `always`/`every` apply again. A rewrite of the file restarts
                            the queue and the counter of `every`.
  delay SECONDS             wait this long before answering every eligible request
  scope ranges|blobs|all    eligible: blob GETs with a Range header (default), every blob
                            GET, or every request
Kinds:
  reset      the upstream status line, headers and half the body, then a TCP RST
  truncate   the upstream headers (full Content-Length) and half the body, then close
  500        HTTP 500 with a registry error body
  503        HTTP 503 with Retry-After (--retry-after, default 1)
  429        HTTP 429 with Retry-After
  stall      nothing at all for --stall seconds, then close
  stallbody  the headers and a quarter of the body, then nothing for --stall seconds, close
  badrange   206 with a Content-Range (and body) one byte off the range asked for
  whole      200 with the whole blob (the Range header ignored), as some servers do
  shortbody  206, correct Content-Range, but a Content-Length and body 1 byte short
  corrupt    the upstream answer with two body bytes flipped
  pass       no fault (useful in a queue)
Everything else is forwarded unchanged (headers, query string, request body).
"""
import argparse, http.client, os, re, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {"reset", "truncate", "500", "503", "429", "stall", "stallbody", "badrange", "whole",
         "shortbody", "corrupt", "pass"}
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "content-length", "host"}

ap = argparse.ArgumentParser()
ap.add_argument("--upstream", required=True)
ap.add_argument("--control", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--notify")
ap.add_argument("--stall", type=float, default=8.0)
ap.add_argument("--retry-after", type=int, default=1)
A = ap.parse_args()
UP_HOST, UP_PORT = A.upstream.rsplit(":", 1)
UP_PORT = int(UP_PORT)


class Plan:
    """The parsed control file plus the counters it drives; guarded by lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sig = None
        self.reset(b"")
        self.seq = 0

    def reset(self, text):
        self.mode, self.kinds, self.every, self.queue = "pass", [], 0, []
        self.delay, self.scope, self.n = 0.0, "ranges", 0
        for raw in text.decode(errors="replace").splitlines():
            w = raw.split("#", 1)[0].split()
            if not w:
                continue
            try:
                if w[0] == "pass":
                    self.mode = "pass"
                elif w[0] == "always" and len(w) == 2 and w[1] in KINDS:
                    self.mode, self.kinds = "always", [w[1]]
                elif w[0] == "every" and len(w) == 3 and int(w[1]) > 0:
                    ks = w[2].split(",")
                    if not all(k in KINDS for k in ks):
                        raise ValueError(w[2])
                    self.mode, self.every, self.kinds = "every", int(w[1]), ks
                elif w[0] == "queue" and all(k in KINDS for k in w[1:]):
                    self.queue = list(w[1:])
                elif w[0] == "delay" and len(w) == 2:
                    self.delay = float(w[1])
                elif w[0] == "scope" and len(w) == 2 and w[1] in ("ranges", "blobs", "all"):
                    self.scope = w[1]
                else:
                    raise ValueError(raw)
            except ValueError:
                sys.stderr.write("faultproxy: ignoring control line %r\n" % raw)

    def refresh(self):
        try:
            st = os.stat(A.control)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        if sig != self.sig:
            text = b""
            if sig is not None:
                with open(A.control, "rb") as f:
                    text = f.read()
            self.reset(text)
            self.sig = sig

    def pick(self, method, path, has_range):
        """-> (seq, fault or None, delay)"""
        with self.lock:
            self.seq += 1
            seq = self.seq
            self.refresh()
            is_blob = method == "GET" and "/blobs/sha256:" in path
            eligible = (self.scope == "all" or (self.scope == "blobs" and is_blob) or
                        (self.scope == "ranges" and is_blob and has_range))
            if not eligible:
                return seq, None, 0.0
            self.n += 1
            fault = None
            if self.queue:
                fault = self.queue.pop(0)
            elif self.mode == "always":
                fault = self.kinds[0]
            elif self.mode == "every" and self.n % self.every == 0:
                fault = self.kinds[(self.n // self.every - 1) % len(self.kinds)]
            return seq, (None if fault == "pass" else fault), self.delay


PLAN = Plan()
LOGLOCK = threading.Lock()


def upstream(method, path, headers, body=None):
    c = http.client.HTTPConnection(UP_HOST, UP_PORT, timeout=60)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read() if method != "HEAD" else b""
        return r.status, r.reason, r.getheaders(), data
    finally:
        c.close()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def log_line(self, seq, rng, fault, status, sent, t0):
        with LOGLOCK, open(A.log, "a") as f:
            f.write("%.3f\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%.3f\n" % (
                time.time(), seq, self.command, self.path, rng or "-", fault or "-",
                status, sent, time.time() - t0))

    def send_head(self, status, reason, headers, length):
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def rst(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def handle_any(self):
        t0 = time.time()
        rng = self.headers.get("Range")
        seq, fault, delay = PLAN.pick(self.command, self.path, rng is not None)
        body = None
        if self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        fwd = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP]
        fwd.append(("Host", self.headers.get("Host", A.upstream)))
        status, sent, logged = "-", 0, False
        try:
            if delay:
                time.sleep(delay)
            if fault == "stall":
                self.close_connection = True
                self.log_line(seq, rng, fault, status, sent, t0)
                logged = True
                time.sleep(A.stall)
                return
            if fault in ("500", "503", "429"):
                msg = b'{"errors":[{"code":"UNKNOWN","message":"injected by faultproxy"}]}'
                extra = [("Content-Type", "application/json")]
                if fault != "500":
                    extra.append(("Retry-After", str(A.retry_after)))
                status = int(fault)
                self.send_head(status, None, extra, len(msg))
                self.wfile.write(msg)
                sent = len(msg)
                return
            if fault == "whole":
                fwd = [(k, v) for k, v in fwd if k.lower() != "range"]
            if fault == "badrange":
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
                if m:
                    a, b = int(m.group(1)), int(m.group(2))
                    d = -1 if a > 0 else 1
                    fwd = [(k, v) for k, v in fwd if k.lower() != "range"] + [("Range", "bytes=%d-%d" % (a + d, b + d))]
            st, reason, hdrs, data = upstream(self.command, self.path, fwd, body)
            status = st
            if fault == "shortbody" and st == 206 and len(data) > 1:
                data = data[:-1]
            if fault == "corrupt" and data:
                data = bytearray(data)
                data[0] ^= 0xFF
                data[len(data) // 2] ^= 0x5A
                data = bytes(data)
            if fault in ("reset", "truncate", "stallbody"):
                self.send_head(st, reason, hdrs, len(data))
                part = data[: len(data) // (4 if fault == "stallbody" else 2)]
                self.wfile.write(part)
                self.wfile.flush()
                sent = len(part)
                if fault == "stallbody":
                    self.log_line(seq, rng, fault, status, sent, t0)
                    logged = True
                    time.sleep(A.stall)
                if fault == "reset":
                    self.rst()
                else:
                    self.close_connection = True
                return
            if self.command == "HEAD":
                n = dict((k.lower(), v) for k, v in hdrs).get("content-length", "0")
                self.send_head(st, reason, hdrs, int(n))
                return
            self.send_head(st, reason, hdrs, len(data))
            self.wfile.write(data)
            sent = len(data)
        except (OSError, http.client.HTTPException) as e:
            self.close_connection = True
            fault = (fault or "") + "!" + type(e).__name__
        finally:
            if not logged:
                self.log_line(seq, rng, fault, status, sent, t0)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


class S(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


srv = S(("127.0.0.1", A.port), H)
if A.notify:
    with open(A.notify, "w") as f:
        f.write("%d\n" % srv.server_address[1])
srv.serve_forever()
