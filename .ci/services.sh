#!/usr/bin/env bash
# Makes sure the servers the distributed-shape tests use are running on this machine:
# PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and NATS with JetStream (127.0.0.1:4222).
# Starts whichever has stopped, with the machine's own service commands; never installs.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
  return 1
}

if ! port_open 5432; then
  echo "ci: PostgreSQL is not listening on 127.0.0.1:5432; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_port 5432 && echo "ci: PostgreSQL is up" || echo "ci: WARNING: PostgreSQL could not be started; its tests will be SKIPPED"
fi
if port_open 5432 && command -v psql >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi

if ! port_open 4222; then
  echo "ci: NATS is not listening on 127.0.0.1:4222; starting it"
  if [ -x /usr/sbin/nats-server ]; then
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  fi
  wait_port 4222 && echo "ci: NATS is up" || echo "ci: WARNING: NATS could not be started; its tests will be SKIPPED"
fi
exit 0
