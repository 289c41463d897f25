#!/usr/bin/env bash
# Runs every test against real PostgreSQL and Redis (started here if they are stopped), then,
# without arguments, the fault suite on servers of its own.
# Builds the leadflow binary first: the tests that run one process per service start it
# from the target directory, in the profile the tests are built in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/backing-services.sh
export LEADFLOW_TEST_DATABASE_URL="${LEADFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export LEADFLOW_TEST_REDIS_URL="${LEADFLOW_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# The profile flags among cargo test's own (those before `--`), for the same build.
profile=()
expect_profile=false
for arg in "$@"; do
  if $expect_profile; then
    profile+=(--profile "$arg")
    expect_profile=false
    continue
  fi
  case "$arg" in
    --) break ;;
    --release) profile+=(--release) ;;
    --profile) expect_profile=true ;;
    --profile=*) profile+=("$arg") ;;
  esac
done

cargo build --locked -p leadflow ${profile[@]+"${profile[@]}"}
cargo test --workspace --locked "$@"

# The fault suite (tests/it/faults.rs) kills processes and servers of its own and times its
# faults under load: it runs alone, after the rest, when the whole suite runs. Run it by
# itself with: scripts/test.sh -p leadflow-tests --test it -- faults:: --ignored --nocapture
if [ $# -eq 0 ]; then
  cargo test --locked -p leadflow-tests --test it -- faults:: --ignored --nocapture
fi
