#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run every test (pytest, notebooks included).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -c constraints.txt -e ".[dev]"
python3 -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
