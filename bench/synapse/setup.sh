#!/usr/bin/env bash
# Sets up Synapse (PyPI) on its own throwaway PostgreSQL for side-by-side benchmarks.
#   bench/synapse/setup.sh DIR          installs into DIR (outside the repository)
# Then: DIR/start.sh runs Synapse on 127.0.0.1:18448 (client API, plain HTTP); DIR/stop-pg.sh
# stops its PostgreSQL. Registration shared secret: "bench-secret".
set -euo pipefail
dir="$(mkdir -p "$1" && cd "$1" && pwd)"
pgbin="$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")")"
pgport=55499

[ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse[postgres]" pyyaml

asuser=()
if [ "$(id -u)" = 0 ]; then asuser=(runuser -u postgres --); fi
if [ ! -d "$dir/pg/data" ]; then
  mkdir -p "$dir/pg"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/pg"
  "${asuser[@]}" "$pgbin/initdb" -D "$dir/pg/data" -U postgres --auth=trust --locale=C --encoding=UTF8 >/dev/null
fi
"${asuser[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pgport -k $dir/pg" start >/dev/null
psql -h 127.0.0.1 -p $pgport -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='synapse'" | grep -q 1 \
  || psql -q -h 127.0.0.1 -p $pgport -U postgres -c "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"

if [ ! -f "$dir/homeserver.yaml" ]; then
  (cd "$dir" && venv/bin/python -m synapse.app.homeserver --server-name localhost \
     --config-path homeserver.yaml --data-directory . --generate-config --report-stats=no >/dev/null)
  "$dir/venv/bin/python" - "$dir/homeserver.yaml" "$pgport" <<'PY'
import sys, yaml
path, port = sys.argv[1], int(sys.argv[2])
c = yaml.safe_load(open(path))
unlimited = {"per_second": 10000, "burst_count": 10000}
c.update({
    "listeners": [{"port": 18448, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                   "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
    "database": {"name": "psycopg2", "args": {"user": "postgres", "host": "127.0.0.1", "port": port,
                                               "database": "synapse", "cp_min": 1, "cp_max": 5}},
    "registration_shared_secret": "bench-secret",
    "trusted_key_servers": [], "suppress_key_server_warning": True, "report_stats": False,
    "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
    "rc_registration": unlimited, "rc_message": unlimited,
})
yaml.safe_dump(c, open(path, "w"))
PY
fi
cat > "$dir/start.sh" <<SH
#!/usr/bin/env bash
cd "$dir" && exec venv/bin/python -m synapse.app.homeserver -c homeserver.yaml
SH
cat > "$dir/stop-pg.sh" <<SH
#!/usr/bin/env bash
${asuser[*]} "$pgbin/pg_ctl" -D "$dir/pg/data" stop -m fast
SH
chmod +x "$dir/start.sh" "$dir/stop-pg.sh"
echo "Synapse $("$dir/venv/bin/python" -c 'import synapse; print(synapse.__version__)') ready in $dir"
