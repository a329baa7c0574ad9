#!/usr/bin/env bash
# Runs Roster's whole test suite: unit tests and the integration tests over
# real HTTP. SQLite by default; set DATABASE_URL=postgres://… to run every
# store and API test against that PostgreSQL server (each test creates and
# drops a database of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${DATABASE_URL:-}" == postgres* ]]; then
  echo "== tests on PostgreSQL (${DATABASE_URL%%\?*})"
else
  echo "== tests on SQLite"
fi
# The OpenID provider the SSO tests run (tests/oidc-provider), as locked.
echo "== npm ci (tests/oidc-provider)"
(cd tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error)
# The OpenAPI document's validator (tests/openapi), as pinned.
echo "== pip install (tests/openapi)"
if [[ ! -x tests/openapi/.venv/bin/openapi-spec-validator ]]; then
  python3 -m venv tests/openapi/.venv
fi
tests/openapi/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt
# The SMTP server the mail tests send to (tests/smtp), as pinned.
echo "== pip install (tests/smtp)"
if [[ ! -x tests/smtp/.venv/bin/python ]]; then
  python3 -m venv tests/smtp/.venv
fi
tests/smtp/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/smtp/requirements.txt

# Debian packages: Chromium and its WebDriver for the browser tests
# (tests/api/browser.rs), nginx for the proxy in front of the replicas in
# the topology test (tests/api/topology.rs).
chromium="${CHROMIUM:-/usr/bin/chromium}"
chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"
packages=()
if [[ ! -x "$chromium" || ! -x "$chromedriver" ]]; then
  packages+=(chromium chromium-driver)
fi
if [[ ! -x /usr/sbin/nginx ]]; then
  packages+=(nginx)
fi
if [[ ${#packages[@]} -gt 0 ]]; then
  echo "== apt-get install ${packages[*]}"
  as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "scripts/test.sh: the tests need ${packages[*]}; run as root or install sudo" >&2
      exit 1
    fi
    as_root=(sudo -n)
  fi
  apt_log=$(mktemp)
  install_packages() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${packages[@]}" >>"$apt_log" 2>&1
  }
  # The package lists may be missing or stale: update them only when the install fails.
  if ! install_packages && ! { "${as_root[@]}" apt-get update -q >>"$apt_log" 2>&1 && install_packages; }; then
    cat "$apt_log" >&2
    echo "scripts/test.sh: installing ${packages[*]} failed (apt-get output above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
  if [[ ! -x "$chromium" || ! -x "$chromedriver" || ! -x /usr/sbin/nginx ]]; then
    echo "scripts/test.sh: no $chromium, $chromedriver or /usr/sbin/nginx after installing ${packages[*]}" >&2
    exit 1
  fi
fi

cargo test --all-targets --locked
