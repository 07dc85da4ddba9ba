#!/usr/bin/env python3
"""HTTP load benchmark of a release `gatehouse` binary, driven with `wrk` (throughput) and
`oha` (latency at a fixed rate, which wrk cannot hold).

    python3 benches/load.py --backend sqlite
    python3 benches/load.py --backend postgres --cold-tuples 1000000

Measures, in one run against one server:
  * GET /healthz throughput and POST /stores/{id}/check throughput (warm cache) and their ratio;
  * check latency percentiles at half the measured check throughput;
  * list objects returning 10,000 objects (latency);
  * idle RSS right after start, and after the load;
  * optionally (--cold-tuples N) a cold check (cache off) on a depth-3 model with N tuples.
Prints a Markdown summary for benches/RESULTS.md.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GITHUB = os.path.join(ROOT, "..", "shared", "conformance", "openfga-sample-stores", "stores", "github", "model.fga")
KEY = "bench-key"
BIN = os.path.join(ROOT, "target", "release", "gatehouse")

DEPTH3 = """model
  schema 1.1
type user
type group
  relations
    define member: [user]
type folder
  relations
    define viewer: [user, group#member]
type doc
  relations
    define parent: [folder]
    define viewer: [user, group#member] or viewer from parent
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, backend, cache=True):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="gh-load-")
        env = dict(os.environ, GATEHOUSE_ADDR=f"127.0.0.1:{self.port}", GATEHOUSE_DATA_DIR=self.data,
                   GATEHOUSE_API_KEYS=KEY, GATEHOUSE_LOG="warn", GATEHOUSE_CHECK_CACHE=str(cache).lower())
        self.db = None
        if backend == "postgres":
            self.db = f"gatehouse_load_{int(time.time() * 1000)}"
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {self.db}"], check=True)
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.db}"
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            data = r.read()
            return json.loads(data) if data else None

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)
        if self.db:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE {self.db} WITH (FORCE)"])


def model_json(path_or_text):
    if os.path.exists(path_or_text):
        path = path_or_text
    else:
        fd, path = tempfile.mkstemp(suffix=".fga")
        os.write(fd, path_or_text.encode())
        os.close(fd)
    out = subprocess.run([BIN, "model", "validate", path], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def write_all(srv, store, tuples, threads=8):
    batches = [tuples[i:i + 100] for i in range(0, len(tuples), 100)]
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda b: srv.call("POST", f"/stores/{store}/write", {"writes": {"tuple_keys": b}}), batches))


def write_throughput(backend, n, threads=8, batch=100):
    """Writes `n` fresh tuples through POST /write (`threads` writers, `batch` tuples a request)
    into one store and reports tuples/s for each tenth of the load, to show whether writing
    slows down as the store grows."""
    srv = Server(backend)
    try:
        store = srv.call("POST", "/stores", {"name": "writes"})["id"]
        srv.call("POST", f"/stores/{store}/authorization-models", model_json(DEPTH3))
        tuples = [t(f"user:u{i % 50_000}", "viewer", f"doc:d{i}") for i in range(n)]
        batches = [tuples[i:i + batch] for i in range(0, n, batch)]
        tenth = max(1, len(batches) // 10)
        rates = []
        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            for k in range(0, len(batches), tenth):
                t0 = time.time()
                chunk = batches[k:k + tenth]
                list(ex.map(lambda b: srv.call("POST", f"/stores/{store}/write", {"writes": {"tuple_keys": b}}), chunk))
                rates.append(sum(len(b) for b in chunk) / (time.time() - t0))
        total = time.time() - started
    finally:
        srv.stop()
    print(f"| bulk write, {n} tuples, {threads} writers x {batch} tuples, {backend} | "
          f"{n / total:.0f} tuples/s overall; per tenth: {', '.join(f'{r:.0f}' for r in rates)} |")


def t(user, rel, obj):
    return {"user": user, "relation": rel, "object": obj}


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(url, seconds, conns, body=None, form=None, basic=None, threads=2, warmup=3):
    """Drives `url` with `wrk` (the reference client: the least CPU per request, which matters
    when client and server share two cores) for `seconds` after a `warmup` that is not counted.
    POSTs `body` as JSON or `form` (already encoded) through a Lua script; authenticates with
    the API key, or with HTTP Basic `basic` ("id:secret"). Any error or non-2xx answer fails
    the run. Returns req/s and p50/p99 in ms."""
    import base64
    lines = []
    if basic:
        lines.append(f'wrk.headers["Authorization"] = {lua_str("Basic " + base64.b64encode(basic.encode()).decode())}')
    else:
        lines.append(f'wrk.headers["Authorization"] = {lua_str("Bearer " + KEY)}')
    if body is not None:
        lines += ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"', f"wrk.body = {lua_str(json.dumps(body))}"]
    if form is not None:
        lines += ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"', f"wrk.body = {lua_str(form)}"]
    fd, script = tempfile.mkstemp(suffix=".lua")
    os.write(fd, ("\n".join(lines) + "\n" + WRK_DONE).encode())
    os.close(fd)
    try:
        cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-s", script, "--timeout", "10s"]
        if warmup:
            subprocess.run(cmd + ["-d", f"{warmup}s", url], check=True, capture_output=True)
        out = subprocess.run(cmd + ["-d", f"{seconds}s", url], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script)
    r = json.loads(out.strip().splitlines()[-1])
    bad = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if bad:
        raise SystemExit(f"wrk saw errors from {url}: {bad}")
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50"] / 1000, "p99": r["p99"] / 1000}


def oha(url, seconds, conns, body=None, rate=None, form=None, basic=None):
    """POSTs `body` as JSON (or `form`, already encoded, as a form) with the API key, or with
    HTTP Basic `basic` ("id:secret") instead; GET without either."""
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns)]
    cmd += ["-a", basic] if basic else ["-H", f"Authorization: Bearer {KEY}"]
    if body is not None:
        cmd += ["-m", "POST", "-T", "application/json", "-d", json.dumps(body)]
    if form is not None:
        cmd += ["-m", "POST", "-T", "application/x-www-form-urlencoded", "-d", form]
    if rate:
        cmd += ["-q", str(rate)]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if k != "200"}
    if bad:
        raise SystemExit(f"non-200 answers from {url}: {bad}")
    p = r["latencyPercentiles"]
    return {"rps": r["summary"]["requestsPerSec"], "p50": p["p50"] * 1000, "p99": p["p99"] * 1000}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--check-only", action="store_true",
                    help="only /healthz, check and check at half load")
    ap.add_argument("--cold-tuples", type=int, default=0)
    ap.add_argument("--cold-bulk-sql", action="store_true",
                    help="on PostgreSQL, load the cold data set with SQL instead of POST /write")
    ap.add_argument("--write-tuples", type=int, default=0,
                    help="only measure bulk write throughput with this many tuples")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        raise SystemExit("build first: cargo build --release -p gatehouse-server --bin gatehouse")
    if a.write_tuples:
        write_throughput(a.backend, a.write_tuples)
        return

    srv = Server(a.backend)
    try:
        idle = srv.rss_mb()
        store = srv.call("POST", "/stores", {"name": "load"})["id"]
        srv.call("POST", f"/stores/{store}/authorization-models", model_json(GITHUB))
        tuples = []
        for r in range(2000):
            tuples.append(t(f"organization:o{r % 20}", "owner", f"repo:r{r}"))
            tuples.append(t(f"team:t{r % 200}#member", "reader", f"repo:r{r}"))
            tuples.append(t(f"user:u{r * 13 % 2000}", "admin", f"repo:r{r}"))
        for tm in range(200):
            for k in range(10):
                tuples.append(t(f"user:u{tm * 10 + k}", "member", f"team:t{tm}"))
        # One user in a group that reads 10,000 repos, for list objects.
        tuples.append(t("user:lister", "member", "team:big"))
        tuples += [t("team:big#member", "reader", f"repo:big{i:05}") for i in range(10_000)]
        write_all(srv, store, tuples)
        check = {"tuple_key": t("user:u5", "reader", "repo:r0")}
        assert srv.call("POST", f"/stores/{store}/check", check)["allowed"] is True
        # /healthz and check alternate, three times, so that drift over the run cancels in
        # the ratio of the sums.
        healths, checks = [], []
        for _ in range(3):
            healths.append(wrk(srv.base + "/healthz", a.seconds, a.conns))
            checks.append(wrk(f"{srv.base}/stores/{store}/check", a.seconds, a.conns, check))
        health = {"rps": sum(h["rps"] for h in healths) / 3}
        chk = {"rps": sum(c["rps"] for c in checks) / 3, "p50": checks[-1]["p50"], "p99": checks[-1]["p99"]}
        # wrk cannot hold a rate; oha can (-q), and at half the load its own CPU matters less.
        half = None
        if shutil.which("oha"):
            half = oha(f"{srv.base}/stores/{store}/check", a.seconds, a.conns, check, rate=int(chk["rps"] / 2))
        authzen = None
        if not a.check_only:
            # AuthZEN evaluation with a 100-policy Cedar set (as in the criterion bench).
            policies = '@id("baseline")\npermit (principal, action, resource) when { context.rebac };\n'
            policies += "".join(f'@id("deny-{i}")\nforbid (principal == user::"blocked{i}", action, resource);\n' for i in range(66))
            policies += "".join(f'@id("team-{i}")\npermit (principal in team::"t{i}", action == Action::"reader", resource in organization::"o{i}") when {{ context.risk.score < 50 }};\n' for i in range(33))
            srv.call("PUT", f"/stores/{store}/policies", {"policies": policies})
            az = {"subject": {"type": "user", "id": "u5"}, "action": {"name": "reader"}, "resource": {"type": "repo", "id": "r0"}}
            assert srv.call("POST", f"/stores/{store}/access/v1/evaluation", az)["decision"] is True
            authzen = wrk(f"{srv.base}/stores/{store}/access/v1/evaluation", a.seconds, a.conns, az)
            logged = srv.call("GET", f"/stores/{store}/decisions?page_size=1")["decisions"]
            assert logged and logged[0]["action"] == "reader", logged
            # The same with the decision log off (it records every decision by default).
            srv.call("PUT", f"/stores/{store}/decision-log/settings", {"sample_rate": 0.0, "always_log_denies": False})
            authzen_nolog = wrk(f"{srv.base}/stores/{store}/access/v1/evaluation", a.seconds, a.conns, az)
            lo_body = {"type": "repo", "relation": "reader", "user": "user:lister"}
            n = len(srv.call("POST", f"/stores/{store}/list-objects", lo_body)["objects"])
            assert n == 10_000, n
            lo = oha(f"{srv.base}/stores/{store}/list-objects", a.seconds, 1, lo_body)
        loaded = srv.rss_mb()
    finally:
        srv.stop()

    print(f"## HTTP, {a.backend} ({len(tuples)} tuples, {a.conns} connections, {a.seconds}s each)\n")
    print("| measure | value |\n| --- | --- |")
    rates = lambda runs: ", ".join(f"{r['rps']:.0f}" for r in runs)  # noqa: E731
    print(f"| GET /healthz (wrk, three runs) | {rates(healths)} req/s |")
    print(f"| POST check, warm cache (wrk, three runs, alternating with /healthz) | {rates(checks)} req/s "
          f"(last: p50 {chk['p50']:.2f} ms, p99 {chk['p99']:.2f} ms) |")
    print(f"| check / healthz throughput | {chk['rps'] / health['rps'] * 100:.0f}% |")
    if half:
        print(f"| check at half load ({int(chk['rps'] / 2)} req/s) | p50 {half['p50']:.2f} ms, p99 {half['p99']:.2f} ms |")
    else:
        print("| check at half load | not measured: `oha` is not installed (`cargo install oha`) |")
    if authzen:
        print(f"| AuthZEN evaluation, 100 policies, warm | {authzen['rps']:.0f} req/s (p50 {authzen['p50']:.2f} ms, p99 {authzen['p99']:.2f} ms) |")
        print(f"| AuthZEN / healthz throughput | {authzen['rps'] / health['rps'] * 100:.0f}% |")
        print(f"| AuthZEN, decision log off | {authzen_nolog['rps']:.0f} req/s (p50 {authzen_nolog['p50']:.2f} ms, p99 {authzen_nolog['p99']:.2f} ms) |")
        print(f"| AuthZEN (log off) / healthz throughput | {authzen_nolog['rps'] / health['rps'] * 100:.0f}% |")
        print(f"| list objects, 10,000 results | p50 {lo['p50']:.1f} ms, p99 {lo['p99']:.1f} ms |")
    print(f"| RSS idle after start / after load | {idle:.1f} MB / {loaded:.1f} MB |")

    if a.cold_tuples:
        srv = Server(a.backend, cache=False)
        try:
            store = srv.call("POST", "/stores", {"name": "cold"})["id"]
            srv.call("POST", f"/stores/{store}/authorization-models", model_json(DEPTH3))
            n = a.cold_tuples
            docs, folders, groups = n * 3 // 10, n // 100, n // 50
            started = time.time()
            if a.backend == "postgres" and a.cold_bulk_sql:
                # Bulk-load in SQL at revision 1: this measures checks, not the write path.
                sql = f"""
                INSERT INTO tuples (store_id, object_type, object_id, relation, user_value, user_type, created_rev, created_at)
                SELECT '{store}', 'doc', 'd' || g, 'parent', 'folder:f' || (g % {folders}), 'folder', 1, now() FROM generate_series(0, {docs - 1}) g
                UNION ALL SELECT '{store}', 'doc', 'd' || g, 'viewer', 'user:u' || (g % 50000), 'user', 1, now() FROM generate_series(0, {docs - 1}) g
                UNION ALL SELECT '{store}', 'folder', 'f' || (g / 20), 'viewer', 'group:g' || (g % {groups}) || '#member', 'group', 1, now() FROM generate_series(0, {folders * 20 - 1}) g
                UNION ALL SELECT '{store}', 'group', 'g' || (g / 10), 'member', 'user:m' || g, 'user', 1, now() FROM generate_series(0, {groups * 10 - 1}) g;
                UPDATE store_revisions SET head = 1 WHERE store_id = '{store}';
                ANALYZE tuples;"""
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", srv.db, "-qc", sql], check=True)
                count = int(subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", srv.db, "-Atc",
                                            "SELECT count(*) FROM tuples"], check=True, capture_output=True, text=True).stdout)
            else:
                tuples = []
                for d in range(docs):
                    tuples.append(t(f"folder:f{d % folders}", "parent", f"doc:d{d}"))
                    tuples.append(t(f"user:u{d % 50_000}", "viewer", f"doc:d{d}"))
                for g in range(folders * 20):
                    tuples.append(t(f"group:g{g % groups}#member", "viewer", f"folder:f{g // 20}"))
                for g in range(groups * 10):
                    tuples.append(t(f"user:m{g}", "member", f"group:g{g // 10}"))
                write_all(srv, store, tuples)
                count = len(tuples)
            seed = time.time() - started
            # doc:d7 -> parent folder:f7 -> viewer group:g140#member -> member user:m1400: three hops.
            g = (7 * 20) % groups
            body = {"tuple_key": t(f"user:m{g * 10}", "viewer", "doc:d7")}
            assert srv.call("POST", f"/stores/{store}/check", body)["allowed"] is True
            cold1 = oha(f"{srv.base}/stores/{store}/check", a.seconds, 1, body)
            cold = oha(f"{srv.base}/stores/{store}/check", a.seconds, 8, body)
        finally:
            srv.stop()
        print(f"| cold check (cache off), depth 3, {count} tuples (loaded in {seed:.0f}s) | "
              f"1 connection: {cold1['rps']:.0f} req/s, p50 {cold1['p50']:.2f} ms, p99 {cold1['p99']:.2f} ms; "
              f"8 connections: {cold['rps']:.0f} req/s, p50 {cold['p50']:.2f} ms, p99 {cold['p99']:.2f} ms |")


if __name__ == "__main__":
    sys.exit(main())
