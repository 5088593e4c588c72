#!/usr/bin/env bash
# One command for a new user: install, migrate SQLite, start API + worker, run the LeNet demo.
# Extra arguments go to `trainyard serve` (e.g. --exit-after-demo, --port 8001).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/trainyard serve --demo "$@"
