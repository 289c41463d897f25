#!/usr/bin/env bash
# Runs every test against real PostgreSQL and Redis (started here if they are stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/backing-services.sh
export LEADFLOW_TEST_DATABASE_URL="${LEADFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export LEADFLOW_TEST_REDIS_URL="${LEADFLOW_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
exec cargo test --workspace --locked "$@"
