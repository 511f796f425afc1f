"""Code shared by the benchmark tools (stdlib only, Linux /proc)."""
import http.client
import math
import os
import time
import urllib.parse

from register import call

WRAPPERS = {"sh", "bash", "dash", "zsh", "env", "runuser", "su", "sudo", "setsid", "nice", "timeout", "taskset"}


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def connect(url, timeout=60):
    """A new keep-alive connection to the server at url."""
    u = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    return cls(u.hostname, u.port, timeout=timeout)


def wait_for_server(url, wait):
    """Waits up to wait seconds for a 200 on /versions (the server may still be starting)."""
    for _ in range(int(wait * 10)):
        try:
            if call(f"{url}/_matrix/client/versions")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"no 200 from {url}/_matrix/client/versions within {wait} s")


def percentile_ms(sorted_seconds, q):
    """The q-quantile (nearest rank) of a sorted list of seconds, in ms; None if empty."""
    if not sorted_seconds:
        return None
    return round(sorted_seconds[max(math.ceil(q * len(sorted_seconds)) - 1, 0)] * 1000, 1)


def proc_info(pid):
    """(comm, ppid, rss_kib, pss_kib) or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        rss = pss = 0
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss = next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
        except OSError:
            pass
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    return comm, int(stat[stat.rindex(")") + 2:].split()[1]), rss, pss


def tree(root):
    """PIDs of root and all its descendants, root first; and the map parent → children."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := proc_info(int(entry))):
            children.setdefault(info[1], []).append(int(entry))
    out, todo = [], [root]
    while todo and len(out) < 10000:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out, children


def measure(pids):
    """Summed VmRSS and Pss of pids, in MiB, with the processes counted."""
    rows = [(pid, *info) for pid in pids if (info := proc_info(pid))]
    return {"rss_mib": round(sum(r[3] for r in rows) / 1024, 1), "pss_mib": round(sum(r[4] for r in rows) / 1024, 1),
            "processes": [f"{pid} {comm} rss={rss // 1024}M" for pid, comm, _, rss, _ in rows]}


def server_pid(leader, children):
    """Skip wrapper processes (the shell running --cmd, runuser, ...) that have a single child."""
    pid = leader
    for _ in range(20):
        info, kids = proc_info(pid), children.get(pid, [])
        if not info or info[0] not in WRAPPERS or len(kids) != 1:
            break
        pid = kids[0]
    return pid
