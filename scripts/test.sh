#!/usr/bin/env bash
# The test command: every test this machine can run (root, vm, slow), then a leak check.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/start-services.sh
.venv/bin/pytest tests/ -p no:cacheprovider --junitxml=junit-tests.xml "$@"
rc=$?
# pytest's 5 means "no tests ran": never let that pass as green.
if [ "$rc" -eq 5 ]; then echo "✗ no tests ran"; exit 1; fi
exit "$rc"
