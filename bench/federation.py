#!/usr/bin/env python3
"""Federation between two servers of one kind on loopback: throughput, delivery latency, joining a
large remote room, catch-up after downtime (stdlib only).

Unlike the other tools it starts the servers itself, two of a kind per --pairs entry, one pair at
a time, each on fresh data, and stops them by PID at the end:
  poststelle  two release `poststelle serve` processes, each with its own managed PostgreSQL in
              its data directory; server names 127.0.0.1:<federation port>, the federation
              listener's self-signed certificate, federation.allow_private_networks=true,
              federation.verify_tls=false, rate limits off.
  synapse     two Synapses (--synapse-python, default .test-clients/synapse/bin/python) as the
              loopback recipe says: a TLS listener for client and federation (server name
              127.0.0.1:<TLS port>, a self-signed certificate made with openssl) and a plain client
              listener; federation_ip_range_blacklist [], federation_verify_certificates false,
              trusted_key_servers [], rate limits raised (rc_message, rc_joins, rc_joins_per_room,
              rc_federation, ...). Database (--synapse-db): postgres (default; a throwaway
              PostgreSQL cluster per Synapse, cp_min 5 / cp_max 10 as bench/synapse/setup.sh; the
              venv needs psycopg2) or sqlite.
Users are registered through /_synapse/admin/v1/register. Password hashing is set cheap on both
(argon2id 1024 KiB t=1; bcrypt rounds 4) so that registering --members users is quick; no login is
measured. Rooms are created with --room-version (11) on server A; B's users join them over
federation (POST /join/{room}?via=A).

Phases (--phases, in this order):
  throughput  --senders users of A (10) send --events messages (1000) into one room as fast as
              they can, each over its own keep-alive connection; a user of B long-polls /sync
              (filter: that room, timeline limit 500). Reported: sends/s acknowledged on A, and
              events/s from the first send until the last event has shown up in B's /sync; events
              B's /sync never showed (a limited timeline) are looked up in B's /messages.
  latency     one user of A sends --latency-messages (100), one every --latency-interval s (0.2);
              the B receiver records for each the time from the send's 200 on A (and from its
              start) to the /sync response on B that holds it. p50/p95/p99.
  join        a user of A creates a room; --members - 1 more users of A join it (--seed-threads at
              a time) after the creator has set enough custom state events (type
              org.poststelle.bench.state, one state key each, --seed-threads at a time) that the
              room's current state holds --state-events entries in all (memberships included).
              Then a new user of B joins it: the time of POST /join on B, and until the room
              shows up (joined) in that user's /sync on B; B's joined member count afterwards.
  catchup     B is stopped (SIGTERM); --senders users of A send --catchup-events (10000) into the
              throughput room, then one final marker; B is started again and, once it answers,
              its user sends one message into the room (which reaches A and, on both servers,
              ends A's backoff for B at once, as a returning user would). Reported: from B
              answering /versions until the marker is in B's /sync (long-polling from the token it
              had before the stop), and how many of the events B then returns in /messages
              (paging backwards, bounded by --catchup-timeout) and how long that took.
Before each measurement the tool waits, up to --load-wait s, for the 1-minute load to fall to
--max-load, and records the load. Prints the full result as JSON, then Markdown rows. Every loop
is bounded by a count or a deadline; every request has a timeout (60 s).

  python3 bench/federation.py --pairs poststelle,synapse --scratch /tmp/fedbench \\
      --events 1000 --members 1000 --state-events 10000 --catchup-events 10000
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from _common import loadavg, percentile_ms, proc_info
from messages import Client, q, send_path, sync_path
from register import call, register_account

CS = "/_matrix/client/v3"
PASSWORD = "bench-federation-password-1"
SECRET = "bench-secret"
STATE_TYPE = "org.poststelle.bench.state"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"# {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def load_1min():
    return float(loadavg().split()[0])


def quiet(a):
    """Waits (bounded) for the 1-minute load to reach a.max_load; returns what was measured under."""
    start = time.monotonic()
    while load_1min() > a.max_load and time.monotonic() - start < a.load_wait:
        time.sleep(min(5.0, max(0.0, a.load_wait - (time.monotonic() - start))))
    out = {"loadavg": loadavg(), "waited_s": round(time.monotonic() - start), "quiet": load_1min() <= a.max_load}
    log(f"measuring from here (load {out['loadavg']}, waited {out['waited_s']} s)")
    return out


def stats(seconds):
    s = sorted(seconds)
    return {"n": len(s), "p50_ms": percentile_ms(s, 0.5), "p95_ms": percentile_ms(s, 0.95),
            "p99_ms": percentile_ms(s, 0.99), "max_ms": percentile_ms(s, 1.0)}


def as_root(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def stop_pid(pid, sig=signal.SIGTERM, timeout=30.0):
    """Signals pid and waits until it is gone (SIGKILL after timeout)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if proc_info(pid) is None:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def wait_up(url, wait=90.0):
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if call(f"{url}/_matrix/client/versions")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"no 200 from {url}/_matrix/client/versions within {wait} s")


# ---------------------------------------------------------------------------------------------
# Servers

class Poststelle:
    kind = "poststelle"

    def __init__(self, a, name, dir_, client_port, fed_port):
        self.binary, self.dir = a.poststelle_bin, dir_
        self.url = f"http://127.0.0.1:{client_port}"
        self.server_name = f"127.0.0.1:{fed_port}"
        self.env = dict(os.environ, POSTSTELLE_DATA_DIR=f"{dir_}/data", POSTSTELLE_SERVER_NAME=self.server_name,
                        POSTSTELLE_LISTENERS__CLIENT__ADDR=f"127.0.0.1:{client_port}",
                        POSTSTELLE_LISTENERS__FEDERATION__ADDR=f"127.0.0.1:{fed_port}",
                        POSTSTELLE_REGISTRATION__SHARED_SECRET=SECRET, POSTSTELLE_RATE_LIMITS__ENABLED="false",
                        POSTSTELLE_FEDERATION__ALLOW_PRIVATE_NETWORKS="true",
                        POSTSTELLE_FEDERATION__VERIFY_TLS="false",
                        POSTSTELLE_LOGIN__ARGON2_MEMORY_KIB="1024", POSTSTELLE_LOGIN__ARGON2_ITERATIONS="1",
                        POSTSTELLE_ROOMS__DEFAULT_VERSION=a.room_version)
        self.name, self.proc = name, None
        os.makedirs(dir_, exist_ok=True)

    def start(self):
        logf = open(f"{self.dir}/server.log", "ab")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, start_new_session=True)
        logf.close()

    def stop(self):
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc = None
        # If it had to be killed, its managed PostgreSQL may still run: stop that by its PID too.
        pidfile = f"{self.dir}/data/postgres/cluster/postmaster.pid"
        if os.path.exists(pidfile):
            try:
                pid = int(open(pidfile).readline())
                if proc_info(pid):
                    stop_pid(pid, signal.SIGINT)
            except (ValueError, OSError):
                pass

    def cleanup(self):
        self.stop()

    def describe(self):
        return "poststelle (release), managed PostgreSQL in its data directory"


class Synapse:
    kind = "synapse"

    def __init__(self, a, name, dir_, client_port, tls_port, pg_port):
        self.python, self.dir, self.db = a.synapse_python, dir_, a.synapse_db
        self.url = f"http://127.0.0.1:{client_port}"
        self.server_name = f"127.0.0.1:{tls_port}"
        self.name, self.proc, self.pg_port = name, None, pg_port
        os.makedirs(dir_, exist_ok=True)
        p = lambda f: f"{dir_}/{f}"  # noqa: E731
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-keyout",
                        p("tls.key"), "-out", p("tls.crt"), "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        import base64
        seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        with open(p("signing.key"), "w") as f:
            f.write(f"ed25519 a_bench {seed}\n")
        if self.db == "postgres":
            self._start_pg()
            database = {"name": "psycopg2", "args": {"user": "postgres", "host": "127.0.0.1", "port": pg_port,
                                                     "database": "synapse", "cp_min": 5, "cp_max": 10}}
        else:
            database = {"name": "sqlite3", "args": {"database": p("homeserver.db")}}
        high = {"per_second": 100000, "burst_count": 100000}

        def listener(port, tls, names):
            return {"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": tls, "x_forwarded": False,
                    "resources": [{"names": names, "compress": False}]}
        config = {
            "server_name": self.server_name, "pid_file": p("homeserver.pid"), "report_stats": False,
            "listeners": [listener(tls_port, True, ["client", "federation"]), listener(client_port, False, ["client"])],
            "tls_certificate_path": p("tls.crt"), "tls_private_key_path": p("tls.key"),
            "database": database, "media_store_path": p("media"), "signing_key_path": p("signing.key"),
            "macaroon_secret_key": secrets.token_hex(16), "form_secret": secrets.token_hex(16),
            "registration_shared_secret": SECRET, "bcrypt_rounds": 4,
            "trusted_key_servers": [], "suppress_key_server_warning": True,
            "federation_verify_certificates": False, "federation_ip_range_blacklist": [],
            "enable_metrics": False, "default_room_version": a.room_version,
            "rc_message": high, "rc_registration": high,
            "rc_login": {"address": high, "account": high, "failed_attempts": high},
            "rc_joins": {"local": high, "remote": high}, "rc_joins_per_room": high, "rc_room_creation": high,
            "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
            "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 0, "reject_limit": 100000,
                              "concurrent": 1000},
        }
        with open(p("homeserver.yaml"), "w") as f:
            json.dump(config, f, indent=1)  # JSON is YAML

    def _start_pg(self):
        pg = f"{self.dir}/pg"
        os.makedirs(pg, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pg, "postgres", "postgres")
        bindir = os.path.dirname(os.path.realpath(shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"))
        subprocess.run(as_root([f"{bindir}/initdb", "-D", f"{pg}/data", "-U", "postgres", "--auth=trust",
                                "--locale=C", "--encoding=UTF8"]), check=True, capture_output=True)
        subprocess.run(as_root([f"{bindir}/pg_ctl", "-D", f"{pg}/data", "-l", f"{pg}/log", "-w", "-t", "60", "-o",
                                f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {pg}", "start"]),
                       check=True, capture_output=True)
        subprocess.run([f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-qtA", "-c",
                        "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"],
                       check=True, capture_output=True)

    def start(self):
        logf = open(f"{self.dir}/synapse.log", "ab")
        self.proc = subprocess.Popen([self.python, "-m", "synapse.app.homeserver", "-c", f"{self.dir}/homeserver.yaml"],
                                     cwd=self.dir, env={k: v for k, v in os.environ.items() if k != "SYNAPSE_CONFIG_PATH"},
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        logf.close()

    def stop(self):
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc = None

    def cleanup(self):
        self.stop()
        pidfile = f"{self.dir}/pg/data/postmaster.pid"
        if os.path.exists(pidfile):
            try:
                stop_pid(int(open(pidfile).readline()), signal.SIGINT)
            except (ValueError, OSError):
                pass

    def describe(self):
        return f"synapse on {'PostgreSQL (own cluster)' if self.db == 'postgres' else 'SQLite'}"


def make_pair(a, kind, base, made):
    """Appends servers A and B to made as they are set up (so a failure can clean up the first)."""
    d = f"{a.scratch}/{kind}-{int(time.time())}"
    for i, n in enumerate("AB"):
        if kind == "poststelle":
            made.append(Poststelle(a, n, f"{d}/{n}", base + 2 * i, base + 2 * i + 1))
        else:
            made.append(Synapse(a, n, f"{d}/{n}", base + 2 * i, base + 2 * i + 1, base + 10 + i))


# ---------------------------------------------------------------------------------------------
# Helpers

def register_many(server, names, threads):
    """Registers users in parallel; returns Clients in the order of names."""
    def one(n):
        acc = register_account(server.url, SECRET, n, PASSWORD)
        if acc is None:
            raise SystemExit(f"{n} already exists on {server.url}")
        return Client(server.url, acc)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, names))


def join_remote(client, room_id, via):
    t = time.monotonic()
    status, body = client.json("POST", f"{CS}/join/{q(room_id)}?{urllib.parse.urlencode({'via': via})}", {})
    return time.monotonic() - t, status, body


def room_filter(room_id, limit=500):
    return {"room": {"rooms": [room_id], "timeline": {"limit": limit}, "state": {"lazy_load_members": True},
                     "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
            "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}


def initial_since(client, room_id):
    body = client.must("GET", sync_path(room_filter(room_id, 1), None, 0))
    return body["next_batch"]


class Receiver(threading.Thread):
    """Long-polls /sync on B for one room; records when each body first shows up."""

    def __init__(self, client, room_id, since, stop_body, deadline_s):
        super().__init__(daemon=True)
        self.client, self.room_id, self.since, self.stop_body = client.for_thread(), room_id, since, stop_body
        self.deadline = time.monotonic() + deadline_s
        self.seen, self.limited, self.syncs, self.errors = {}, 0, 0, Counter()
        self.done = threading.Event()
        self.halt = False

    def run(self):
        f = room_filter(self.room_id)
        while time.monotonic() < self.deadline and not self.halt:
            status, raw = self.client.request("GET", sync_path(f, self.since, 5000))
            now = time.monotonic()
            if status != 200:
                self.errors[str(status)] += 1
                time.sleep(0.2)
                continue
            body = json.loads(raw)
            self.syncs += 1
            self.since = body["next_batch"]
            room = body.get("rooms", {}).get("join", {}).get(self.room_id, {})
            tl = room.get("timeline", {})
            self.limited += bool(tl.get("limited"))
            for ev in tl.get("events", []):
                b = (ev.get("content") or {}).get("body")
                if isinstance(b, str) and b not in self.seen:
                    self.seen[b] = now
            if self.stop_body in self.seen:
                break
        self.done.set()
        self.client.close()


def send_many(clients, room_id, tag, count, start_index=0):
    """len(clients) threads send count messages (bodies 'tag i') back to back; returns stats."""
    lock = threading.Lock()
    issued, lat, statuses, started = [start_index], [], Counter(), {}

    def worker(c):
        c = c.for_thread()
        while True:
            with lock:
                if issued[0] >= start_index + count:
                    break
                i = issued[0]
                issued[0] += 1
            body = f"{tag} {i}"
            t = time.monotonic()
            status, _ = c.request("PUT", send_path(room_id, f"{tag}-{i}"), {"msgtype": "m.text", "body": body})
            with lock:
                started[body] = t
                statuses[str(status)] += 1
                if status == 200:
                    lat.append(time.monotonic() - t)
        c.close()
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"t0": t0, "t1": time.monotonic(), "latencies": lat, "statuses": dict(statuses), "started": started}


def count_in_messages(client, room_id, prefix, want, deadline_s, limit=100):
    """Pages B's /messages backwards; how many distinct bodies with prefix it returns (bounded)."""
    t = time.monotonic()
    deadline = t + deadline_s
    found, frm, pages, errors = set(), None, 0, Counter()
    while time.monotonic() < deadline and len(found) < want and pages < want // 20 + 100:
        params = {"dir": "b", "limit": limit}
        if frm:
            params["from"] = frm
        status, body = client.json("GET", f"{CS}/rooms/{q(room_id)}/messages?{urllib.parse.urlencode(params)}")
        pages += 1
        if status != 200:
            errors[str(status)] += 1
            break
        for ev in body.get("chunk", []):
            b = (ev.get("content") or {}).get("body")
            if isinstance(b, str) and b.startswith(prefix):
                found.add(b)
        if not body.get("end") or body["end"] == frm:
            break
        frm = body["end"]
    return {"found": len(found), "wanted": want, "seconds": round(time.monotonic() - t, 2), "pages": pages,
            "errors": dict(errors)}


# ---------------------------------------------------------------------------------------------
# Phases

def setup_pair(a, A, B, tag):
    senders = register_many(A, [f"fb{tag}-a{i}" for i in range(a.senders)], a.seed_threads)
    (b0,) = register_many(B, [f"fb{tag}-b0"], 1)
    room = senders[0].must("POST", f"{CS}/createRoom", {"preset": "public_chat", "room_version": a.room_version,
                                                         "name": "federation bench"})["room_id"]
    for c in senders[1:]:
        c.must("POST", f"{CS}/join/{q(room)}", {})
    secs, status, body = join_remote(b0, room, A.server_name)
    if status != 200:
        raise SystemExit(f"B could not join A's room: {status} {body}")
    return {"senders": senders, "b0": b0, "room": room, "small_join_s": round(secs, 3)}


def throughput(a, ctx, tag):
    room, b0 = ctx["room"], ctx["b0"]
    since = initial_since(b0, room)
    marker = f"{tag}-end-of-throughput"
    cond = quiet(a)
    rx = Receiver(b0, room, since, marker, a.phase_timeout)
    rx.start()
    time.sleep(0.3)
    r = send_many(ctx["senders"], room, f"{tag}-tp", a.events)
    # One more event after all others were acknowledged: B holds everything once it shows it.
    ctx["senders"][0].must("PUT", send_path(room, f"{tag}-tp-end"), {"msgtype": "m.text", "body": marker})
    rx.join(a.phase_timeout)
    rx.halt = True
    bodies = [f"{tag}-tp {i}" for i in range(a.events)]
    seen = [rx.seen[b] for b in bodies if b in rx.seen]
    t_all = rx.seen.get(marker)
    extra = count_in_messages(b0, room, f"{tag}-tp ", a.events, 300)
    send_s = r["t1"] - r["t0"]
    return {"events": a.events, "senders": len(ctx["senders"]), "load": cond, "loadavg_after": loadavg(),
            "send_s": round(send_s, 2), "sends_per_s": round(len(r["latencies"]) / send_s, 1),
            "send_latency": stats(r["latencies"]), "send_statuses": r["statuses"],
            "seen_in_sync": len(seen), "limited_syncs": rx.limited, "syncs": rx.syncs, "sync_errors": dict(rx.errors),
            "all_visible_s": round(t_all - r["t0"], 2) if t_all else None,
            "visible_per_s": round(a.events / (t_all - r["t0"]), 1) if t_all else None,
            "last_seen_event_s": round(max(seen) - r["t0"], 2) if seen else None,
            "lag_after_last_ack_s": round(t_all - r["t1"], 2) if t_all else None,
            "in_messages_on_B": extra}


def latency(a, ctx, tag):
    room, b0, sender = ctx["room"], ctx["b0"], ctx["senders"][0].for_thread()
    since = initial_since(b0, room)
    last = f"{tag}-lat {a.latency_messages - 1}"
    cond = quiet(a)
    rx = Receiver(b0, room, since, last, a.phase_timeout)
    rx.start()
    time.sleep(0.3)
    acks, starts, statuses = {}, {}, Counter()
    for i in range(a.latency_messages):
        body = f"{tag}-lat {i}"
        t = time.monotonic()
        status, _ = sender.request("PUT", send_path(room, f"{tag}-lat-{i}"), {"msgtype": "m.text", "body": body})
        starts[body], acks[body] = t, time.monotonic()
        statuses[str(status)] += 1
        time.sleep(max(0.0, a.latency_interval - (time.monotonic() - t)))
    rx.join(a.phase_timeout)
    rx.halt = True
    sender.close()
    after_ack = [rx.seen[b] - acks[b] for b in acks if b in rx.seen]
    after_start = [rx.seen[b] - starts[b] for b in starts if b in rx.seen]
    return {"messages": a.latency_messages, "interval_s": a.latency_interval, "load": cond, "loadavg_after": loadavg(),
            "send_statuses": dict(statuses), "seen": len(after_ack), "limited_syncs": rx.limited,
            "after_ack": stats(after_ack), "after_send_start": stats(after_start),
            "negative_after_ack": sum(1 for x in after_ack if x < 0)}


def join_large(a, A, B, tag):
    out = {"members": a.members, "state_events_wanted": a.state_events}
    t = time.monotonic()
    users = register_many(A, [f"fb{tag}-m{i}" for i in range(a.members)], a.seed_threads)
    out["register_s"] = round(time.monotonic() - t, 1)
    creator = users[0]
    room = creator.must("POST", f"{CS}/createRoom", {"preset": "public_chat", "room_version": a.room_version,
                                                      "name": "large room"})["room_id"]
    initial = len(creator.must("GET", f"{CS}/rooms/{q(room)}/state"))
    custom = max(0, a.state_events - initial - (a.members - 1))
    errors = Counter()

    def run_pool(fn, items):
        local = threading.local()

        def wrapped(item):
            status = fn(local, item)
            if status != 200:
                errors[str(status)] += 1
        with ThreadPoolExecutor(max_workers=a.seed_threads) as pool:
            list(pool.map(wrapped, items))

    def put_state(local, i):
        if not hasattr(local, "c"):
            local.c = creator.for_thread()
        s, _ = local.c.request("PUT", f"{CS}/rooms/{q(room)}/state/{STATE_TYPE}/k{i:05d}", {"n": i, "pad": "x" * 40})
        return s

    t = time.monotonic()
    run_pool(put_state, range(custom))
    out["state_seed_s"] = round(time.monotonic() - t, 1)
    out["state_events_per_s"] = round(custom / max(time.monotonic() - t, 1e-9), 1)

    def join(local, c):
        return c.request("POST", f"{CS}/join/{q(room)}", {})[0]
    t = time.monotonic()
    run_pool(join, users[1:])
    out["join_seed_s"] = round(time.monotonic() - t, 1)
    out["local_joins_per_s"] = round((a.members - 1) / max(time.monotonic() - t, 1e-9), 1)
    out["seed_errors"] = dict(errors)
    for u in users:
        u.close()
    state = creator.must("GET", f"{CS}/rooms/{q(room)}/state")
    out["state_events"] = len(state)
    out["members_on_A"] = sum(1 for e in state if e["type"] == "m.room.member" and e["content"].get("membership") == "join")
    (joiner,) = register_many(B, [f"fb{tag}-bj"], 1)
    since = initial_since(joiner, "!none:x")
    out["load"] = quiet(a)
    t0 = time.monotonic()
    secs, status, body = join_remote(joiner, room, A.server_name)
    out["join_status"] = status
    out["join_request_s"] = round(secs, 3)
    if status != 200:
        out["join_error"] = str(body)[:300]
        return out
    f = {"room": {"rooms": [room], "timeline": {"limit": 1}, "state": {"lazy_load_members": True}}}
    deadline = time.monotonic() + a.phase_timeout
    while time.monotonic() < deadline:
        s, body = joiner.json("GET", sync_path(f, since, 5000))
        if s == 200:
            since = body["next_batch"]
            if room in body.get("rooms", {}).get("join", {}):
                out["join_to_sync_s"] = round(time.monotonic() - t0, 3)
                break
        else:
            time.sleep(0.2)
    # Synapse joins with partial state (faster joins) and fetches the full state afterwards: wait
    # until B lists every member, polling /joined_members (bounded).
    want, got, polls = out["members_on_A"] + 1, None, 0
    while time.monotonic() < deadline:
        t = time.monotonic()
        s, body = joiner.json("GET", f"{CS}/rooms/{q(room)}/joined_members")
        polls += 1
        got = len(body.get("joined", {})) if s == 200 and isinstance(body, dict) else f"status {s}"
        if polls == 1:
            out["first_joined_members_request_s"] = round(time.monotonic() - t, 3)
            out["first_joined_members_on_B"] = got
        if got == want:
            out["join_to_all_members_on_B_s"] = round(time.monotonic() - t0, 3)
            break
        time.sleep(0.25)
    out["joined_members_on_B"] = got
    out["loadavg_after"] = loadavg()
    joiner.close()
    return out


def catchup(a, A, B, ctx, tag):
    room, b0 = ctx["room"], ctx["b0"]
    since = initial_since(b0, room)
    out = {"events": a.catchup_events, "senders": len(ctx["senders"])}
    B.stop()
    log(f"B stopped; sending {a.catchup_events} events on A")
    r = send_many(ctx["senders"], room, f"{tag}-cu", a.catchup_events)
    marker = f"{tag}-end-of-catchup"
    ctx["senders"][0].must("PUT", send_path(room, f"{tag}-cu-marker"), {"msgtype": "m.text", "body": marker})
    out["send_s"] = round(r["t1"] - r["t0"], 1)
    out["send_statuses"] = r["statuses"]
    out["sends_per_s"] = round(len(r["latencies"]) / (r["t1"] - r["t0"]), 1)
    out["down_s"] = round(time.monotonic() - r["t0"], 1)
    time.sleep(a.catchup_pause)  # A's sender fails against B at least once and backs off
    out["load"] = quiet(a)
    t_start = time.monotonic()
    B.start()
    wait_up(B.url)
    t_up = time.monotonic()
    out["restart_to_versions_s"] = round(t_up - t_start, 2)
    rx = Receiver(b0, room, since, marker, a.catchup_timeout)
    rx.start()
    b = b0.for_thread()
    s, _ = b.request("PUT", send_path(room, f"{tag}-cu-back"), {"msgtype": "m.text", "body": f"{tag}-back"})
    out["trigger_status"] = s
    rx.join(a.catchup_timeout)
    rx.halt = True
    if marker in rx.seen:
        out["up_to_marker_in_sync_s"] = round(rx.seen[marker] - t_up, 2)
    else:
        out["up_to_marker_in_sync_s"] = None
    out["catchup_events_seen_in_sync"] = sum(1 for k in rx.seen if k.startswith(f"{tag}-cu "))
    out["limited_syncs"], out["syncs"] = rx.limited, rx.syncs
    out["history_on_B"] = count_in_messages(b, room, f"{tag}-cu ", a.catchup_events, a.catchup_timeout)
    out["loadavg_after"] = loadavg()
    b.close()
    return out


def run_pair(a, kind, base):
    made = []
    try:
        make_pair(a, kind, base, made)
    except BaseException:
        for s in made:
            s.cleanup()
        raise
    A, B = made
    tag = f"{int(time.time()) % 1000000:06d}"
    res = {"kind": kind, "describe": A.describe(), "A": A.server_name, "B": B.server_name,
           "data": os.path.dirname(A.dir), "loadavg_start": loadavg()}
    try:
        for s in (A, B):
            s.start()
        for s in (A, B):
            wait_up(s.url)
        log(f"{kind}: both up ({A.server_name}, {B.server_name})")
        t = time.monotonic()
        ctx = setup_pair(a, A, B, tag)
        res["setup_s"] = round(time.monotonic() - t, 1)
        res["small_room_remote_join_s"] = ctx["small_join_s"]
        for phase in a.phases:
            log(f"{kind}: {phase}")
            t = time.monotonic()
            if phase == "throughput":
                res[phase] = throughput(a, ctx, tag)
            elif phase == "latency":
                res[phase] = latency(a, ctx, tag)
            elif phase == "join":
                res[phase] = join_large(a, A, B, tag)
            elif phase == "catchup":
                res[phase] = catchup(a, A, B, ctx, tag)
            res[phase]["phase_s"] = round(time.monotonic() - t, 1)
            log(f"{kind}: {phase} done in {res[phase]['phase_s']} s: "
                + json.dumps({k: v for k, v in res[phase].items() if not isinstance(v, (dict, list))}))
    finally:
        for s in (A, B):
            s.cleanup()
        res["loadavg_end"] = loadavg()
    return res


def print_tables(results):
    rows = [r for r in results if "throughput" in r]
    if rows:
        print("\n| pair | events | senders on A | sends/s on A | events/s visible in B's /sync | last visible after last ack, s | seen in sync / limited | load before |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            t = r["throughput"]
            print(f"| {r['kind']} | {t['events']} | {t['senders']} | {t['sends_per_s']} | {t['visible_per_s']} "
                  f"| {t['lag_after_last_ack_s']} | {t['seen_in_sync']} / {t['limited_syncs']} | {t['load']['loadavg']} |")
    rows = [r for r in results if "latency" in r]
    if rows:
        print("\n| pair | messages | after the 200 on A: p50 / p95 / p99 ms | after the send started: p50 / p95 ms | seen | load before |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            t = r["latency"]
            print(f"| {r['kind']} | {t['messages']} | {t['after_ack']['p50_ms']} / {t['after_ack']['p95_ms']} / "
                  f"{t['after_ack']['p99_ms']} | {t['after_send_start']['p50_ms']} / {t['after_send_start']['p95_ms']} "
                  f"| {t['seen']} | {t['load']['loadavg']} |")
    rows = [r for r in results if "join" in r]
    if rows:
        print("\n| pair | members | state events | POST /join on B, s | until in B's /sync, s | members listed on B (until all, s) | seeding on A: state/s, joins/s | load before |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            t = r["join"]
            print(f"| {r['kind']} | {t.get('members_on_A')} | {t.get('state_events')} | {t.get('join_request_s')} "
                  f"| {t.get('join_to_sync_s')} | {t.get('joined_members_on_B')} after {t.get('join_to_all_members_on_B_s')} s | {t.get('state_events_per_s')}, "
                  f"{t.get('local_joins_per_s')} | {t.get('load', {}).get('loadavg')} |")
    rows = [r for r in results if "catchup" in r]
    if rows:
        print("\n| pair | events while B was down | B up → last event in B's /sync, s | of them in B's /messages (paging time, s) | B down for, s | load before |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            t = r["catchup"]
            h = t["history_on_B"]
            print(f"| {r['kind']} | {t['events']} | {t['up_to_marker_in_sync_s']} | {h['found']} ({h['seconds']}) "
                  f"| {t['down_s']} | {t['load']['loadavg']} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default="poststelle,synapse")
    p.add_argument("--phases", default="throughput,latency,join,catchup")
    p.add_argument("--scratch", required=True, help="directory for the servers' data (outside the repository)")
    p.add_argument("--poststelle-bin", default=os.path.join(ROOT, "target/release/poststelle"))
    p.add_argument("--synapse-python", default=os.path.join(ROOT, ".test-clients/synapse/bin/python"))
    p.add_argument("--synapse-db", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--base-port", type=int, default=18600, help="A client, A federation, B client, B federation; "
                   "Synapse's PostgreSQL at +10, +11")
    p.add_argument("--room-version", default="11")
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--latency-messages", type=int, default=100)
    p.add_argument("--latency-interval", type=float, default=0.2)
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--state-events", type=int, default=10000)
    p.add_argument("--seed-threads", type=int, default=8)
    p.add_argument("--catchup-events", type=int, default=10000)
    p.add_argument("--catchup-pause", type=float, default=5.0, help="s between the last send and B's restart")
    p.add_argument("--catchup-timeout", type=float, default=900.0)
    p.add_argument("--phase-timeout", type=float, default=600.0)
    p.add_argument("--max-load", type=float, default=2.5)
    p.add_argument("--load-wait", type=float, default=120.0)
    p.add_argument("--label", default="")
    a = p.parse_args()
    a.phases = [x for x in a.phases.split(",") if x]
    if unknown := set(a.phases) - {"throughput", "latency", "join", "catchup"}:
        raise SystemExit(f"unknown phases: {unknown}")
    a.scratch = os.path.abspath(a.scratch)
    os.makedirs(a.scratch, exist_ok=True)
    if a.scratch.startswith(ROOT + "/"):
        raise SystemExit("--scratch must be outside the repository")
    results = []
    for kind in [x for x in a.pairs.split(",") if x]:
        results.append(run_pair(a, kind, a.base_port))
        # Each pair's result as soon as it is there, on stderr, in case a later pair is cut short.
        print(f"# {kind} result: " + json.dumps(results[-1], default=str), file=sys.stderr, flush=True)
    out = {"label": a.label, "params": vars(a), "results": results}
    print(json.dumps(out, indent=1, default=str))
    print_tables(results)


if __name__ == "__main__":
    main()
