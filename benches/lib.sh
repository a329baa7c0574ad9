# Shared by the benchmark scripts, sourced from the repository's root with
# PORT set: a release build unless ROSTER names a binary, a fresh
# directory of its own, one organization with a SCIM token, and
# `roster serve` in its default configuration on 127.0.0.1:$PORT.

# bench_org SEATS — sets ROSTER, DIR (removed on exit, with the server
# stopped), ORG and TOKEN, and leaves the shell in DIR.
bench_org() {
  if [[ -z "${ROSTER:-}" ]]; then
    cargo build --release --locked --quiet
    ROSTER=$PWD/target/release/roster
  fi
  DIR=$(mktemp -d)
  trap 'kill "${SERVER:-}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
  cd "$DIR"
  export ROSTER_LISTEN=127.0.0.1:$PORT
  ORG=$("$ROSTER" org create --name Bench --seats "$1" --owner-email owner@bench.example --json \
    | json_field '["organization"]["id"]')
  TOKEN=$("$ROSTER" scim-token create --org "$ORG" --name bench --json | json_field '["secret"]')
}

# bench_serve — starts `roster serve` (log in serve.log), sets SERVER to
# its pid and waits until it answers /healthz.
bench_serve() {
  RUST_LOG=${RUST_LOG:-warn} "$ROSTER" serve > serve.log 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && return
    sleep 0.1
  done
  echo "roster serve did not answer on port $PORT; serve.log:" >&2
  cat serve.log >&2
  return 1
}

json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
