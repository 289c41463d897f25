#!/usr/bin/env bash
# Runs the Python example client (examples/python) against a real leadflow: installs its
# pinned requirements into a cached virtualenv, generates the Python code from the current
# proto/ into a temporary directory, builds the binary, starts `leadflow serve` embedded on
# free ports with a temporary data directory, runs the example, and stops the server and
# removes what it made, whether the example passed or not.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${LEADFLOW_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/leadflow}/python-example"
REQUIREMENTS=examples/python/requirements.txt
# A new requirements file makes a new virtualenv.
STAMP="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ "$(cat "$VENV/stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "installing $REQUIREMENTS into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$STAMP" >"$VENV/stamp"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() {
  local status=$?
  stop_server
  if [ "$status" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- the server's log (last 40 lines) ---" >&2
    tail -n 40 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "generating Python code from proto/"
mkdir -p "$WORK/generated"
# grpc_tools.protoc adds the well-known types (google/protobuf/*.proto) it ships itself.
# shellcheck disable=SC2046
"$VENV/bin/python" -m grpc_tools.protoc --proto_path=proto \
  --python_out="$WORK/generated" --pyi_out="$WORK/generated" \
  --grpc_python_out="$WORK/generated" $(find proto -name '*.proto' | sort)

# The debug build: the example checks behaviour, not speed, and CI's tests have already
# compiled most of it.
echo "building leadflow"
cargo build --locked --quiet -p leadflow --bin leadflow
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BINARY="$TARGET_DIR/debug/leadflow"

echo "starting leadflow serve (embedded, free ports)"
(
  # Nothing from this shell's environment may turn it into a production process.
  for variable in $(compgen -e | grep -E '^(LEADFLOW_|OTEL_)' || true); do
    unset "$variable"
  done
  # Telemetry export on, as in the Kubernetes variants (to a loopback port nobody listens
  # on: failed exports are only logged), so a process that exports is seen to start.
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9
  exec "$BINARY" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 \
    --ingress-listen 127.0.0.1:0 --log-format json
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# The server logs the addresses it bound, ports included, once it listens.
ADDRESSES=""
for _ in $(seq 1 120); do
  ADDRESSES="$(python3 - "$WORK/server.log" <<'EOF'
import json, re, sys
for line in open(sys.argv[1]):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("message") == "leadflow listening":
        ingress = re.search(r"[\d.]+:\d+", entry.get("ingress", ""))
        print(entry["address"], f"http://{ingress.group(0)}" if ingress else "")
        break
EOF
)"
  if [ -n "$ADDRESSES" ]; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "error: leadflow serve exited before it listened" >&2
    exit 1
  fi
  sleep 0.5
done
if [ -z "$ADDRESSES" ]; then
  echo "error: leadflow serve did not listen within 60 s" >&2
  exit 1
fi
read -r GRPC_ADDRESS INGRESS_URL <<<"$ADDRESSES"
echo "leadflow listens on $GRPC_ADDRESS (gRPC) and $INGRESS_URL (HTTP)"

PYTHONPATH="$WORK/generated" "$VENV/bin/python" examples/python/leadflow_example.py \
  --target "$GRPC_ADDRESS" --ingress "$INGRESS_URL"

stop_server
echo "python example: 1 passed, 0 failed"
