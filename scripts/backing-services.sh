#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis that the tests use answer: starts them when they are
# installed but stopped, and fails with a clear message when they are absent. Also installs
# aiosmtpd, the SMTP server the mail tests start as their sink, when Python lacks it.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

postgres_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 60); do
    if $check; then return 0; fi
    sleep 0.5
  done
  echo "error: $what did not come up within 30 s" >&2
  return 1
}

if ! postgres_answers; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL postgres_answers
  else
    echo "error: PostgreSQL does not answer on $PG_HOST:$PG_PORT and is not installed here;" >&2
    echo "       install it (e.g. apt-get install postgresql) or point LEADFLOW_TEST_DATABASE_URL at one" >&2
    exit 1
  fi
fi

if ! redis_answers; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis_answers
  else
    echo "error: Redis does not answer on 127.0.0.1:$REDIS_PORT and is not installed here;" >&2
    echo "       install it (e.g. apt-get install redis-server) or point LEADFLOW_TEST_REDIS_URL at one" >&2
    exit 1
  fi
fi

# The mail tests send to a real SMTP server; each test starts its own aiosmtpd (see
# SmtpSink in tests/src/lib.rs), so only the package has to be here. Pinned, so every
# machine runs the sink the tests were written against.
AIOSMTPD_VERSION=1.4.6
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 is not installed; the mail tests need it for their SMTP sink" >&2
    exit 1
  fi
  echo "installing aiosmtpd $AIOSMTPD_VERSION"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --user --quiet --no-warn-script-location \
    "aiosmtpd==$AIOSMTPD_VERSION"
fi

echo "PostgreSQL and Redis answer, aiosmtpd is installed"
