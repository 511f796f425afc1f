"""Password logins per second against a homeserver, at several concurrency levels.

Registers the user through the shared-secret admin API (Synapse's, which Poststelle also
serves) unless it exists, then logs in repeatedly for --duration seconds (at most --max
requests per level) and prints requests/s and p50/p95 latency per level. Each login creates a
device; the user is fresh per run of this script.

  python3 bench/login.py --url http://127.0.0.1:8008 --secret S --user bench1 --concurrency 1,8
"""
import argparse
import hashlib
import hmac
import json
import statistics
import threading
import time
import urllib.error
import urllib.request


def call(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def register(base, secret, user, password):
    _, body = call(f"{base}/_synapse/admin/v1/register")
    nonce = body["nonce"]
    mac = hmac.new(secret.encode(), f"{nonce}\0{user}\0{password}\0notadmin".encode(), hashlib.sha1).hexdigest()
    status, body = call(f"{base}/_synapse/admin/v1/register", "POST",
                        {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac})
    if status != 200 and body.get("errcode") != "M_USER_IN_USE":
        raise SystemExit(f"registration failed: {status} {body}")


def level(base, user, password, concurrency, duration, max_requests):
    latencies, errors, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + duration
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}

    def worker():
        while time.monotonic() < stop_at:
            with lock:
                if len(latencies) + errors[0] >= max_requests:
                    return
            t = time.monotonic()
            status, _ = call(f"{base}/_matrix/client/v3/login", "POST", body)
            with lock:
                if status == 200:
                    latencies.append(time.monotonic() - t)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors[0],
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1) if latencies else None,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--user", default="benchuser")
    p.add_argument("--password", default="bench-password-1")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--max", type=int, default=2000)
    a = p.parse_args()
    register(a.url, a.secret, a.user, a.password)
    results = [level(a.url, a.user, a.password, int(c), a.duration, a.max) for c in a.concurrency.split(",")]
    print(json.dumps({"levels": results, "loadavg": open("/proc/loadavg").read().split()[:3]}, indent=1))


if __name__ == "__main__":
    main()
