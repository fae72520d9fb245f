#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run every test (pytest; every notebook included).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the web-app test (Debian's package; the test drives it with playwright, no browser download).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install -q -c constraints.txt -e ".[dev]"
python3 -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
