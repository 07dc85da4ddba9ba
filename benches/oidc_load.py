#!/usr/bin/env python3
"""Token issuance and introspection load on a release `gatehouse`, against the npm
`oidc-provider` in the same run, driven with `wrk`.

    cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin sign_rate
    npm ci --prefix benches/oidc-provider
    python3 benches/oidc_load.py

For each signing algorithm (RS256, ES256, EdDSA), in one run: the raw signing rate of this
machine on all cores (`sign_rate`, the floor), then client-credentials issuance over HTTP
(`POST /oauth2/token`, client_secret_basic) from `wrk -t2 -c16` (8 s after a 3 s warm-up)
against a Gatehouse on the embedded default, then against `oidc-provider` signing with the same
algorithm, as one Node process and as a Node cluster of one worker per core, and the ratios.
With --introspection also `POST /oauth2/introspect`: its throughput (wrk), and its latency at
half and a quarter of it and at 1,000 to 8,000 req/s (`oha`, which holds a rate). Idle RSS right
after start. Prints Markdown for benches/RESULTS.md.
"""
import argparse
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGN_RATE = os.path.join(ROOT, "target", "release", "sign_rate")


def admin(data, *args):
    env = dict(os.environ, GATEHOUSE_DATA_DIR=data, GATEHOUSE_LOG="warn")
    out = subprocess.run([load.BIN, *args], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--algs", default="RS256,ES256,EdDSA")
    ap.add_argument("--introspection", action="store_true")
    a = ap.parse_args()
    for b in (load.BIN, SIGN_RATE):
        if not os.path.exists(b):
            raise SystemExit("build first: cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin sign_rate")
    if not os.path.isdir(os.path.join(PEER, "node_modules")):
        raise SystemExit("install the peer first: npm ci --prefix benches/oidc-provider")
    # The per-address limit of the token endpoints would cap a load from one address.
    os.environ["GATEHOUSE_TOKEN_RATE_PER_IP"] = "0"
    rows = []
    introspection = None
    idle = None
    for alg in a.algs.split(","):
        os.environ["GATEHOUSE_SIGNING_ALG"] = alg
        srv = load.Server("sqlite")
        try:
            if idle is None:
                idle = srv.rss_mb()
            admin(srv.data, "org", "create", "--slug", "bench", "--name", "Bench")
            admin(srv.data, "org", "approve", "bench")
            svc = admin(srv.data, "service", "create", "--org", "bench", "--name", "api", "--grant", "client_credentials")
            auth = f"{svc['client_id']}:{svc['client_secret']}"
            issue = load.wrk(srv.base + "/oauth2/token", a.seconds, a.conns, form="grant_type=client_credentials", basic=auth)
            if alg == "RS256" and a.introspection:
                tok = subprocess.run(["curl", "-s", "-u", auth, "-d", "grant_type=client_credentials", srv.base + "/oauth2/token"],
                                     check=True, capture_output=True, text=True).stdout
                body = f"token={json.loads(tok)['access_token']}"
                url = srv.base + "/oauth2/introspect"
                full = load.wrk(url, a.seconds, 32, form=body, basic=auth)
                half = load.oha(url, a.seconds, 32, form=body, basic=auth, rate=int(full["rps"] / 2))
                quarter = load.oha(url, a.seconds, 32, form=body, basic=auth, rate=int(full["rps"] / 4))
                fixed = [(r, load.oha(url, a.seconds, 8, form=body, basic=auth, rate=r)) for r in (1000, 2000, 4000, 8000)]
                introspection = (full, half, quarter, fixed)
        finally:
            srv.stop()
        one = oidc_provider(a, alg, 1)
        cluster = oidc_provider(a, alg, os.cpu_count() or 1)
        raw = json.loads(subprocess.run([SIGN_RATE, alg, str(a.seconds)], check=True, capture_output=True, text=True).stdout)
        rows.append((alg, raw["per_second"], issue, one, cluster))
    print(f"## Token issuance, client credentials, SQLite (wrk -t2 -c{a.conns}, {a.seconds} s after a 3 s warm-up)\n")
    print("| algorithm | raw signing, all cores | Gatehouse | share of raw | oidc-provider, one process | ratio | oidc-provider, cluster of "
          f"{os.cpu_count()} | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for alg, raw, issue, one, cluster in rows:
        print(f"| {alg} | {raw:.0f}/s | {issue['rps']:.0f}/s (p99 {issue['p99']:.1f} ms) | {issue['rps'] / raw * 100:.0f} % "
              f"| {one['rps']:.0f}/s (p99 {one['p99']:.1f} ms) | **{issue['rps'] / one['rps']:.2f}×** "
              f"| {cluster['rps']:.0f}/s (p99 {cluster['p99']:.1f} ms) | {issue['rps'] / cluster['rps']:.2f}× |")
    if introspection:
        full, half, quarter, fixed = introspection
        print(f"\nIntrospection: {full['rps']:.0f} req/s (wrk, 32 connections); at half that ({int(full['rps'] / 2)} req/s) p50 {half['p50']:.2f} ms, "
              f"p99 {half['p99']:.2f} ms; at a quarter ({int(full['rps'] / 4)} req/s) p50 {quarter['p50']:.2f} ms, p99 {quarter['p99']:.2f} ms")
        for rate, r in fixed:
            print(f"\nIntrospection at {rate} req/s (8 connections): p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms")
    print(f"\nIdle RSS after start: {idle:.1f} MB")


PEER = os.path.join(ROOT, "benches", "oidc-provider")


def oidc_provider(a, alg, workers):
    """Client-credentials issuance of the npm oidc-provider, signing with `alg`, as `workers`
    Node processes, under the same load."""
    port = load.free_port()
    proc = subprocess.Popen(["node", os.path.join(PEER, "server.mjs"), str(port), str(workers), alg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                load.urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=1)
                break
            except OSError:
                load.time.sleep(0.05)
        return load.wrk(base + "/token", a.seconds, a.conns, form="grant_type=client_credentials",
                        basic="bench:bench-secret-bench-secret-bench-secret")
    finally:
        # The whole group: a cluster's workers too.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


if __name__ == "__main__":
    main()
