#!/usr/bin/env python3
"""CPU time per password login, by server thread group, and the browsers' (client's).

    cargo build --release -p gatehouse-server --bin gatehouse -p gatehouse-benches --bin login_client
    python3 benches/login_cpu.py [--cheap] [--bin PATH] [--conns N] [--seconds S]

Starts a release server on the embedded default, signs in with `login_client` for the given
seconds and reads each server thread's CPU time from /proc before and after (grouped by
thread name: HTTP workers, the blocking pool that runs SQLite, the Argon2 threads). With
`--cheap` the user's stored hash is replaced by one with tiny Argon2 parameters (m=8 KiB,
t=1; needs `pip install argon2-cffi`), so that what is left is everything a login costs
besides Argon2. `--perf FILE` records `perf record --call-graph dwarf` of the server meanwhile.
"""
import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402
import login_load as ll  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_line):
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def threads(pid):
    out = collections.Counter()
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            line = open(path).read()
        except OSError:
            continue
        name = re.sub(r"[-_ ]?\d+$", "", line[line.index("(") + 1:line.rindex(")")])
        out[name] += cpu_seconds(line)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cheap", action="store_true")
    ap.add_argument("--bin", default=load.BIN)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--perf", default="")
    a = ap.parse_args()
    os.environ["GATEHOUSE_LOGIN_RATE_PER_IP"] = "0"
    load.BIN = a.bin
    srv = load.Server("sqlite")
    email = ll.EMAIL
    try:
        client_id = ll.set_up(srv, a.bin)
        if a.cheap:
            from argon2 import PasswordHasher
            h = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(ll.PASSWORD)
            db = glob.glob(os.path.join(srv.data, "*.db"))[0]
            subprocess.run(["sqlite3", db, f"UPDATE users SET password_hash='{h}' WHERE email='{email}'"], check=True)
        ll.run(ll.LOGIN_CLIENT, srv.base, client_id, email, ll.PASSWORD, str(a.conns), "3")  # warm-up
        before = threads(srv.proc.pid)
        started = time.time()
        perf = None
        if a.perf:
            perf = subprocess.Popen(["perf", "record", "--call-graph", "dwarf", "-F", "499", "-p", str(srv.proc.pid), "-o", a.perf, "--", "sleep",
                                     str(a.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = subprocess.Popen([ll.LOGIN_CLIENT, srv.base, client_id, email, ll.PASSWORD, str(a.conns),
                                   str(a.seconds)], stdout=subprocess.PIPE, text=True)
        client_cpu = 0.0
        while client.poll() is None:
            try:
                client_cpu = cpu_seconds(open(f"/proc/{client.pid}/stat").read())
            except OSError:
                pass
            time.sleep(0.2)
        result = json.loads(client.stdout.read())
        wall = time.time() - started
        after = threads(srv.proc.pid)
        if perf:
            perf.wait()
    finally:
        srv.stop()
    # The client signs in for 2 s before it counts: logins over the whole window at its rate.
    logins = result["per_second"] * wall
    print(json.dumps(result))
    print(f"{wall:.1f} s; client {client_cpu / wall:.3f} core, {client_cpu / logins * 1000:.3f} ms per login")
    total = 0.0
    for name in sorted(after, key=lambda k: before.get(k, 0) - after[k]):
        d = after[name] - before.get(name, 0)
        total += d
        if d > 0:
            print(f"  {name:20s} {d / wall:6.3f} core  {d / logins * 1000:7.3f} ms per login")
    print(f"  {'server':20s} {total / wall:6.3f} core  {total / logins * 1000:7.3f} ms per login")


if __name__ == "__main__":
    main()
