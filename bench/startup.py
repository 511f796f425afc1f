"""Start-up time and idle memory of a homeserver.

Starts the command in its own process group, polls GET <url>/_matrix/client/versions every
10 ms until it answers 200, waits 3 s, sums the resident memory of the process tree (the
server alone, and with child processes such as a managed PostgreSQL), then stops the group
with SIGTERM. Repeats --runs times; the first run may initialise a data directory, so it is
reported separately.

  python3 bench/startup.py --cmd 'poststelle serve' --url http://127.0.0.1:8008 --runs 6
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except OSError:
                continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def one_run(cmd, url, idle):
    start = time.monotonic()
    proc = subprocess.Popen(cmd, shell=True, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = None
    deadline = start + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_matrix/client/versions", timeout=1) as r:
                if r.status == 200:
                    ready = time.monotonic() - start
                    break
        except OSError:
            pass
        time.sleep(0.01)
    time.sleep(idle)
    tree = descendants(proc.pid)
    # The shell wrapper (if any) is not the server: count the first non-shell process.
    server = [p for p in tree if rss_kib(p) > 0]
    total = sum(rss_kib(p) for p in tree)
    main = max((rss_kib(p) for p in server), default=0)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)
    return {"ready_s": ready, "rss_largest_process_mib": main / 1024, "rss_tree_mib": total / 1024}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cmd", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--idle", type=float, default=3.0)
    a = p.parse_args()
    runs = [one_run(a.cmd, a.url, a.idle) for _ in range(a.runs)]
    warm = runs[1:] or runs
    summary = {k: statistics.median(r[k] for r in warm if r[k] is not None) for k in runs[0]}
    print(json.dumps({"first_run": runs[0], "warm_median": summary, "warm_runs": warm,
                      "loadavg": open("/proc/loadavg").read().split()[:3]}, indent=1))


if __name__ == "__main__":
    main()
