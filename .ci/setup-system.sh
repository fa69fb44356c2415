#!/usr/bin/env bash
# System packages the test suite needs beyond python3:
# - a PostgreSQL server binary for the optimizer's shared-storage test (started by the test
#   itself on loopback, as a normal user);
# - Chromium, for the status page's headless-browser test.
# Nothing here may stop CI: a package that cannot be installed is reported, and the tests that
# need it skip with the reason.
set -uo pipefail

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
updated=0
apt_install() {  # apt_install PACKAGE WHAT-SKIPS
  if ! can_apt; then
    echo "setup: cannot install $1 here (no apt-get or not root); $2 will be skipped" >&2
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ "$updated" = 0 ]; then
    apt-get update -qq >/dev/null || echo "setup: apt-get update failed" >&2
    updated=1
  fi
  apt-get install -y -qq "$1" >/dev/null || echo "setup: $1 install failed; $2 will be skipped" >&2
}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql "its tests"
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  apt_install chromium "the status page's browser test"
fi
exit 0
