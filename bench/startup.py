#!/usr/bin/env python3
"""Start-up time and idle memory of a Matrix homeserver (stdlib only, Linux /proc).

Each run starts --cmd (through /bin/sh, in its own process group), polls
GET <url>/_matrix/client/versions every 10 ms until it answers 200 (the start-up time), waits
--idle seconds, reads the memory of the process tree from /proc, then sends SIGTERM to the process
group and waits until none of its processes is left (SIGKILL after --stop-timeout). The first run
(--first 1) may create the data directory and is reported apart from the --runs warm runs.

Memory, in MiB, each as the sum of VmRSS (resident) and of Pss (shared pages split between the
processes sharing them, so PostgreSQL's shared buffers are not counted once per backend):
  server     the server process alone: the first process below the start command that is not a
             wrapper (sh, bash, env, runuser, ...)
  tree       the server and all its descendants, e.g. a PostgreSQL it runs itself
  db         with --db-pid-file: the process tree of an external database (e.g. the PostgreSQL
             next to Synapse), whose PID is the file's first line; tree+db is then the total.
The processes counted are listed in the JSON output.

  python3 bench/startup.py --label synapse --cmd 'DIR/start.sh' --url http://127.0.0.1:18490 \
      --db-pid-file DIR/pg/data/postmaster.pid
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request

from _common import loadavg, measure, server_pid, tree

def group_alive(pgid):
    """Live (non-zombie) members of process group pgid. Orphaned zombies are reaped by init, late."""
    alive = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def versions_ok(url):
    try:
        with urllib.request.urlopen(f"{url}/_matrix/client/versions", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def one_run(a):
    if versions_ok(a.url):
        raise SystemExit(f"something already answers on {a.url}; stop it first")
    load = loadavg()
    start = time.monotonic()
    proc = subprocess.Popen(a.cmd, shell=True, start_new_session=True,
                            stdout=subprocess.DEVNULL if not a.log else open(a.log, "ab"), stderr=subprocess.STDOUT)
    ready = None
    while time.monotonic() - start < a.timeout and proc.poll() is None:
        if versions_ok(a.url):
            ready = round(time.monotonic() - start, 3)
            break
        time.sleep(0.01)
    result = {"ready_s": ready, "loadavg_before": load}
    if ready is not None:
        time.sleep(a.idle)
        pids, children = tree(proc.pid)
        server = server_pid(proc.pid, children)
        result["server"] = measure([server])
        result["tree"] = measure(tree(server)[0])
        if a.db_pid_file:
            with open(a.db_pid_file) as f:
                result["db"] = measure(tree(int(f.readline()))[0])
    # Stop: SIGTERM to the process group (its PGID is the leader's PID), then wait until no live
    # (non-zombie) process is left in it; SIGKILL after --stop-timeout.
    stopped = time.monotonic()
    signal_group(proc.pid, signal.SIGTERM)
    while group_alive(proc.pid) and time.monotonic() - stopped < a.stop_timeout:
        time.sleep(0.05)
    if group_alive(proc.pid):
        signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    result["stop_s"] = round(time.monotonic() - stopped, 2)
    if ready is None:
        raise SystemExit(f"no 200 from {a.url}/_matrix/client/versions within {a.timeout} s "
                         f"(exit code {proc.returncode}); see --log")
    return result


def stats(values):
    values = [v for v in values if v is not None]
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)} if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cmd", required=True, help="shell command that starts the server in the foreground")
    p.add_argument("--url", required=True, help="base URL of the client API, e.g. http://127.0.0.1:8008")
    p.add_argument("--label", default="server")
    p.add_argument("--runs", type=int, default=5, help="warm runs (default 5)")
    p.add_argument("--first", type=int, default=1, help="runs before them, reported separately (default 1)")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading memory (default 3)")
    p.add_argument("--timeout", type=float, default=120.0, help="max seconds to wait for the first 200")
    p.add_argument("--stop-timeout", type=float, default=30.0, help="seconds after SIGTERM before SIGKILL")
    p.add_argument("--db-pid-file", help="PID file of an external database to count as well")
    p.add_argument("--log", help="append the server's stdout/stderr to this file (default: discarded)")
    a = p.parse_args()

    first = [one_run(a) for _ in range(a.first)]
    warm = [one_run(a) for _ in range(a.runs)]
    summary = {"ready_s": stats(r["ready_s"] for r in warm)}
    for part in ("server", "tree", "db"):
        for unit in ("rss_mib", "pss_mib"):
            if part in warm[0]:
                summary[f"{part}_{unit}"] = stats(r[part][unit] for r in warm)
    print(json.dumps({"label": a.label, "cmd": a.cmd, "url": a.url, "idle_s": a.idle, "first_runs": first,
                      "warm_runs": warm, "warm_summary": summary, "loadavg_after": loadavg()}, indent=1))

    def cell(key):
        s = summary.get(key)
        return f"{s['median']} ({s['min']}–{s['max']})" if s else "–"

    print("\n| server | warm runs | first 200 on /versions, s: median (min–max) | first run, s "
          "| RSS server, MiB | RSS server+children, MiB | RSS external db, MiB | PSS server+children(+db), MiB | loadavg before runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    pss_total = [r["tree"]["pss_mib"] + (r["db"]["pss_mib"] if "db" in r else 0) for r in warm]
    print(f"| {a.label} | {len(warm)} | {cell('ready_s')} | {', '.join(str(r['ready_s']) for r in first) or '–'} "
          f"| {cell('server_rss_mib')} | {cell('tree_rss_mib')} | {cell('db_rss_mib')} "
          f"| {round(statistics.median(pss_total), 1)} | {' / '.join(r['loadavg_before'] for r in warm)} |")


if __name__ == "__main__":
    main()
