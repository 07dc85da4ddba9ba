#!/usr/bin/env python3
"""Token issuance and introspection load on a release `gatehouse`, driven with `oha`.

    cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin sign_rate
    python3 benches/oidc_load.py

For each signing algorithm (RS256, ES256, EdDSA), in one run: the raw signing rate of this
machine on all cores (`sign_rate`, the floor), then client-credentials issuance over HTTP
(`POST /oauth2/token`, client_secret_basic) against a server on the embedded default, and the
ratio of the two. For RS256 also introspection (`POST /oauth2/introspect`): its throughput, its
latency at half and a quarter of it, and at 1,000, 2,000, 4,000 and 8,000 req/s (8 connections). Idle RSS right after start. Prints Markdown for benches/RESULTS.md.
"""
import argparse
import json
import os
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
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=32)
    a = ap.parse_args()
    for b in (load.BIN, SIGN_RATE):
        if not os.path.exists(b):
            raise SystemExit("build first: cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin sign_rate")
    # The per-address limit of the token endpoints would cap a load from one address.
    os.environ["GATEHOUSE_TOKEN_RATE_PER_IP"] = "0"
    rows = []
    introspection = None
    idle = None
    for alg in ("RS256", "ES256", "EdDSA"):
        os.environ["GATEHOUSE_SIGNING_ALG"] = alg
        srv = load.Server("sqlite")
        try:
            if idle is None:
                idle = srv.rss_mb()
            admin(srv.data, "org", "create", "--slug", "bench", "--name", "Bench")
            admin(srv.data, "org", "approve", "bench")
            svc = admin(srv.data, "service", "create", "--org", "bench", "--name", "api", "--grant", "client_credentials")
            auth = f"{svc['client_id']}:{svc['client_secret']}"
            issue = load.oha(srv.base + "/oauth2/token", a.seconds, a.conns, form="grant_type=client_credentials", basic=auth)
            if alg == "RS256":
                tok = subprocess.run(["curl", "-s", "-u", auth, "-d", "grant_type=client_credentials", srv.base + "/oauth2/token"],
                                     check=True, capture_output=True, text=True).stdout
                token = json.loads(tok)["access_token"]
                body = f"token={token}"
                full = load.oha(srv.base + "/oauth2/introspect", a.seconds, a.conns, form=body, basic=auth)
                half = load.oha(srv.base + "/oauth2/introspect", a.seconds, a.conns, form=body, basic=auth, rate=int(full["rps"] / 2))
                quarter = load.oha(srv.base + "/oauth2/introspect", a.seconds, a.conns, form=body, basic=auth, rate=int(full["rps"] / 4))
                fixed = [(r, load.oha(srv.base + "/oauth2/introspect", a.seconds, 8, form=body, basic=auth, rate=r)) for r in (1000, 2000, 4000, 8000)]
                introspection = (full, half, quarter, fixed)
        finally:
            srv.stop()
        raw = json.loads(subprocess.run([SIGN_RATE, alg, str(a.seconds)], check=True, capture_output=True, text=True).stdout)
        rows.append((alg, raw["per_second"], issue))
    print(f"## Token issuance, client credentials, SQLite ({a.conns} connections, {a.seconds}s each)\n")
    print("| algorithm | raw signing, all cores | issued over HTTP | ratio |")
    print("| --- | --- | --- | --- |")
    for alg, raw, issue in rows:
        print(f"| {alg} | {raw:.0f}/s | {issue['rps']:.0f}/s (p99 {issue['p99']:.2f} ms) | {issue['rps'] / raw * 100:.0f} % |")
    rs = rows[0][2]["rps"]
    for alg, _, issue in rows[1:]:
        print(f"\n{alg} issuance / RS256 issuance: {issue['rps'] / rs:.1f}x")
    full, half, quarter, fixed = introspection
    print(f"\nIntrospection: {full['rps']:.0f} req/s; at half that ({int(full['rps'] / 2)} req/s) p50 {half['p50']:.2f} ms, p99 {half['p99']:.2f} ms; "
          f"at a quarter ({int(full['rps'] / 4)} req/s) p50 {quarter['p50']:.2f} ms, p99 {quarter['p99']:.2f} ms")
    for rate, r in fixed:
        print(f"\nIntrospection at {rate} req/s (8 connections): p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms")
    print(f"\nIdle RSS after start: {idle:.1f} MB")
    op = oidc_provider(a)
    if op is None:
        print("\noidc-provider comparison skipped: run `npm ci --prefix benches/oidc-provider` first")
    else:
        print(f"\nnpm oidc-provider 9 (client credentials, RS256 JWT access tokens, Node cluster with one worker per core): "
              f"{op['rps']:.0f}/s (p99 {op['p99']:.2f} ms); Gatehouse RS256: {rs:.0f}/s ({rs / op['rps']:.1f}x)")


def oidc_provider(a):
    """Client-credentials issuance of the npm oidc-provider under the same load."""
    here = os.path.join(ROOT, "benches", "oidc-provider")
    if not os.path.isdir(os.path.join(here, "node_modules")):
        return None
    port = load.free_port()
    cores = os.cpu_count() or 1
    proc = subprocess.Popen(["node", os.path.join(here, "server.mjs"), str(port), str(cores)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                load.urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=1)
                break
            except OSError:
                load.time.sleep(0.05)
        return load.oha(base + "/token", a.seconds, a.conns, form="grant_type=client_credentials",
                        basic="bench:bench-secret-bench-secret-bench-secret")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
