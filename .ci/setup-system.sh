#!/usr/bin/env bash
# System packages the test suite needs beyond python3: a PostgreSQL server binary for the
# optimizer's shared-storage test (started by the test itself on loopback, as a normal user).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null || echo "setup: postgresql install failed; its tests will be skipped" >&2
else
  echo "setup: cannot install postgresql here (no apt-get or not root); its tests will be skipped" >&2
fi
