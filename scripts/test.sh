#!/usr/bin/env bash
# The test command: every test this machine can run (root, vm, slow), then a leak check.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/start-services.sh
# CI gives `.ci/run` 90 minutes in all; the live K3s labs (run last) start only while what is
# left of this budget can hold them, and say so when it cannot (tests/lab/k3s/live_k3s.py).
export CNILAB_TEST_DEADLINE="${CNILAB_TEST_DEADLINE:-$(( $(date +%s) + ${CNILAB_TEST_BUDGET_MINUTES:-82} * 60 ))}"
# the slowest tests are printed: where CI's 90 minutes go is in its log
.venv/bin/pytest tests/ -p no:cacheprovider --junitxml=junit-tests.xml --durations=30 "$@"
rc=$?
# pytest's 5 means "no tests ran": never let that pass as green.
if [ "$rc" -eq 5 ]; then echo "✗ no tests ran"; exit 1; fi
exit "$rc"
