#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tokenserver.py - a Docker registry token server (GET /token) for the registry tests.

Issues RS256 JWTs with an x5c header (the signer certificate), signed with the
openssl CLI, that a docker-registry trusts through `auth.token.rootcertbundle`
(the recipe of ../shared/peers/registry-up.sh), but with short, configurable
lifetimes and a record of every token issued.

  tokenserver.py --port N --key signer.key --cert signer.crt
                 [--user U --password P] [--service S] [--issuer I]
                 [--expires-in SECONDS]   what the answer's expires_in says (default 600)
                 [--valid SECONDS]        how long the registry accepts the token (default 600)
                 [--leeway SECONDS]       the registry's clock-skew allowance on `exp`
                                          (distribution: 60 s); subtracted from `exp` so
                                          that the registry accepts the token for exactly
                                          --valid seconds
                 [--delay SECONDS]        wait this long before answering (a slow token server)
                 [--settings FILE]        JSON {"expires_in": N, "valid": N, "delay": S}, re-read
                                          on every request when present: change them at run time
                 [--count-file FILE]      one line per token: unix time, sub, expires_in, valid,
                                          jti, scopes
                 [--tokens-file FILE]     the tokens themselves, one a line (so that a test can
                                          grep logs for them)
                 [--notify FIFO]          write "1" there once listening (readiness byte)

Anonymous requests get pull only; Basic user:password gets every action asked
for; wrong Basic credentials get 401. Listens on 127.0.0.1 only.
"""
import argparse, base64, json, os, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--user", default="tester")
ap.add_argument("--password", default="testpass")
ap.add_argument("--service", default="peers-registry")
ap.add_argument("--issuer", default="peers-token-issuer")
ap.add_argument("--expires-in", type=int, default=600)
ap.add_argument("--valid", type=int, default=600)
ap.add_argument("--leeway", type=int, default=60)
ap.add_argument("--delay", type=float, default=0.0)
ap.add_argument("--settings")
ap.add_argument("--count-file")
ap.add_argument("--tokens-file")
ap.add_argument("--notify")
A = ap.parse_args()

der = subprocess.run(["openssl", "x509", "-in", A.cert, "-outform", "DER"],
                     capture_output=True, check=True).stdout
lock = threading.Lock()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(claims):
    hdr = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    si = b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", A.key], input=si.encode(),
                         capture_output=True, check=True).stdout
    return si + "." + b64u(sig)


def settings():
    exp_in, valid, delay = A.expires_in, A.valid, A.delay
    if A.settings and os.path.exists(A.settings):
        try:
            with open(A.settings) as f:
                s = json.load(f)
            exp_in = int(s.get("expires_in", exp_in))
            valid = int(s.get("valid", valid))
            delay = float(s.get("delay", delay))
        except (OSError, ValueError) as e:
            sys.stderr.write("token: bad settings file: %s\n" % e)
    return exp_in, valid, delay


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body=b"", ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        if u.path != "/token":
            return self.reply(404, b'{"error":"not found"}')
        authed = False
        a = self.headers.get("Authorization", "")
        if a.startswith("Basic "):
            try:
                authed = base64.b64decode(a[6:]).decode() == A.user + ":" + A.password
            except Exception:
                authed = False
            if not authed:
                return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}',
                                  extra=[("WWW-Authenticate", 'Basic realm="tokenserver"')])
        access = []
        for s in q.get("scope", []):
            for one in s.split(" "):
                p = one.split(":")
                if len(p) < 3:
                    continue
                acts = p[-1].split(",")
                if not authed:
                    acts = [x for x in acts if x == "pull"]
                access.append({"type": p[0], "name": ":".join(p[1:-1]), "actions": acts})
        exp_in, valid, delay = settings()
        if delay:
            time.sleep(delay)
        now = int(time.time())
        jti = os.urandom(8).hex()
        tok = sign({"iss": A.issuer, "sub": A.user if authed else "",
                    "aud": q.get("service", [""])[0], "exp": now + valid - A.leeway,
                    "nbf": now - 10, "iat": now, "jti": jti, "access": access})
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": exp_in,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}).encode()
        with lock:
            if A.count_file:
                with open(A.count_file, "a") as f:
                    f.write("%d %s %d %d %s %s\n" % (now, A.user if authed else "-", exp_in, valid, jti,
                                                     ",".join("%s:%s:%s" % (x["type"], x["name"], "+".join(x["actions"]))
                                                              for x in access) or "-"))
            if A.tokens_file:
                with open(A.tokens_file, "a") as f:
                    f.write(tok + "\n")
        self.reply(200, body)

    def log_message(self, fmt, *args):
        sys.stderr.write("token: %s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))


class S(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


srv = S(("127.0.0.1", A.port), H)
if A.notify:
    with open(A.notify, "w") as f:
        f.write("1")
srv.serve_forever()
