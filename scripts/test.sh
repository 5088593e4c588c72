#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest on the real PostgreSQL and Redis.
# TRAINYARD_TEST_PG / TRAINYARD_TEST_REDIS point the tests at other servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
