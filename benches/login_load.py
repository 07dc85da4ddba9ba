#!/usr/bin/env python3
"""Password logins per second through the hosted login, against the raw Argon2id rate.

    cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin argon2_rate --bin login_client
    python3 benches/login_load.py

In one run, alternating so that both see the same machine (it is noisy): the raw Argon2id
verifications per second on all cores with the parameters Gatehouse hashes passwords with
(`argon2_rate`, the ceiling), and password logins over HTTP against a release server on the
embedded default (`login_client`: each login is what a browser does, `GET /oauth2/authorize`
then `POST /login` with the password, ending in the policy decision and the redirect with a
code; logins per second count completed `POST /login`s). The raw rate is measured before
every round and once more after the last, and each round's logins are compared with the mean
of the raw rates just before and just after them: the host's Argon2 speed drifts by a quarter
within a minute, and the bracket follows the drift. Prints Markdown for benches/RESULTS.md:
each round's ratio, the median of the rounds and the ratio of the totals.

    python3 benches/login_load.py --bins /tmp/gatehouse-before target/release/gatehouse

compares builds in the same run: one server per binary, each round measuring each server's
logins in turn (every other round in reverse order) between two raw measurements.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGON2_RATE = os.path.join(ROOT, "target", "release", "argon2_rate")
LOGIN_CLIENT = os.path.join(ROOT, "target", "release", "login_client")
PASSWORD = "correct horse battery"
EMAIL = "bench@example.com"
REDIRECT = "http://127.0.0.1:9/callback"


def admin(data, *args, stdin=None, bin=None):
    env = dict(os.environ, GATEHOUSE_DATA_DIR=data, GATEHOUSE_LOG="warn")
    out = subprocess.run([bin or load.BIN, *args], env=env, check=True, capture_output=True, text=True, input=stdin).stdout
    return json.loads(out)


def set_up(srv, bin=None):
    """The benchmark's organization, service and user on `srv`; returns the client id."""
    admin(srv.data, "org", "create", "--slug", "bench", "--name", "Bench", bin=bin)
    admin(srv.data, "org", "approve", "bench", bin=bin)
    svc = admin(srv.data, "service", "create", "--org", "bench", "--name", "web", "--grant",
                "authorization_code", "--redirect-uri", REDIRECT, bin=bin)
    admin(srv.data, "user", "create", "--email", EMAIL, "--password-stdin", "--verified", "--org", "bench",
          stdin=PASSWORD + "\n", bin=bin)
    return svc["client_id"]


def run(*args):
    return json.loads(subprocess.run([*args], check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bins", nargs="+", default=[load.BIN], help="gatehouse binaries to compare")
    a = ap.parse_args()
    for b in (*a.bins, ARGON2_RATE, LOGIN_CLIENT):
        if not os.path.exists(b):
            raise SystemExit("build first: cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin argon2_rate --bin login_client")
    os.environ["GATEHOUSE_LOGIN_RATE_PER_IP"] = "0"
    servers = []
    rounds = []
    try:
        for b in a.bins:
            load.BIN = b
            srv = load.Server("sqlite")
            servers.append(srv)
            srv.client_id = set_up(srv, b)
        raws = [run(ARGON2_RATE, str(a.seconds))]
        for i in range(a.rounds):
            # Every other round in reverse order, so that no build always runs nearest a raw
            # measurement.
            order = list(range(len(servers)))[:: -1 if i % 2 else 1]
            http = [None] * len(servers)
            for j in order:
                srv = servers[j]
                http[j] = run(LOGIN_CLIENT, srv.base, srv.client_id, EMAIL, PASSWORD, str(a.conns), str(a.seconds))
            raws.append(run(ARGON2_RATE, str(a.seconds)))
            before, after = raws[-2]["per_second"], raws[-1]["per_second"]
            rounds.append(({"per_second": (before + after) / 2, "before": before, "after": after}, http))
    finally:
        for srv in servers:
            srv.stop()
    print(f"## Password logins, SQLite ({a.conns} browsers, {a.rounds} rounds of {a.seconds}s each)\n")
    print(f"Parameters: {raws[0]['hash']}\n")
    names = [os.path.relpath(b, ROOT) if b.startswith(ROOT) else b for b in a.bins]
    head = "".join(f" logins, {n} | ratio |" for n in names) if len(names) > 1 else " password logins over HTTP | ratio |"
    print(f"| round | raw Argon2id verifications, all cores (before, after: mean) |{head}")
    print("| --- | --- |" + " --- | --- |" * len(names))
    for i, (raw, http) in enumerate(rounds, 1):
        cells = "".join(f" {h['per_second']:.1f}/s ({h['failed']} failed) | {h['per_second'] / raw['per_second'] * 100:.0f} % |"
                        for h in http)
        print(f"| {i} | {raw['before']:.1f}, {raw['after']:.1f}: {raw['per_second']:.1f}/s |{cells}")
    raw_total = sum(r["per_second"] for r, _ in rounds)
    print()
    for j, n in enumerate(names):
        http_total = sum(h[j]["per_second"] for _, h in rounds)
        median = statistics.median(h[j]["per_second"] / r["per_second"] for r, h in rounds)
        print(f"All rounds, {n}: {http_total / raw_total * 100:.0f} % of the raw rate "
              f"(median round {median * 100:.0f} %).")


if __name__ == "__main__":
    main()
