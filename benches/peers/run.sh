#!/usr/bin/env bash
# Side-by-side benchmark of ferroq and its PostgreSQL and SQLite peers; arguments go to run.py
# (e.g. --only ferroq,pgqueuer --scenario drain --runs 1). See README.md beside this file.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" benches/peers/run.py "$@"
