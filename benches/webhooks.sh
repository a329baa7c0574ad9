#!/usr/bin/env bash
# Webhook delivery lag as a user runs Roster: the default configuration
# (SQLite, background jobs on), on a fresh database in a directory of its
# own, an endpoint for `member.added` pointing at the receiver that
# `roster bench webhooks` runs, and SCIM creates sent at a steady rate.
# Lag is from each event's time (taken in its transaction, just before the
# commit) to the webhook's arrival at the receiver.
#
#   benches/webhooks.sh [RATE] [SECONDS]      (defaults: 1000, 10)
#
# The receiver is on loopback, so the server runs with
# webhook_allow_private_addresses and sso_dev_mode (http://); neither
# changes how events are delivered. NO_WEBHOOKS=1 runs the same creates
# with no endpoint (their cost without delivery). Set ROSTER to another
# binary (default: target/release/roster, built first), PORT /
# RECEIVER_PORT for other ports.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}
SECONDS_=${2:-10}
PORT=${PORT:-18080}
RECEIVER_PORT=${RECEIVER_PORT:-18081}
export ROSTER_WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true ROSTER_SSO_DEV_MODE=true
source benches/lib.sh
bench_org "$(python3 -c "print(int($RATE * $SECONDS_) + 10)")"
if [[ -z "${NO_WEBHOOKS:-}" ]]; then
  "$ROSTER" webhook add --org "$ORG" --url "http://127.0.0.1:$RECEIVER_PORT/hooks" --events member.added --json > /dev/null
fi
bench_serve
echo "# $(date -u +%FT%TZ) $(nproc) cores; $RATE creates/s for $SECONDS_ s; fresh SQLite database;" \
  "background jobs on; ${NO_WEBHOOKS:+no }webhook endpoint"
"$ROSTER" bench webhooks --url "http://127.0.0.1:$PORT/scim/v2" --token "$TOKEN" --rate "$RATE" \
  --seconds "$SECONDS_" --listen "127.0.0.1:$RECEIVER_PORT" ${NO_WEBHOOKS:+--no-webhooks}
grep -E 'VmHWM' "/proc/$SERVER/status" | tr -s ' \t' ' '
