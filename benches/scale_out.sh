#!/usr/bin/env bash
# SCIM load on PostgreSQL through a load balancer, with one replica or more:
# a fresh database on the local PostgreSQL, REPLICAS `roster serve`
# processes in their default configuration (background jobs on; they share
# the jobs through database leases), nginx in front (round robin, keep-alive
# connections), and `roster bench scim` against nginx. Reports each phase's
# throughput and latency, then the CPU seconds PostgreSQL, the replicas and
# nginx spent over the whole run, so that an operator can see what bounds it.
#
#   benches/scale_out.sh [REPLICAS] [USERS] [CONCURRENCY]   (defaults: 1, 20000, 16)
#
# EXISTING=N first gives the organization N more Users, written straight
# into the database as a bulk import would (copies of one User created over
# SCIM, with the organization's counters raised to match), so that the run
# measures an organization of N + USERS Users without creating N over
# HTTP; list pages then start anywhere among all of them. VACUUM=1 then
# runs VACUUM (ANALYZE), as autovacuum would have.
#
# Needs nginx (Debian's `nginx` or `nginx-light`) and PostgreSQL at
# PG_URL (default postgres://postgres@127.0.0.1:5432/test, whose server
# must let it create a database). ROSTER picks another binary (default:
# target/release/roster, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=${1:-1}
USERS=${2:-20000}
CONCURRENCY=${3:-16}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-18080}
if [[ -z "${ROSTER:-}" ]]; then
  cargo build --release --locked --quiet
  ROSTER=$PWD/target/release/roster
fi
command -v nginx > /dev/null || { echo "benches/scale_out.sh needs nginx" >&2; exit 1; }
DIR=$(mktemp -d)
DB="roster_bench_$(date +%s)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" > /dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
psql "$PG_URL" -qc "CREATE DATABASE $DB" > /dev/null
export ROSTER_DATABASE_URL="${PG_URL%/*}/$DB" ROSTER_MAIL_DIR="$DIR/mail" RUST_LOG=${RUST_LOG:-warn}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
"$ROSTER" migrate > /dev/null
ORG=$("$ROSTER" org create --name Bench --seats $((USERS + ${EXISTING:-0} + 10)) --owner-email owner@bench.example --json \
  | field '["organization"]["id"]')
TOKEN=$("$ROSTER" scim-token create --org "$ORG" --name bench --json | field '["secret"]')

UPSTREAMS=""
for i in $(seq "$REPLICAS"); do
  ROSTER_LISTEN=127.0.0.1:$((PORT + i)) "$ROSTER" serve > "$DIR/serve-$i.log" 2>&1 &
  PIDS+=($!)
  UPSTREAMS+="server 127.0.0.1:$((PORT + i));"
done
mkdir -p "$DIR/nginx/logs"
cat > "$DIR/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $DIR/nginx/logs/error.log warn;
pid $DIR/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR/nginx; proxy_temp_path $DIR/nginx;
  fastcgi_temp_path $DIR/nginx; uwsgi_temp_path $DIR/nginx; scgi_temp_path $DIR/nginx;
  client_max_body_size 2m;
  upstream roster { $UPSTREAMS keepalive 64; }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://roster;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for i in $(seq "$REPLICAS"); do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((PORT + i))/readyz" > /dev/null && break
    sleep 0.1
  done
done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 0.1; done

EXISTING=${EXISTING:-0}
if (( EXISTING > 0 )); then
  started=$(date +%s)
  template=$(curl -sf -X POST "http://127.0.0.1:$PORT/scim/v2/Users" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/scim+json' -d '{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
      "userName": "seed-template@bench.example", "name": {"givenName": "Seed", "familyName": "Template"},
      "emails": [{"value": "seed-template@bench.example", "type": "work", "primary": true}], "active": true}' \
    | field '["id"]')
  # Each copy gets ids of its own (md5 of a label, read as a UUID) and the
  # template's userName and email swapped for its own, in the stored
  # resource too.
  psql "$ROSTER_DATABASE_URL" -v ON_ERROR_STOP=1 -q <<SQL
BEGIN;
-- Rows consistent by construction, loaded as pg_restore loads them: without
-- a foreign-key check per row (needs a superuser, as the local server's
-- postgres is).
SET LOCAL session_replication_role = replica;
CREATE TEMPORARY TABLE seed AS
  SELECT i, md5('u' || i)::uuid::text AS user_id, md5('m' || i)::uuid::text AS member_id,
         md5('s' || i)::uuid::text AS scim_id, 'seed-' || i || '@bench.example' AS name
  FROM generate_series(1, $EXISTING) AS i;
-- The template's rows, read once: a plan that read them from the tables
-- being filled would scan the rows it had just inserted, for every copy.
CREATE TEMPORARY TABLE template AS
  SELECT s.org_id, s.display_name, s.display_name_lc, s.active, s.resource::text AS resource, m.role,
         m.status, m.source, m.manual_role, m.role_pinned, m.sso_roles, m.role_source
  FROM scim_users s JOIN members m ON m.id = s.member_id WHERE s.id = '$template';
INSERT INTO users (id, email, email_normalized, created_at)
  SELECT user_id, name, name, now() FROM seed;
INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at, manual_role,
                     role_pinned, sso_roles, role_source)
  SELECT seed.member_id, t.org_id, seed.user_id, t.role, t.status, t.source, now(), now(), t.manual_role,
         t.role_pinned, t.sso_roles, t.role_source
  FROM seed, template t;
INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, external_id, display_name,
                        display_name_lc, active, resource, version, created_at, updated_at)
  SELECT seed.scim_id, t.org_id, seed.member_id, seed.name, seed.name, NULL, t.display_name,
         t.display_name_lc, t.active,
         replace(replace(t.resource, '$template', seed.scim_id), 'seed-template@bench.example', seed.name)::jsonb,
         1, now(), now()
  FROM seed, template t;
INSERT INTO scim_user_emails (user_id, org_id, value_lc) SELECT scim_id, '$ORG', name FROM seed;
UPDATE organizations SET scim_users = scim_users + $EXISTING, active_members = active_members + $EXISTING
  WHERE id = '$ORG';
COMMIT;
SQL
  echo "# seeded $EXISTING Users in $(( $(date +%s) - started )) s"
fi
# VACUUM=1: what autovacuum would have done by then (statistics, and the
# visibility map that lets an index-only scan skip the table).
if [[ -n "${VACUUM:-}" ]]; then
  started=$(date +%s)
  psql "$ROSTER_DATABASE_URL" -qc "VACUUM (ANALYZE)"
  echo "# VACUUM (ANALYZE) in $(( $(date +%s) - started )) s"
fi

# CPU seconds (user + system): of every process named $1 when $1 is not a
# number, else of the processes whose ids are given.
cpu_of() {
  python3 - "$@" <<'PY'
import os, sys
args = sys.argv[1:]
total = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        continue
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    if (pid in args) if args[0].isdigit() else name.startswith(args[0]):
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
print(total / os.sysconf("SC_CLK_TCK"))
PY
}
SERVERS=("${PIDS[@]:0:$REPLICAS}")
before=("$(cpu_of postgres)" "$(cpu_of "${SERVERS[@]}")" "$(cpu_of nginx)")
echo "# $(date -u +%FT%TZ) $(nproc) cores; PostgreSQL $(psql "$PG_URL" -Atc 'SHOW server_version'); $REPLICAS replica(s)" \
  "behind nginx; $USERS users created over $EXISTING existing, concurrency $CONCURRENCY; fresh database;" \
  "background jobs on"
START=$(date +%s.%N)
"$ROSTER" bench scim --url "http://127.0.0.1:$PORT/scim/v2" --token "$TOKEN" --users "$USERS" \
  --concurrency "$CONCURRENCY" --existing "$EXISTING" ${READS:+--reads "$READS"}
END=$(date +%s.%N)
after=("$(cpu_of postgres)" "$(cpu_of "${SERVERS[@]}")" "$(cpu_of nginx)")
python3 - "$START" "$END" "${before[@]}" "${after[@]}" <<'PY'
import sys
start, end, *cpu = map(float, sys.argv[1:])
wall = end - start
for name, b, a in zip(["PostgreSQL", "roster replicas", "nginx"], cpu[:3], cpu[3:]):
    print(f"{name:16} {a - b:8.1f} CPU s over {wall:.1f} s ({(a - b) / wall:.2f} cores)")
PY
