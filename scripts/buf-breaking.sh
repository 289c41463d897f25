#!/usr/bin/env bash
# Checks that the contracts in the working tree (proto/, with buf.yaml's FILE rules) break
# no client of the last landed main: `buf breaking` against main's proto/ as git has it.
#
#   scripts/buf-breaking.sh [COMMIT]       (or LEADFLOW_BUF_AGAINST=COMMIT)
#
# What "the last landed main" is, without a COMMIT:
# - on a branch with commits of its own: the commit of main (origin/main, else main) the
#   branch grew from, i.e. what is landed now and what the branch's changes will land on;
# - on main itself with uncommitted changes to the contracts: HEAD, the landed tip;
# - on main itself with a clean tree, as in CI's fresh clone of the submitted main: HEAD~1,
#   the commit before the tip. A clone records no trace of where main stood before the
#   submission, so a submission of several commits is compared at its last step only;
#   pass the commit main stood at before it (COMMIT) to compare the whole submission.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0

against="${1:-${LEADFLOW_BUF_AGAINST:-}}"
if [ -z "$against" ]; then
  main_ref=""
  for candidate in origin/main main; do
    if git rev-parse --verify --quiet "$candidate^{commit}" >/dev/null; then
      main_ref="$candidate"
      break
    fi
  done
  if [ -z "$main_ref" ]; then
    echo "error: no main or origin/main here; name the commit to compare against" >&2
    exit 1
  fi
  fork_point="$(git merge-base HEAD "$main_ref")"
  if [ "$fork_point" != "$(git rev-parse HEAD)" ]; then
    against="$fork_point"
    why="where this branch left $main_ref"
  elif ! git diff --quiet HEAD -- proto buf.yaml ||
    [ -n "$(git ls-files --others --exclude-standard -- proto)" ]; then
    against=HEAD
    why="the landed tip of $main_ref, under uncommitted changes"
  elif git rev-parse --verify --quiet "HEAD~1^{commit}" >/dev/null; then
    against=HEAD~1
    why="the commit before the tip of $main_ref"
  elif [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "error: a shallow clone has no commit before HEAD; fetch more history or name one" >&2
    exit 1
  else
    echo "buf breaking: HEAD is the first commit, no earlier contracts to compare against"
    exit 0
  fi
else
  why="as asked"
fi
commit="$(git rev-parse --verify "$against^{commit}")"

BASE="$(mktemp -d)"
trap 'rm -rf "$BASE"' EXIT
if ! git cat-file -e "$commit:buf.yaml" 2>/dev/null || ! git cat-file -e "$commit:proto" 2>/dev/null; then
  echo "buf breaking: $against ($commit) has no contracts yet, nothing to compare against"
  exit 0
fi
# The earlier contracts as a plain directory: works in a worktree and a fresh clone alike.
git archive "$commit" -- buf.yaml proto | tar -x -C "$BASE"

echo "buf breaking: the working tree against $against ($(git rev-parse --short "$commit"), $why)"
npx --yes "@bufbuild/buf@$BUF_VERSION" breaking --against "$BASE"
echo "no breaking change to the contracts"
