#!/usr/bin/env python3
"""Password logins per second through the hosted login, against the raw Argon2id rate.

    cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin argon2_rate
    python3 benches/login_load.py

In one run: the machine's raw Argon2id verifications per second on all cores with the
parameters Gatehouse hashes passwords with (`argon2_rate`, the ceiling), then password logins
over HTTP against a release server on the embedded default: each login is what a browser does,
`GET /oauth2/authorize` (a pending request and its binding cookie) then `POST /login` with the
password, ending in the policy decision and the redirect with a code. Logins per second count
completed `POST /login`s (303 with a code). Prints Markdown for benches/RESULTS.md.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGON2_RATE = os.path.join(ROOT, "target", "release", "argon2_rate")
PASSWORD = "correct horse battery"
REDIRECT = "http://127.0.0.1:9/callback"


def admin(data, *args, stdin=None):
    env = dict(os.environ, GATEHOUSE_DATA_DIR=data, GATEHOUSE_LOG="warn")
    out = subprocess.run([load.BIN, *args], env=env, check=True, capture_output=True, text=True, input=stdin).stdout
    return json.loads(out)


def cookies_of(resp, jar):
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                jar[name] = value
            else:
                jar.pop(name, None)


def worker(port, client_id, email, stop, counts, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    jar = {}
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid",
        "state": "s", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
    })
    while not stop.is_set():
        try:
            # A fresh browser session each time, but the same device (its cookie is kept).
            jar.pop("gh_session", None)
            hdr = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
            conn.request("GET", "/oauth2/authorize?" + query, headers=hdr)
            r = conn.getresponse()
            r.read()
            cookies_of(r, jar)
            loc = r.getheader("Location") or ""
            request = loc.split("request=", 1)[1]
            body = urllib.parse.urlencode({"request": request, "email": email, "password": PASSWORD})
            hdr = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
                   "Content-Type": "application/x-www-form-urlencoded"}
            conn.request("POST", "/login", body=body, headers=hdr)
            r = conn.getresponse()
            r.read()
            cookies_of(r, jar)
            if r.status == 303 and "code=" in (r.getheader("Location") or "") and not stop.is_set():
                counts.append(time.monotonic())
            elif r.status != 303:
                errors.append(r.status)
        except Exception as e:  # noqa: BLE001 - a bench counts failures, it does not stop
            errors.append(str(e))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=8)
    a = ap.parse_args()
    for b in (load.BIN, ARGON2_RATE):
        if not os.path.exists(b):
            raise SystemExit("build first: cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin argon2_rate")
    raw = json.loads(subprocess.run([ARGON2_RATE, str(a.seconds)], check=True, capture_output=True, text=True).stdout)
    os.environ["GATEHOUSE_LOGIN_RATE_PER_IP"] = "0"
    srv = load.Server("sqlite")
    try:
        admin(srv.data, "org", "create", "--slug", "bench", "--name", "Bench")
        admin(srv.data, "org", "approve", "bench")
        svc = admin(srv.data, "service", "create", "--org", "bench", "--name", "web", "--grant", "authorization_code",
                    "--redirect-uri", REDIRECT)
        email = "bench@example.com"
        admin(srv.data, "user", "create", "--email", email, "--password-stdin", "--verified", "--org", "bench",
              stdin=PASSWORD + "\n")
        stop = threading.Event()
        counts, errors = [], []
        threads = [threading.Thread(target=worker, args=(srv.port, svc["client_id"], email, stop, counts, errors))
                   for _ in range(a.conns)]
        for t in threads:
            t.start()
        time.sleep(2)  # warm up: the first login sets the device's history
        start = time.monotonic()
        n0 = len(counts)
        time.sleep(a.seconds)
        n = len(counts) - n0
        elapsed = time.monotonic() - start
        stop.set()
        for t in threads:
            t.join()
    finally:
        srv.stop()
    rate = n / elapsed
    print(f"## Password logins, SQLite ({a.conns} browsers, {a.seconds}s)\n")
    print("| raw Argon2id verifications, all cores | password logins over HTTP | ratio |")
    print("| --- | --- | --- |")
    print(f"| {raw['per_second']:.1f}/s ({raw['hash']}) | {rate:.1f}/s | {rate / raw['per_second'] * 100:.0f} % |")
    if errors:
        print(f"\n{len(errors)} failed requests, e.g. {errors[:3]}")


if __name__ == "__main__":
    main()
