#!/usr/bin/env bash
# Installs Synapse (PyPI) with its own throwaway PostgreSQL cluster, for side-by-side benchmarks.
#
#   bench/synapse/setup.sh DIR        DIR: a scratch directory OUTSIDE the repository
#
# Environment (all optional): SYNAPSE_PORT (18490), PG_PORT (55490), BCRYPT_ROUNDS (12, Synapse's
# default), SHARED_SECRET (bench-secret), SYNAPSE_VERSION (pip spec suffix, e.g. "==1.163.2"),
# PG_BIN (directory with initdb/pg_ctl/postgres/psql; default: found on PATH or /usr/lib/postgresql).
#
# Leaves PostgreSQL running (127.0.0.1:PG_PORT only; started as `postgres` when run as root) and
# writes DIR/start.sh (runs Synapse in the foreground on 127.0.0.1:SYNAPSE_PORT, records its PID
# in DIR/synapse.pid) and DIR/bench-info.json (versions, URL, password hash cost).
# Stop everything with bench/synapse/teardown.sh DIR.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir="$(mkdir -p "$1" && cd "$1" && pwd)"
port="${SYNAPSE_PORT:-18490}" pgport="${PG_PORT:-55490}" rounds="${BCRYPT_ROUNDS:-12}"
secret="${SHARED_SECRET:-bench-secret}"
pgbin="${PG_BIN:-$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")}"

[ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse[postgres]${SYNAPSE_VERSION:-}" pyyaml

# PostgreSQL refuses to run as root: run it as the postgres user then.
asuser=()
if [ "$(id -u)" = 0 ]; then asuser=(runuser -u postgres --); fi
if [ ! -d "$dir/pg/data" ]; then
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/pg"; fi
  "${asuser[@]}" "$pgbin/initdb" -D "$dir/pg/data" -U postgres --auth=trust --locale=C --encoding=UTF8 >/dev/null
fi
if ! "${asuser[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" status >/dev/null; then
  "${asuser[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $dir/pg" start >/dev/null
fi
psql=("$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -qtA)
"${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='synapse'" | grep -q 1 \
  || "${psql[@]}" -c "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"

if [ ! -f "$dir/homeserver.yaml" ]; then
  (cd "$dir" && venv/bin/python -m synapse.app.homeserver --server-name localhost \
     --config-path homeserver.yaml --data-directory . --generate-config --report-stats=no >/dev/null)
fi
# (Re)apply the overrides every time, so changed environment values take effect.
"$dir/venv/bin/python" - "$dir/homeserver.yaml" "$port" "$pgport" "$rounds" "$secret" <<'PY'
import sys, yaml
path, port, pgport, rounds, secret = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
c = yaml.safe_load(open(path))
high = {"per_second": 10000, "burst_count": 10000}
c.update({
    "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                   "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
    # cp_min/cp_max as in Synapse's documented PostgreSQL example.
    "database": {"name": "psycopg2", "args": {"user": "postgres", "host": "127.0.0.1", "port": pgport,
                                               "database": "synapse", "cp_min": 5, "cp_max": 10}},
    "bcrypt_rounds": rounds,
    "registration_shared_secret": secret,
    "trusted_key_servers": [], "suppress_key_server_warning": True, "report_stats": False,
    "rc_login": {"address": high, "account": high, "failed_attempts": high},
    "rc_registration": high, "rc_message": high,
    # For bench/messages.py: users join rooms and create many rooms in a short time.
    "rc_joins": {"local": high, "remote": high}, "rc_joins_per_room": high, "rc_room_creation": high,
    "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
})
yaml.safe_dump(c, open(path, "w"))
PY

cat > "$dir/start.sh" <<SH
#!/usr/bin/env bash
# Runs Synapse in the foreground; its PID (this shell's, kept through exec) goes to synapse.pid.
cd "$dir" && echo \$\$ > synapse.pid && exec venv/bin/python -m synapse.app.homeserver -c homeserver.yaml
SH
chmod +x "$dir/start.sh"

version="$("$dir/venv/bin/python" -c 'import synapse; print(synapse.__version__)')"
pgversion="$("$pgbin/postgres" --version)"
cat > "$dir/bench-info.json" <<JSON
{"server": "synapse", "version": "$version", "url": "http://127.0.0.1:$port",
 "password_hash": "bcrypt", "bcrypt_rounds": $rounds, "shared_secret": "$secret",
 "database": "$pgversion on 127.0.0.1:$pgport", "db_pid_file": "$dir/pg/data/postmaster.pid",
 "python": "$("$dir/venv/bin/python" -V)"}
JSON
echo "Synapse $version in $dir: start with $dir/start.sh (http://127.0.0.1:$port), bcrypt_rounds=$rounds"
