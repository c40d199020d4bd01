#!/usr/bin/env bash
# Install and start what the test suite needs from Debian: PostgreSQL, Chromium, and
# iproute2 (the fault tests build a network of namespaces with `ip`).
# Idempotent; run by `make test`. Needs root (CI runs as root) or sudo.
set -euo pipefail

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "test-services: need root or sudo to run: $*" >&2; return 1; fi; }

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-services: installing ${missing[*]} from Debian"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL: start the distribution's cluster, then make the test role and database.
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_lsclusters -h | grep -q . || sudo_ pg_createcluster "$version" main
  sudo_ pg_ctlcluster "$version" main start
fi
psql_() { sudo_ su postgres -c "psql -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
[ "$(psql_ "SELECT 1 FROM pg_roles WHERE rolname='ganglion'")" = 1 ] ||
  psql_ "CREATE ROLE ganglion LOGIN PASSWORD 'ganglion' CREATEDB"
[ "$(psql_ "SELECT 1 FROM pg_database WHERE datname='ganglion_test'")" = 1 ] ||
  psql_ "CREATE DATABASE ganglion_test OWNER ganglion"
echo "test-services: postgresql $version online; chromium at /usr/bin/chromium"
