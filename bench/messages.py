#!/usr/bin/env python3
"""Messaging load on a Matrix homeserver: sends, delivery to /sync, /messages, initial /sync (stdlib only).

Registers users through the shared-secret admin API (/_synapse/admin/v1/register). One of them
creates a public room and the others join it. Then it measures:
  send        PUT /rooms/{id}/send/m.room.message/{txn} into that room: messages per second and
              p50/p95/p99 latency at each --concurrency level (N threads, each its own user on its
              own keep-alive connection; at most --messages per level and --max-seconds).
  delivery    --receivers users long-poll /sync (timeout 30000, a filter for the room) while one
              user sends --delivery-messages, one every --delivery-interval s, each with a unique
              body. For each receiver and message: the time from the send's 200 (the
              acknowledgement) to the sync response that holds the event, and from the start of
              the send. A receiver can see the event before the sender has read its 200, so the
              first figure can be negative.
  pagination  GET /rooms/{id}/messages backwards from the newest event: --history events in pages
              of --page, and in a single request with limit=--history. --repeat times.
  initial     another user creates --rooms rooms, a second user joins each, and the two send
              --room-history messages into each; then that user's initial /sync (no since,
              timeline limit 10) is timed --repeat times. Each run's filter differs by a no-op
              (an absent account data type left out), so a sync response cache cannot answer it.
  memory      with --server-pid or --server-pid-file: RSS, peak RSS (VmHWM) and Pss of the server
              process (past wrappers such as sh) and of its descendants (e.g. a managed PostgreSQL)
              before and after the run; --db-pid-file adds an external database's process tree
              (its PID is the file's first line, so postmaster.pid works).
/proc/loadavg is recorded before each measurement. Prints the full result as JSON, then Markdown
rows. Every loop is bounded by a count or a deadline, and every request has a timeout.

  python3 bench/messages.py --label synapse --url http://127.0.0.1:18490 --register-secret bench-secret \\
      --server-pid-file DIR/synapse.pid --db-pid-file DIR/pg/data/postmaster.pid
"""
import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from _common import connect, loadavg, measure, percentile_ms, server_pid, tree, wait_for_server
from register import register_account

CS = "/_matrix/client/v3"
PASSWORD = "bench-messages-password-1"


class Client:
    """One user over one keep-alive connection (not to be shared between threads)."""

    def __init__(self, url, account, timeout=60):
        self.url, self.user_id, self.token, self.timeout = url, account["user_id"], account["access_token"], timeout
        self.conn = None

    def for_thread(self):
        return Client(self.url, {"user_id": self.user_id, "access_token": self.token}, self.timeout)

    def request(self, method, path, body=None):
        """(status, raw body); status is the exception's name if the request failed."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}"} | ({"Content-Type": "application/json"} if data else {})
        self.conn = self.conn or connect(self.url, self.timeout)
        try:
            self.conn.request(method, path, data, headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return type(e).__name__, b""

    def json(self, method, path, body=None):
        status, raw = self.request(method, path, body)
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw[:200]

    def must(self, method, path, body=None):
        status, out = self.json(method, path, body)
        if status != 200:
            raise SystemExit(f"{method} {path} as {self.user_id}: {status} {out}")
        return out

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None


def q(s):
    return urllib.parse.quote(s, safe="")


def send_path(room_id, txn):
    return f"{CS}/rooms/{q(room_id)}/send/m.room.message/{q(txn)}"


def sync_path(filter_json, since=None, timeout=0):
    params = {"filter": json.dumps(filter_json, separators=(",", ":")), "timeout": timeout}
    if since:
        params["since"] = since
    return f"{CS}/sync?{urllib.parse.urlencode(params)}"


def latency_stats(seconds):
    s = sorted(seconds)
    return {"n": len(s), "p50_ms": percentile_ms(s, 0.5), "p95_ms": percentile_ms(s, 0.95),
            "p99_ms": percentile_ms(s, 0.99), "max_ms": percentile_ms(s, 1.0)}


def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def send_level(clients, room_id, concurrency, tag, max_messages, max_seconds):
    """concurrency threads send into room_id back to back: at most max_messages, max_seconds."""
    lock = threading.Lock()
    latencies, statuses, issued = [], Counter(), [0]
    load = loadavg()
    start = time.monotonic()

    def worker(client):
        while True:
            with lock:
                if issued[0] >= max_messages or time.monotonic() - start >= max_seconds:
                    break
                issued[0] += 1
                i = issued[0]
            t = time.monotonic()
            body = {"msgtype": "m.text", "body": f"{tag} {i}"}
            status, _ = client.request("PUT", send_path(room_id, f"{tag}-{i}"), body)
            elapsed = time.monotonic() - t
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(elapsed)

    run_threads(worker, [(c,) for c in clients[:concurrency]])
    elapsed = time.monotonic() - start
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "ok": len(latencies),
            "errors": {str(k): v for k, v in statuses.items() if k != 200},
            "messages_per_s": round(len(latencies) / elapsed, 1), **latency_stats(latencies),
            "loadavg_before": load, "loadavg_after": loadavg()}


def delivery(a, sender, receivers, room_id, tag):
    """Receivers long-poll /sync while sender sends paced, marked messages."""
    prefix = f"{tag}-d-"
    room_filter = {"room": {"rooms": [room_id], "timeline": {"limit": 50}},
                   "presence": {"types": []}, "account_data": {"types": []}}
    since = [r.must("GET", sync_path(room_filter))["next_batch"] for r in receivers]
    acks, seen, syncs, limited, errors = {}, {}, Counter(), Counter(), Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + a.delivery_messages * a.delivery_interval + 60

    def receive(k, client):
        token, done = since[k], False
        while not done and time.monotonic() < deadline:
            status, body = client.json("GET", sync_path(room_filter, token, 30000))
            t = time.monotonic()
            if status != 200:
                with lock:
                    errors[str(status)] += 1
                time.sleep(0.1)
                continue
            token = body["next_batch"]
            timeline = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
            with lock:
                syncs[k] += 1
                limited[k] += bool(timeline.get("limited"))
                for ev in timeline.get("events", []):
                    text = (ev.get("content") or {}).get("body", "")
                    if isinstance(text, str) and text.startswith(prefix):
                        marker = text[len(prefix):]
                        if marker == "stop":
                            done = True
                        else:
                            seen.setdefault((k, int(marker)), t)

    threads = [threading.Thread(target=receive, args=(k, r)) for k, r in enumerate(receivers)]
    for t in threads:
        t.start()
    time.sleep(1)  # let every receiver's first long-poll reach the server
    load = loadavg()
    send_errors = Counter()
    for i in range(a.delivery_messages):
        t0 = time.monotonic()
        body = {"msgtype": "m.text", "body": f"{prefix}{i}"}
        status, _ = sender.request("PUT", send_path(room_id, f"{prefix}{i}"), body)
        t1 = time.monotonic()
        if status == 200:
            acks[i] = (t0, t1)
        else:
            send_errors[str(status)] += 1
        time.sleep(max(0.0, a.delivery_interval - (t1 - t0)))
    sender.request("PUT", send_path(room_id, f"{prefix}stop"), {"msgtype": "m.text", "body": f"{prefix}stop"})
    for t in threads:
        t.join()
    after_ack = [t - acks[i][1] for (k, i), t in seen.items() if i in acks]
    after_send = [t - acks[i][0] for (k, i), t in seen.items() if i in acks]
    return {"receivers": len(receivers), "messages": a.delivery_messages, "interval_s": a.delivery_interval,
            "acknowledged": len(acks), "send_errors": dict(send_errors),
            "seen": len(after_ack), "expected": len(acks) * len(receivers),
            "seen_before_ack": sum(x < 0 for x in after_ack),
            "after_ack": latency_stats(after_ack), "after_send_start": latency_stats(after_send),
            "syncs_per_receiver": [syncs[k] for k in range(len(receivers))],
            "limited_timelines": sum(limited.values()), "sync_errors": dict(errors),
            "loadavg_before": load, "loadavg_after": loadavg()}


def pagination(a, client, room_id):
    """/messages backwards from the end: a.history events in pages of a.page, then in one request."""
    runs = []
    for _ in range(a.repeat):
        load = loadavg()
        pages, events, token, errors = [], 0, None, Counter()
        start = time.monotonic()
        for _ in range(math.ceil(a.history / a.page) + 5):
            params = {"dir": "b", "limit": min(a.page, a.history - events)} | ({"from": token} if token else {})
            t = time.monotonic()
            status, body = client.json("GET", f"{CS}/rooms/{q(room_id)}/messages?{urllib.parse.urlencode(params)}")
            pages.append(time.monotonic() - t)
            if status != 200:
                errors[str(status)] += 1
                break
            events += len(body.get("chunk", []))
            token = body.get("end")
            if events >= a.history or not body.get("chunk") or not token:
                break
        paged = time.monotonic() - start
        t = time.monotonic()
        status, raw = client.request("GET", f"{CS}/rooms/{q(room_id)}/messages?dir=b&limit={a.history}")
        single = time.monotonic() - t
        single_events = len(json.loads(raw).get("chunk", [])) if status == 200 else 0
        if status != 200:
            errors[f"single {status}"] += 1
        runs.append({"paged_events": events, "pages": len(pages), "paged_ms": round(paged * 1000, 1),
                     "page_p50_ms": percentile_ms(sorted(pages), 0.5), "page_max_ms": percentile_ms(sorted(pages), 1.0),
                     "single_events": single_events, "single_ms": round(single * 1000, 1), "single_bytes": len(raw),
                     "errors": dict(errors), "loadavg_before": load})
    return {"history": a.history, "page": a.page, "runs": runs,
            "paged_ms_median": round(statistics.median(r["paged_ms"] for r in runs), 1),
            "page_p50_ms_median": round(statistics.median(r["page_p50_ms"] for r in runs), 1),
            "single_ms_median": round(statistics.median(r["single_ms"] for r in runs), 1)}


def build_rooms(a, hub, peer, tag, n_rooms):
    """hub creates n_rooms public rooms; peer joins each; both send a.room_history messages into each.
    The rooms are built by a pool of a.build_threads threads, each with its own connections."""
    lock = threading.Lock()
    rooms, create_lat, join_lat, send_lat, errors = [], [], [], [], Counter()
    local = threading.local()
    load = loadavg()
    start = time.monotonic()

    def build(i):
        if not hasattr(local, "h"):
            local.h, local.p = hub.for_thread(), peer.for_thread()
            with lock:
                opened.append((local.h, local.p))
        h, p = local.h, local.p
        t = time.monotonic()
        status, body = h.json("POST", f"{CS}/createRoom", {"preset": "public_chat", "name": f"{tag} room {i}"})
        created = time.monotonic() - t
        if status != 200:
            with lock:
                errors[f"createRoom {status}"] += 1
            return
        room_id = body["room_id"]
        t = time.monotonic()
        status, _ = p.request("POST", f"{CS}/join/{q(room_id)}", {})
        joined = time.monotonic() - t
        sends = []
        for j in range(a.room_history):
            t = time.monotonic()
            s, _ = (h if j % 2 == 0 else p).request("PUT", send_path(room_id, f"{tag}-h{i}-{j}"),
                                                    {"msgtype": "m.text", "body": f"history {i} {j}"})
            sends.append(time.monotonic() - t)
            if s != 200:
                with lock:
                    errors[f"send {s}"] += 1
        with lock:
            rooms.append(room_id)
            create_lat.append(created)
            if status == 200:
                join_lat.append(joined)
            else:
                errors[f"join {status}"] += 1
            send_lat.extend(sends)

    opened = []
    with ThreadPoolExecutor(max_workers=a.build_threads) as pool:
        list(pool.map(build, range(n_rooms)))
    for h, p in opened:
        h.close()
        p.close()
    return {"rooms": len(rooms), "threads": a.build_threads, "seconds": round(time.monotonic() - start, 1),
            "createRoom": latency_stats(create_lat), "join": latency_stats(join_lat), "send": latency_stats(send_lat),
            "errors": dict(errors), "loadavg_before": load}


def db_size(a):
    """pg_database_size as printed by --db-size-cmd (a shell command), in bytes; None without it."""
    if not a.db_size_cmd:
        return None
    out = subprocess.run(a.db_size_cmd, shell=True, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"--db-size-cmd failed ({out.returncode}): {out.stderr.strip()}")
    return int(out.stdout.split()[-1])


def storage(a, senders, room_id, tag):
    """Database size before and after a.size_events sends into room_id (a.size_concurrency threads)."""
    before = db_size(a)
    sent = send_level(senders, room_id, min(a.size_concurrency, len(senders)), f"{tag}-size", a.size_events, 3600)
    time.sleep(a.size_settle)  # let background writers (Synapse's stream caches, autovacuum) catch up
    after = db_size(a)
    per_100k = round((after - before) * 100000 / sent["ok"]) if sent["ok"] else None
    return {"events": sent["ok"], "concurrency": sent["concurrency"], "messages_per_s": sent["messages_per_s"],
            "errors": sent["errors"], "db_bytes_before": before, "db_bytes_after": after,
            "bytes_per_event": round((after - before) / sent["ok"], 1) if sent["ok"] else None,
            "bytes_per_100k_events": per_100k, "mib_per_100k_events": round(per_100k / 2**20, 1) if per_100k else None,
            "loadavg_before": sent["loadavg_before"], "loadavg_after": loadavg()}


def initial_sync(a, hub, tag):
    """Initial syncs of hub. Each run's filter names a different (absent) account data type to leave
    out: the same result, but another request, so a response cache (Synapse keeps a sync response
    for 2 min, keyed by the filter string among others) does not answer the repeats."""
    sync_filter = {"room": {"timeline": {"limit": 10}}}
    runs = []
    for k in range(a.repeat):
        load = loadavg()
        t = time.monotonic()
        status, raw = hub.request("GET", sync_path(sync_filter | {"account_data": {"not_types": [f"bench.{tag}.{k}"]}}))
        elapsed = time.monotonic() - t
        joined = json.loads(raw).get("rooms", {}).get("join", {}) if status == 200 else {}
        runs.append({"status": status, "ms": round(elapsed * 1000, 1), "bytes": len(raw), "rooms": len(joined),
                     "timeline_events": sum(len(r.get("timeline", {}).get("events", [])) for r in joined.values()),
                     "loadavg_before": load})
    ms = [r["ms"] for r in runs]
    return {"filter": sync_filter, "runs": runs, "first_ms": ms[0], "median_ms": round(statistics.median(ms), 1),
            "min_ms": min(ms), "max_ms": max(ms)}


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return round(next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0) / 1024, 1)
    except OSError:
        return None


def memory(a):
    pid = a.server_pid
    if a.server_pid_file:
        with open(a.server_pid_file) as f:
            pid = int(f.readline())
    if not pid:
        return None
    if not os.path.exists(f"/proc/{pid}"):
        raise SystemExit(f"no process {pid}: check --server-pid / --server-pid-file")
    pid = server_pid(pid, tree(pid)[1])  # past a wrapper such as the shell that started it
    out = {"server_pid": pid, "server": measure([pid]), "server_peak_rss_mib": vm_hwm_mib(pid),
           "tree": measure(tree(pid)[0]), "loadavg": loadavg()}
    if a.db_pid_file:
        with open(a.db_pid_file) as f:
            out["db"] = measure(tree(int(f.readline()))[0])
    out["total_pss_mib"] = round(out["tree"]["pss_mib"] + out.get("db", {}).get("pss_mib", 0), 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of the client API")
    p.add_argument("--register-secret", required=True, help="shared secret of /_synapse/admin/v1/register")
    p.add_argument("--label", default="server")
    p.add_argument("--prefix", default="bench-msg", help="localpart prefix; a run id is appended")
    p.add_argument("--concurrency", default="1,10,50", help="send levels (default 1,10,50)")
    p.add_argument("--messages", type=int, default=500, help="max messages per send level (default 500)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="max seconds per send level (default 60)")
    p.add_argument("--receivers", type=int, default=4, help="users long-polling /sync (default 4)")
    p.add_argument("--delivery-messages", type=int, default=100, help="default 100")
    p.add_argument("--delivery-interval", type=float, default=0.1, help="seconds between sends (default 0.1)")
    p.add_argument("--history", type=int, default=1000, help="events to paginate; at most 1000 (default 1000)")
    p.add_argument("--page", type=int, default=100, help="/messages page size (default 100)")
    p.add_argument("--rooms", default="1,100,1000",
                   help="room counts of the initial-sync users, one new user (and peer) per count (default 1,100,1000)")
    p.add_argument("--room-history", type=int, default=5, help="messages per such room (default 5)")
    p.add_argument("--build-threads", type=int, default=8, help="pool of threads that fill those rooms (default 8)")
    p.add_argument("--db-size-cmd", help="shell command printing the database size in bytes (pg_database_size)")
    p.add_argument("--size-events", type=int, default=20000, help="events sent between the two size readings (default 20000)")
    p.add_argument("--size-concurrency", type=int, default=10, help="senders for those events (default 10)")
    p.add_argument("--size-settle", type=float, default=5.0, help="seconds to wait before the second reading (default 5)")
    p.add_argument("--repeat", type=int, default=5, help="runs of the pagination and initial sync (default 5)")
    p.add_argument("--server-pid", type=int, help="PID of the server process, for memory")
    p.add_argument("--server-pid-file", help="file whose first line is the server's PID")
    p.add_argument("--db-pid-file", help="PID file of an external database (e.g. postmaster.pid)")
    p.add_argument("--version", default="", help="recorded as given, e.g. the server's version")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server to answer (default 60)")
    a = p.parse_args()
    a.url = a.url.rstrip("/")
    levels = [int(c) for c in a.concurrency.split(",")]
    room_counts = [int(c) for c in a.rooms.split(",") if c.strip()]
    if not 1 <= a.history <= 1000:
        raise SystemExit("--history must be between 1 and 1000 (the most /messages returns at once)")
    wait_for_server(a.url, a.wait)
    result = {"label": a.label, "version": a.version, "url": a.url, "params": {
        k: getattr(a, k) for k in ("concurrency", "messages", "max_seconds", "receivers", "delivery_messages",
                                   "delivery_interval", "history", "page", "rooms", "room_history", "build_threads",
                                   "size_events", "size_concurrency", "repeat")},
        "memory_before": memory(a), "loadavg_start": loadavg()}

    # Users: the senders, the receivers (distinct), and the initial-sync user with a peer.
    tag = f"{int(time.time()) % 100000000:08d}"
    n_users = max(levels) + a.receivers
    start = time.monotonic()
    accounts = [register_account(a.url, a.register_secret, f"{a.prefix}-{tag}-{i}", PASSWORD)
                for i in range(n_users + 2 * len(room_counts))]
    if None in accounts:
        raise SystemExit("a benchmark user already existed; use another --prefix")
    clients = [Client(a.url, s) for s in accounts[:n_users]]
    pairs = [(Client(a.url, accounts[n_users + 2 * k]), Client(a.url, accounts[n_users + 2 * k + 1]))
             for k in range(len(room_counts))]
    registered = time.monotonic() - start
    room = {"preset": "public_chat", "name": f"{tag} messages"}
    room_id = clients[0].must("POST", f"{CS}/createRoom", room)["room_id"]
    for c in clients[1:]:
        c.must("POST", f"{CS}/join/{q(room_id)}", {})
    for c in clients[:max(levels)]:  # warm-up, untimed: one message per sender
        c.must("PUT", send_path(room_id, f"{tag}-warm"), {"msgtype": "m.text", "body": "warm-up"})
    result["setup"] = {"users": len(accounts), "register_s": round(registered, 2), "room_members": n_users,
                       "seconds": round(time.monotonic() - start, 2)}

    senders = clients[:max(levels)]
    result["send"] = [send_level(senders, room_id, c, f"{tag}-c{c}", a.messages, a.max_seconds) for c in levels]
    sent = sum(r["ok"] for r in result["send"]) + len(senders)
    result["delivery"] = delivery(a, clients[0], clients[n_users - a.receivers:], room_id, tag)
    sent += result["delivery"]["acknowledged"] + 1
    if sent < a.history:  # enough history for the pagination
        send_level(senders, room_id, min(4, len(senders)), f"{tag}-fill", a.history - sent, 600)
    result["pagination"] = pagination(a, clients[1], room_id)
    result["initial_sync"] = []
    for n, (hub, peer) in zip(room_counts, pairs):
        built = build_rooms(a, hub, peer, f"{tag}-r{n}", n)
        result["initial_sync"].append({"rooms": n, "setup": built, "sync": initial_sync(a, hub, f"{tag}-r{n}")})
    if a.db_size_cmd:
        result["storage"] = storage(a, senders, room_id, tag)
    for c in clients + [c for pair in pairs for c in pair]:
        c.close()
    result["memory_after"] = memory(a)
    result["loadavg_end"] = loadavg()
    print(json.dumps(result, indent=1))
    print_tables(a, result)


def print_tables(a, r):
    name = f"{a.label} {a.version}".strip()
    print("\n| server | concurrency | messages/s | p50 ms | p95 ms | p99 ms | ok | errors | loadavg before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in r["send"]:
        print(f"| {name} | {s['concurrency']} | {s['messages_per_s']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
              f"| {s['ok']} | {sum(s['errors'].values())} | {s['loadavg_before']} / {s['loadavg_after']} |")
    d = r["delivery"]
    print("\n| server | receivers × messages | after ack p50 / p95 / p99 ms | after send start p50 / p95 / p99 ms "
          "| seen / expected | seen before ack | loadavg before |")
    print("|---|---|---|---|---|---|---|")
    f = lambda s: f"{s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']}"
    print(f"| {name} | {d['receivers']} × {d['acknowledged']} | {f(d['after_ack'])} | {f(d['after_send_start'])} "
          f"| {d['seen']} / {d['expected']} | {d['seen_before_ack']} | {d['loadavg_before']} |")
    g = r["pagination"]
    print(f"\n| server | /messages: {g['history']} events in pages of {g['page']}, ms (median of {len(g['runs'])}) "
          f"| page p50 ms | one request limit={g['history']}, ms | loadavg before |")
    print("|---|---|---|---|---|")
    print(f"| {name} | {g['paged_ms_median']} | {g['page_p50_ms_median']} "
          f"| {g['single_ms_median']} | {g['runs'][0]['loadavg_before']} |")
    print("\n| server | rooms × messages | initial /sync first ms | median (min–max) ms | bytes | building, s "
          "| createRoom p50 / p95 ms | join p50 / p95 ms | loadavg before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in r["initial_sync"]:
        b, i = e["setup"], e["sync"]
        print(f"| {name} | {b['rooms']} × {a.room_history} | {i['first_ms']} "
              f"| {i['median_ms']} ({i['min_ms']}–{i['max_ms']}) | {i['runs'][0]['bytes']} | {b['seconds']} "
              f"| {b['createRoom']['p50_ms']} / {b['createRoom']['p95_ms']} | {b['join']['p50_ms']} / {b['join']['p95_ms']} "
              f"| {i['runs'][0]['loadavg_before']} |")
    st = r.get("storage")
    if st:
        print("\n| server | events | db bytes before / after | bytes per event | MiB per 100k events | loadavg before / after |")
        print("|---|---|---|---|---|---|")
        print(f"| {name} | {st['events']} | {st['db_bytes_before']} / {st['db_bytes_after']} | {st['bytes_per_event']} "
              f"| {st['mib_per_100k_events']} | {st['loadavg_before']} / {st['loadavg_after']} |")
    m0, m1 = r["memory_before"], r["memory_after"]
    if m1:
        print("\n| server | RSS server before / after, MiB | peak RSS server, MiB | RSS server+children, MiB "
              "| PSS server+children(+db) before / after, MiB |")
        print("|---|---|---|---|---|")
        print(f"| {name} | {m0['server']['rss_mib']} / {m1['server']['rss_mib']} | {m1['server_peak_rss_mib']} "
              f"| {m1['tree']['rss_mib']} | {m0['total_pss_mib']} / {m1['total_pss_mib']} |")


if __name__ == "__main__":
    main()
