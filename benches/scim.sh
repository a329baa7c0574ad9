#!/usr/bin/env bash
# SCIM load against `roster serve` as a user runs it: the default
# configuration (SQLite, background jobs on), on a fresh database in a
# directory of its own, with `roster bench scim` beside it reporting each
# phase's throughput, latency and the server's CPU time per request.
#
#   benches/scim.sh [USERS] [CONCURRENCY]      (defaults: 2000, 16)
#
# Set ROSTER to another server binary (default: target/release/roster,
# built first), LOAD to another load tool (default: ROSTER), PORT to another port (default 18080), READS to the number of
# look-ups and GETs (default: USERS). Extra ROSTER_* variables reach the
# server, e.g. ROSTER_BACKGROUND_JOBS=false.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-2000}
CONCURRENCY=${2:-16}
PORT=${PORT:-18080}
source benches/lib.sh
bench_org $((USERS + 10))
bench_serve
echo "# $(date -u +%FT%TZ) $(nproc) cores; $USERS users, concurrency $CONCURRENCY; fresh SQLite database;" \
  "background jobs ${ROSTER_BACKGROUND_JOBS:-true}"
"${LOAD:-$ROSTER}" bench scim --url "http://127.0.0.1:$PORT/scim/v2" --token "$TOKEN" --users "$USERS" \
  --concurrency "$CONCURRENCY" ${READS:+--reads "$READS"} --server-pid "$SERVER"
grep -E 'VmHWM|VmRSS' "/proc/$SERVER/status" | tr -s ' \t' ' '
