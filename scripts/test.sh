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

cargo test --all-targets --locked
