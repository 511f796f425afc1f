#!/usr/bin/env python3
"""What modern clients ask of a Matrix homeserver: sliding sync, device keys, media, search (stdlib only).

Registers users through the shared-secret admin API (/_synapse/admin/v1/register) and measures,
phase by phase (--phases, default all four, in this order):
  sliding  Simplified sliding sync (MSC4186, POST /_matrix/client/unstable/
           org.matrix.simplified_msc3575/sync). For each count N in --ss-rooms (10,100,1000) a new
           user creates N named public rooms, a second user joins each, and the two send
           --ss-room-messages (3) into each. Then, --ss-repeat times: (a) an initial request (no
           pos) with one list {"ranges": [[0, 19]], "timeline_limit": 1, "required_state":
           [["m.room.name", ""], ["m.room.member", "$LAZY"]]}; the second user sends one message
           into a room outside that window (any room when N <= 20); (b) the incremental request
           with the initial response's pos and timeout=0, which must carry that message. The
           same conn_id throughout; a request without pos starts the connection afresh.
  keys     One user logs in --key-devices times (100 devices, --login-threads at a time); each
           device uploads device keys (placeholder keys and signatures: servers do not check the
           signatures of their own users' keys) and --key-otks signed_curve25519 one-time keys
           (default --key-repeat + 2, so every claim gets a real one-time key, never a fallback).
           A second user who shares a room with the first then POSTs, --key-repeat times,
           /keys/query for all the first user's devices and /keys/claim for one key of each.
  media    --media-repeat times: POST /_matrix/media/v3/upload of --media-bytes (50,000,000)
           random bytes (each upload different in its first bytes, so no server can store it
           once for all), then GET /_matrix/client/v1/media/download/{server}/{id} of each,
           read to the end and checked by length and SHA-256 (after the clock stops). MB/s in
           decimal megabytes (10^6 bytes).
  search   A user creates --search-rooms rooms (10); --seed-concurrency users (20) join them all
           and send numbered messages of 8 pseudo-words into them, round robin. Every
           250th message (--rare-every) also holds the word "quokka", every 20th
           (--common-every) "lantern": 400 and 5,000 matches per 100k messages. Seeding stops at each
           count in --search-counts (100000) to measure, and for good when it has spent
           --seed-seconds (1200) sending: the last measurement is then taken at the count reached. At each stop,
           POST /_matrix/client/v3/search (room_events, filter limit 10, no context) for both
           words, order_by rank and recent, --search-repeat times each (20).
Before every measured step the tool waits, up to --load-wait s (600, polling every 30 s), for the
1-minute load average to fall to --max-load (2.5) or below; it records the load it measured under
and how long it waited. With --server-pid or --server-pid-file: RSS and peak RSS (VmHWM) of the
server process and Pss of it with its descendants (a managed PostgreSQL) and --db-pid-file's tree,
before and after each phase. Prints the full result as JSON, then Markdown rows. Every loop is
bounded by a count or a deadline, and every request has a timeout (60 s; media --media-timeout).
The server's rate limits for logins, messages, joins and room creation must be raised or off.

  python3 bench/clients.py --label synapse --url http://127.0.0.1:18490 --register-secret bench-secret \\
      --server-pid-file DIR/synapse.pid --db-pid-file DIR/pg/data/postmaster.pid
"""
import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from _common import connect, loadavg, percentile_ms, wait_for_server
from messages import Client, build_rooms, memory, q, send_path
from register import call, register_account

CS = "/_matrix/client/v3"
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
PASSWORD = "bench-clients-password-1"
RARE, COMMON = "quokka", "lantern"


def stats(seconds):
    s = sorted(seconds)
    return {"n": len(s), "p50_ms": percentile_ms(s, 0.5), "p95_ms": percentile_ms(s, 0.95),
            "min_ms": percentile_ms(s, 0.0), "max_ms": percentile_ms(s, 1.0)}


def load_1min():
    return float(loadavg().split()[0])


def quiet(a):
    """Waits (bounded) for the 1-minute load to reach a.max_load; returns what was measured under."""
    start = time.monotonic()
    while load_1min() > a.max_load and time.monotonic() - start < a.load_wait:
        time.sleep(min(a.load_poll, max(0.0, a.load_wait - (time.monotonic() - start))))
    waited = round(time.monotonic() - start)
    return {"loadavg": loadavg(), "waited_s": waited, "quiet": load_1min() <= a.max_load}


def new_accounts(a, tag, names):
    accounts = [register_account(a.url, a.register_secret, f"{a.prefix}-{tag}-{n}", PASSWORD) for n in names]
    if None in accounts:
        raise SystemExit("a benchmark user already existed; use another --prefix")
    return [Client(a.url, acc) for acc in accounts]


def timed(client, method, path, body=None):
    t = time.monotonic()
    status, raw = client.request(method, path, body)
    return time.monotonic() - t, status, raw


def parse(raw):
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Sliding sync

def sliding_body(conn_id):
    return {"conn_id": conn_id, "lists": {"all": {
        "ranges": [[0, 19]], "timeline_limit": 1,
        "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]]}}}


def sliding(a, tag):
    out = []
    for n in a.ss_rooms:
        hub, peer = new_accounts(a, tag, [f"ss{n}-a", f"ss{n}-b"])
        a.room_history, a.build_threads = a.ss_room_messages, a.build_threads_
        built = build_rooms(a, hub, peer, f"{tag}-ss{n}", n)
        rooms = hub.must("GET", f"{CS}/joined_rooms")["joined_rooms"]
        rng = random.Random(n)
        initial, incremental, errors, runs = [], [], Counter(), []
        cond = quiet(a)
        for k in range(a.ss_repeat):
            conn = f"bench-{tag}"
            secs, status, raw = timed(hub, "POST", SLIDING, sliding_body(conn))
            body = parse(raw) if status == 200 else None
            if not isinstance(body, dict) or "pos" not in body:
                errors[f"initial {status} {raw[:300]!r}"] += 1
                continue
            initial.append(secs)
            window = set(body.get("rooms", {}))
            count = body.get("lists", {}).get("all", {}).get("count")
            outside = [r for r in rooms if r not in window] or rooms
            target = rng.choice(outside)
            marker = f"{tag} ss{n} incremental {k}"
            s, _ = peer.request("PUT", send_path(target, f"{tag}-ss{n}-{k}"), {"msgtype": "m.text", "body": marker})
            if s != 200:
                errors[f"send {s}"] += 1
            path = f"{SLIDING}?{urllib.parse.urlencode({'pos': body['pos'], 'timeout': 0})}"
            secs2, status2, raw2 = timed(hub, "POST", path, sliding_body(conn))
            inc = parse(raw2) if status2 == 200 else None
            if not isinstance(inc, dict):
                errors[f"incremental {status2} {raw2[:300]!r}"] += 1
                continue
            incremental.append(secs2)
            events = inc.get("rooms", {}).get(target, {}).get("timeline", [])
            seen = any((e.get("content") or {}).get("body") == marker for e in events)
            runs.append({"initial_ms": round(secs * 1000, 1), "initial_bytes": len(raw), "initial_rooms": len(window),
                         "list_count": count, "incremental_ms": round(secs2 * 1000, 1),
                         "incremental_bytes": len(raw2), "incremental_rooms": len(inc.get("rooms", {})),
                         "new_message_seen": seen, "target_was_outside_window": target not in window})
        hub.close()
        peer.close()
        out.append({"rooms": n, "setup": built, "load": cond, "loadavg_after": loadavg(),
                    "initial": stats(initial), "incremental": stats(incremental),
                    "first_initial_ms": runs[0]["initial_ms"] if runs else None,
                    "initial_bytes": runs[0]["initial_bytes"] if runs else None,
                    "incremental_bytes_median": sorted(r["incremental_bytes"] for r in runs)[len(runs) // 2] if runs else None,
                    "all_seen": all(r["new_message_seen"] for r in runs) and len(runs) == a.ss_repeat,
                    "errors": dict(errors), "runs": runs})
    return {"counts": out}


# ---------------------------------------------------------------------------------------------
# Device keys

def device_keys(user_id, device_id):
    return {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": f"curve-key-of-{device_id}",
                     f"ed25519:{device_id}": f"ed-key-of-{device_id}"},
            "signatures": {user_id: {f"ed25519:{device_id}": "placeholder-signature"}}}


def keys(a, tag):
    owner, other = new_accounts(a, tag, ["keys-a", "keys-b"])
    otks = a.key_otks or a.key_repeat + 2
    lock = threading.Lock()
    devices, errors = [], Counter()

    def login(i):
        status, body = call(f"{a.url}{CS}/login", "POST", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": owner.user_id},
            "password": PASSWORD, "initial_device_display_name": f"bench device {i}"})
        if status != 200:
            with lock:
                errors[f"login {status} {str(body)[:200]}"] += 1
            return
        dev = Client(a.url, body)
        one_time = {f"signed_curve25519:K{j:04d}": {
            "key": f"otk-{body['device_id']}-{j}",
            "signatures": {owner.user_id: {f"ed25519:{body['device_id']}": "placeholder-signature"}}}
            for j in range(otks)}
        status, resp = dev.json("POST", f"{CS}/keys/upload", {
            "device_keys": device_keys(owner.user_id, body["device_id"]), "one_time_keys": one_time})
        dev.close()
        with lock:
            if status == 200 and (resp.get("one_time_key_counts") or {}).get("signed_curve25519") == otks:
                devices.append(body["device_id"])
            else:
                errors[f"upload {status} {str(resp)[:200]}"] += 1

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=a.login_threads) as pool:
        list(pool.map(login, range(a.key_devices)))
    setup_s = round(time.monotonic() - t, 1)
    room = owner.must("POST", f"{CS}/createRoom", {"preset": "private_chat", "invite": [other.user_id]})["room_id"]
    other.must("POST", f"{CS}/join/{q(room)}", {})

    query_body = {"device_keys": {owner.user_id: []}, "timeout": 10000}
    claim_body = {"one_time_keys": {owner.user_id: {d: "signed_curve25519" for d in devices}}, "timeout": 10000}
    query_lat, claim_lat, runs = [], [], []
    cond = quiet(a)
    for k in range(a.key_repeat):
        secs, status, raw = timed(other, "POST", f"{CS}/keys/query", query_body)
        body = parse(raw) if status == 200 else None
        got = len(((body or {}).get("device_keys") or {}).get(owner.user_id) or {}) if isinstance(body, dict) else 0
        if status == 200:
            query_lat.append(secs)
        else:
            errors[f"query {status} {raw[:300]!r}"] += 1
        secs2, status2, raw2 = timed(other, "POST", f"{CS}/keys/claim", claim_body)
        body2 = parse(raw2) if status2 == 200 else None
        claimed = ((body2 or {}).get("one_time_keys") or {}).get(owner.user_id) or {} if isinstance(body2, dict) else {}
        if status2 == 200:
            claim_lat.append(secs2)
        else:
            errors[f"claim {status2} {raw2[:300]!r}"] += 1
        runs.append({"query_ms": round(secs * 1000, 1), "query_devices": got, "query_bytes": len(raw),
                     "claim_ms": round(secs2 * 1000, 1), "claimed_devices": len(claimed), "claim_bytes": len(raw2)})
    owner.close()
    other.close()
    return {"devices": len(devices), "one_time_keys_per_device": otks, "setup_s": setup_s,
            "login_threads": a.login_threads, "load": cond, "loadavg_after": loadavg(),
            "query": stats(query_lat), "claim": stats(claim_lat),
            "first_query_ms": runs[0]["query_ms"] if runs else None,
            "first_claim_ms": runs[0]["claim_ms"] if runs else None,
            "all_devices_every_time": all(r["query_devices"] == len(devices) == a.key_devices
                                          and r["claimed_devices"] == len(devices) for r in runs),
            "errors": dict(errors), "runs": runs}


# ---------------------------------------------------------------------------------------------
# Media

def media(a, tag):
    (user,) = new_accounts(a, tag, ["media"])
    user.timeout = a.media_timeout
    base = bytearray(os.urandom(a.media_bytes))
    uploads, downloads, runs, errors = [], [], [], Counter()
    cond = quiet(a)
    for k in range(a.media_repeat):
        base[:16] = f"{tag}-{k:07d}".encode()[:16].ljust(16, b"-")
        data = bytes(base)
        digest = hashlib.sha256(data).hexdigest()
        user.close()  # a fresh connection per transfer
        user.conn = None
        load = loadavg()
        path = f"/_matrix/media/v3/upload?{urllib.parse.urlencode({'filename': f'bench-{k}.bin'})}"
        conn = user.conn = connect(a.url, a.media_timeout)
        t = time.monotonic()
        try:
            conn.request("POST", path, data, {"Authorization": f"Bearer {user.token}",
                                              "Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except OSError as e:
            status, raw = type(e).__name__, b""
        up = time.monotonic() - t
        body = parse(raw) if status == 200 else None
        if not isinstance(body, dict) or not str(body.get("content_uri", "")).startswith("mxc://"):
            errors[f"upload {status} {raw[:300]!r}"] += 1
            continue
        uploads.append(up)
        server, media_id = body["content_uri"][len("mxc://"):].split("/", 1)
        user.close()
        conn = user.conn = connect(a.url, a.media_timeout)
        chunks, got = [], 0
        t = time.monotonic()
        try:
            conn.request("GET", f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}",
                         headers={"Authorization": f"Bearer {user.token}"})
            resp = conn.getresponse()
            status = resp.status
            for _ in range(a.media_bytes // (1 << 20) + 1000):  # bounded: 1 MiB reads
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except OSError as e:
            status = type(e).__name__
        down = time.monotonic() - t
        user.close()
        ok = status == 200 and got == len(data) and hashlib.sha256(b"".join(chunks)).hexdigest() == digest
        if ok:
            downloads.append(down)
        else:
            errors[f"download {status}, {got} bytes"] += 1
        runs.append({"upload_s": round(up, 3), "upload_mb_s": round(len(data) / 1e6 / up, 1),
                     "download_s": round(down, 3), "download_mb_s": round(len(data) / 1e6 / down, 1),
                     "download_ok": ok, "loadavg_before": load})
    mb = a.media_bytes / 1e6

    def rate(seconds):
        s = sorted(seconds)
        return {"n": len(s), "median_s": round(s[len(s) // 2], 3) if s else None,
                "median_mb_s": round(mb / s[len(s) // 2], 1) if s else None,
                "best_mb_s": round(mb / s[0], 1) if s else None, "worst_mb_s": round(mb / s[-1], 1) if s else None}
    return {"bytes": a.media_bytes, "load": cond, "loadavg_after": loadavg(), "upload": rate(uploads),
            "download": rate(downloads), "errors": dict(errors), "runs": runs}


# ---------------------------------------------------------------------------------------------
# Search

SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "re", "si", "to", "vu", "we", "xi",
             "yo", "ze", "bri", "cla", "dro", "fle", "gri", "ple", "sto", "tru", "vin", "mar", "sol"]


def vocabulary(n=400):
    rng, words = random.Random(4186), set()
    for _ in range(n * 20):
        if len(words) >= n:
            break
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if not w.startswith((RARE[:3], COMMON[:3])):
            words.add(w)
    return sorted(words)


def seed_body(i, a, vocab):
    rng = random.Random(i)
    words = [rng.choice(vocab) for _ in range(8)]
    if i % a.rare_every == 0:
        words.insert(rng.randint(0, 8), RARE)
    if i % a.common_every == 0:
        words.insert(rng.randint(0, 8), COMMON)
    return f"seed {i} " + " ".join(words)


def expected_matches(n, every):
    return n // every  # indices 1..n


def seed(a, rooms, senders, upto, state, deadline, vocab):
    """Sends messages state['next']..upto round robin into rooms; stops at upto or the deadline."""
    lock = threading.Lock()
    start_count, load = state["sent"], loadavg()
    t0 = time.monotonic()

    def worker(client):
        while True:
            with lock:
                if state["next"] > upto or time.monotonic() >= deadline:
                    return
                i = state["next"]
                state["next"] += 1
            room = rooms[i % len(rooms)]
            status, _ = client.request("PUT", send_path(room, f"{state['tag']}-s{i}"),
                                       {"msgtype": "m.text", "body": seed_body(i, a, vocab)})
            with lock:
                if status == 200:
                    state["sent"] += 1
                else:
                    state["errors"][str(status)] += 1
                    if sum(state["errors"].values()) > a.seed_max_errors:
                        state["next"] = upto + 1  # give up: the server fails too often

    threads = [threading.Thread(target=worker, args=(c.for_thread(),)) for c in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    return {"sent": state["sent"] - start_count, "seconds": round(secs, 1),
            "messages_per_s": round((state["sent"] - start_count) / secs, 1) if secs else None,
            "loadavg_before": load, "loadavg_after": loadavg()}


def search_once(client, term, order):
    body = {"search_categories": {"room_events": {"search_term": term, "order_by": order, "filter": {"limit": 10}}}}
    secs, status, raw = timed(client, "POST", f"{CS}/search", body)
    out = parse(raw) if status == 200 else None
    ev = ((out or {}).get("search_categories") or {}).get("room_events") or {} if isinstance(out, dict) else {}
    return secs, status, raw, ev


def search(a, tag):
    users = new_accounts(a, tag, ["search"] + [f"seed{i}" for i in range(a.seed_concurrency)])
    searcher, senders = users[0], users[1:]
    rooms = [searcher.must("POST", f"{CS}/createRoom", {"preset": "public_chat", "name": f"{tag} search {r}"})["room_id"]
             for r in range(a.search_rooms)]
    for s in senders:
        for r in rooms:
            s.must("POST", f"{CS}/join/{q(r)}", {})
    vocab = vocabulary()
    state = {"next": 1, "sent": 0, "errors": Counter(), "tag": tag}
    out, seeded, budget = [], [], a.seed_seconds  # seconds of seeding left (measuring does not count)
    for target in a.search_counts:
        if state["next"] > target:
            continue
        seeded.append({"upto": target, **seed(a, rooms, senders, target, state, time.monotonic() + budget, vocab)})
        budget -= seeded[-1]["seconds"]
        reached = state["next"] - 1
        cond = quiet(a)
        terms = []
        for term, every in ((RARE, a.rare_every), (COMMON, a.common_every)):
            for order in ("rank", "recent"):
                lat, counts, results, errors = [], set(), set(), Counter()
                for _ in range(a.search_repeat):
                    secs, status, raw, ev = search_once(searcher, term, order)
                    if status == 200:
                        lat.append(secs)
                        counts.add(ev.get("count"))
                        results.add(len(ev.get("results") or []))
                    else:
                        errors[f"{status} {raw[:300]!r}"] += 1
                terms.append({"term": term, "order_by": order, "expected_matches": expected_matches(reached, every),
                              "count": sorted(counts, key=str), "results_per_page": sorted(results),
                              **stats(lat), "errors": dict(errors)})
        out.append({"messages": state["sent"], "attempted": reached, "target": target, "load": cond,
                    "loadavg_after": loadavg(), "terms": terms})
        if budget <= 0 or state["next"] <= target:
            break  # the seeding budget is spent (or too many errors): no further counts
    for u in users:
        u.close()
    return {"rooms": a.search_rooms, "senders": a.seed_concurrency, "seed_seconds_budget": a.seed_seconds,
            "seeding": seeded, "seed_errors": dict(state["errors"]), "measurements": out,
            "reached_target": state["sent"] >= max(a.search_counts)}


# ---------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of the client API")
    p.add_argument("--register-secret", required=True, help="shared secret of /_synapse/admin/v1/register")
    p.add_argument("--label", default="server")
    p.add_argument("--version", default="", help="recorded as given, e.g. the server's version")
    p.add_argument("--prefix", default="bench-cli", help="localpart prefix; a run id is appended")
    p.add_argument("--phases", default="sliding,keys,media,search")
    p.add_argument("--ss-rooms", default="10,100,1000", help="room counts of the sliding sync users")
    p.add_argument("--ss-room-messages", type=int, default=3, help="messages per such room (default 3)")
    p.add_argument("--ss-repeat", type=int, default=20, help="initial + incremental pairs per count (default 20)")
    p.add_argument("--build-threads", dest="build_threads_", type=int, default=8, metavar="N",
                   help="threads that fill the sliding sync rooms (default 8)")
    p.add_argument("--key-devices", type=int, default=100)
    p.add_argument("--key-otks", type=int, default=0, help="one-time keys per device (default: --key-repeat + 2)")
    p.add_argument("--key-repeat", type=int, default=20)
    p.add_argument("--login-threads", type=int, default=4)
    p.add_argument("--media-bytes", type=int, default=50_000_000)
    p.add_argument("--media-repeat", type=int, default=5)
    p.add_argument("--media-timeout", type=float, default=300.0)
    p.add_argument("--search-rooms", type=int, default=10)
    p.add_argument("--search-counts", default="100000", help="message counts to measure search at (ascending)")
    p.add_argument("--seed-concurrency", type=int, default=20, help="seeding senders, each its own user")
    p.add_argument("--seed-seconds", type=float, default=1200.0, help="total seeding budget (default 1200)")
    p.add_argument("--seed-max-errors", type=int, default=1000)
    p.add_argument("--rare-every", type=int, default=250)
    p.add_argument("--common-every", type=int, default=20)
    p.add_argument("--search-repeat", type=int, default=20)
    p.add_argument("--max-load", type=float, default=2.5, help="wait for a 1-minute load at most this (default 2.5)")
    p.add_argument("--load-wait", type=float, default=600.0, help="longest wait for it, s (default 600)")
    p.add_argument("--load-poll", type=float, default=30.0)
    p.add_argument("--server-pid", type=int, help="PID of the server process, for memory")
    p.add_argument("--server-pid-file", help="file whose first line is the server's PID")
    p.add_argument("--db-pid-file", help="PID file of an external database (e.g. postmaster.pid)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server to answer (default 60)")
    a = p.parse_args()
    a.url = a.url.rstrip("/")
    a.ss_rooms = [int(c) for c in a.ss_rooms.split(",") if c.strip()]
    a.search_counts = sorted(int(c) for c in a.search_counts.split(",") if c.strip())
    phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    if unknown := set(phases) - {"sliding", "keys", "media", "search"}:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}")
    wait_for_server(a.url, a.wait)
    tag = f"{int(time.time()) % 100000000:08d}"
    result = {"label": a.label, "version": a.version, "url": a.url, "run": tag,
              "params": {k: v for k, v in vars(a).items() if k not in ("register_secret",)},
              "loadavg_start": loadavg(), "memory": {"start": memory(a)}}
    for phase in phases:
        t = time.monotonic()
        result[phase] = {"sliding": sliding, "keys": keys, "media": media, "search": search}[phase](a, tag)
        result[phase]["phase_s"] = round(time.monotonic() - t, 1)
        result["memory"][f"after_{phase}"] = memory(a)
        print(f"# {phase} done in {result[phase]['phase_s']} s, load {loadavg()}", file=sys.stderr, flush=True)
    result["loadavg_end"] = loadavg()
    print(json.dumps(result, indent=1))
    print_tables(a, result)


def print_tables(a, r):
    name = f"{a.label} {a.version}".strip()
    if "sliding" in r:
        print("\n| server | rooms | initial p50 / p95 ms | incremental p50 / p95 ms | initial bytes | new message seen "
              "| load before |")
        print("|---|---|---|---|---|---|---|")
        for e in r["sliding"]["counts"]:
            print(f"| {name} | {e['rooms']} | {e['initial']['p50_ms']} / {e['initial']['p95_ms']} "
                  f"| {e['incremental']['p50_ms']} / {e['incremental']['p95_ms']} | {e['initial_bytes']} "
                  f"| {e['all_seen']} | {e['load']['loadavg']} |")
    if "keys" in r:
        k = r["keys"]
        print("\n| server | devices | /keys/query p50 / p95 ms | /keys/claim p50 / p95 ms | all devices every time "
              "| load before |")
        print("|---|---|---|---|---|---|")
        print(f"| {name} | {k['devices']} | {k['query']['p50_ms']} / {k['query']['p95_ms']} "
              f"| {k['claim']['p50_ms']} / {k['claim']['p95_ms']} | {k['all_devices_every_time']} | {k['load']['loadavg']} |")
    if "media" in r:
        m = r["media"]
        print("\n| server | bytes | upload median s (MB/s; best–worst) | download median s (MB/s; best–worst) | load before |")
        print("|---|---|---|---|---|")
        u, d = m["upload"], m["download"]
        print(f"| {name} | {m['bytes']} | {u['median_s']} ({u['median_mb_s']}; {u['best_mb_s']}–{u['worst_mb_s']}) "
              f"| {d['median_s']} ({d['median_mb_s']}; {d['best_mb_s']}–{d['worst_mb_s']}) | {m['load']['loadavg']} |")
    if "search" in r:
        print("\n| server | messages | term | order | count | p50 / p95 ms | load before |")
        print("|---|---|---|---|---|---|---|")
        for mm in r["search"]["measurements"]:
            for t in mm["terms"]:
                print(f"| {name} | {mm['messages']} | {t['term']} | {t['order_by']} | {t['count']} "
                      f"| {t['p50_ms']} / {t['p95_ms']} | {mm['load']['loadavg']} |")
    if r["memory"]["start"]:
        print("\n| server | RSS server, MiB: " + " / ".join(r["memory"]) + " | peak RSS at the end, MiB |")
        print("|---|---|---|")
        print(f"| {name} | " + " / ".join(str(m['server']['rss_mib']) for m in r["memory"].values())
              + f" | {list(r['memory'].values())[-1]['server_peak_rss_mib']} |")


if __name__ == "__main__":
    main()
