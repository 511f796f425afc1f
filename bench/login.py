#!/usr/bin/env python3
"""Password logins per second against a Matrix homeserver, at several concurrency levels (stdlib only).

For each level, N threads (one keep-alive HTTP connection each) POST /_matrix/client/v3/login
(m.login.password, m.id.user identifier) back to back for --duration seconds, at most --max
requests per level; it prints successful logins per second and p50/p95 latency. Every login creates
a device and a token, so after each level the script calls /logout/all once (--keep-devices to skip).
The password hash cost cannot be read over HTTP: pass it with --hash-cost so it is recorded.

The server's login rate limits must be raised or off, or most requests get 429 (counted as errors).

  python3 bench/login.py --url http://127.0.0.1:8008 --user bench --password P \
      --register-secret SECRET --hash-cost "bcrypt rounds=12" --concurrency 1,8
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from collections import Counter

from _common import connect, loadavg, percentile_ms, wait_for_server
from register import call, register


def level(a, concurrency):
    body = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": a.user},
                       "password": a.password, "initial_device_display_name": "bench/login.py"})
    headers = {"Content-Type": "application/json"}
    latencies, statuses, last_token, issued = [], Counter(), [None], [0]
    lock = threading.Lock()
    load = loadavg()
    start = time.monotonic()

    def worker():
        conn = None
        while True:
            with lock:
                if time.monotonic() - start >= a.duration or issued[0] >= a.max:
                    break
                issued[0] += 1
            conn = conn or connect(a.url)
            t = time.monotonic()
            try:
                conn.request("POST", "/_matrix/client/v3/login", body, headers)
                resp = conn.getresponse()
                data, status = resp.read(), resp.status
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn, data, status = None, b"", type(e).__name__
            elapsed = time.monotonic() - t
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(elapsed)
                    last_token[0] = json.loads(data)["access_token"]
        if conn:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    if last_token[0] and not a.keep_devices:
        status, _ = call(f"{a.url}/_matrix/client/v3/logout/all", "POST", {}, last_token[0])
        if status != 200:
            print(f"warning: /logout/all answered {status}", file=sys.stderr)
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "ok": len(latencies),
            "errors": {str(k): v for k, v in statuses.items() if k != 200},
            "logins_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p95_ms": percentile_ms(latencies, 0.95), "max_ms": percentile_ms(latencies, 1.0),
            "loadavg_before": load, "loadavg_after": loadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of the client API")
    p.add_argument("--user", default="bench-login", help="localpart")
    p.add_argument("--password", default="bench-login-password-1")
    p.add_argument("--register-secret", help="register the user first via /_synapse/admin/v1/register")
    p.add_argument("--hash-cost", default="unknown", help='recorded as given, e.g. "bcrypt rounds=12"')
    p.add_argument("--label", default="server")
    p.add_argument("--concurrency", default="1,8", help="comma-separated levels (default 1,8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level (default 10)")
    p.add_argument("--max", type=int, default=2000, help="max requests per level (default 2000)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server to answer (default 60)")
    p.add_argument("--keep-devices", action="store_true", help="do not call /logout/all after each level")
    a = p.parse_args()
    a.url = a.url.rstrip("/")

    wait_for_server(a.url, a.wait)
    if a.register_secret:
        register(a.url, a.register_secret, a.user, a.password)
    # One untimed login: checks the credentials (and warms up the server's caches).
    status, body = call(f"{a.url}/_matrix/client/v3/login", "POST", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": a.user}, "password": a.password})
    if status != 200:
        raise SystemExit(f"login as {a.user} failed: {status} {body}")
    call(f"{a.url}/_matrix/client/v3/logout", "POST", {}, body["access_token"])

    levels = [level(a, int(c)) for c in a.concurrency.split(",")]
    print(json.dumps({"label": a.label, "url": a.url, "hash_cost": a.hash_cost, "duration_s": a.duration,
                      "max_per_level": a.max, "levels": levels}, indent=1))
    print("\n| server | password hash cost | concurrency | logins/s | p50 ms | p95 ms | ok | errors | loadavg before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in levels:
        print(f"| {a.label} | {a.hash_cost} | {r['concurrency']} | {r['logins_per_s']} | {r['p50_ms']} | {r['p95_ms']} "
              f"| {r['ok']} | {sum(r['errors'].values())} | {r['loadavg_before']} / {r['loadavg_after']} |")


if __name__ == "__main__":
    main()
