#!/usr/bin/env bash
# The embedded local stack: a single-node KRaft Kafka broker (jars from Maven Central), a
# PostgreSQL cluster (Debian's binaries) and a Prometheus server (Debian's `prometheus` package)
# scraping the worker with the rules of deploy/prometheus/, all started as plain processes under .local/.
#
#   stack.sh up [--record FILE] [SERVICE...]   start (idempotent); --record lists what this call started
#   stack.sh down [--from FILE] [SERVICE...]   stop (idempotent); --from stops only what FILE lists
#   stack.sh status                            one line per service: up/down, pid, address
#
# Every listener binds 127.0.0.1. Ports and paths come from the environment (see docs/configuration.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=${ORDER_RECOVERY_LOCAL_DIR:-$ROOT/.local}
LOGS=$LOCAL/logs
KAFKA_PORT=${LOCAL_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${LOCAL_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${LOCAL_KAFKA_HEAP:-512m}
PG_PORT=${LOCAL_PG_PORT:-55432}
PG_DB=${LOCAL_PG_DB:-order_recovery}
# The cluster's superuser: the stack's own set-up and the tests' scratch databases, never the
# service. The service's roles are made by deploy/postgres/roles.sql with these local-only
# passwords, the same as the defaults of the DSNs in services/order_recovery/config.py.
PG_SUPERUSER=${LOCAL_PG_SUPERUSER:-postgres}
PG_SUPERUSER_PASSWORD=${LOCAL_PG_SUPERUSER_PASSWORD:-admin-local-only}
export RECOVERY_OWNER_PASSWORD=${RECOVERY_OWNER_PASSWORD:-owner-local-only}
export RECOVERY_WORKER_PASSWORD=${RECOVERY_WORKER_PASSWORD:-worker-local-only}
export RECOVERY_REPORTS_PASSWORD=${RECOVERY_REPORTS_PASSWORD:-reports-local-only}
export RECOVERY_OPERATOR_PASSWORD=${RECOVERY_OPERATOR_PASSWORD:-operator-local-only}
# Clusters made before the roles trusted every local connection and had this one superuser.
PG_LEGACY_USER=${LOCAL_PG_USER:-recovery}
READY_TIMEOUT=${LOCAL_READY_TIMEOUT:-90}
PROM_PORT=${LOCAL_PROMETHEUS_PORT:-19090}
WORKER_METRICS_PORT=${ORDER_RECOVERY_METRICS_PORT:-9464}
LIFECYCLE_METRICS_PORT=${ORDER_RECOVERY_LIFECYCLE_METRICS_PORT:-9465}
ALL_SERVICES=(kafka postgres prometheus)

KAFKA_DIR=$LOCAL/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_PID=$KAFKA_DIR/kafka.pid
PG_DATA=$LOCAL/pg
PG_SOCK=$LOCAL/pgsock
PROM_DIR=$LOCAL/prometheus
PROM_PID=$PROM_DIR/prometheus.pid

say() { printf '%s\n' "$*" >&2; }
die() { say "stack: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A zombie is dead: a service killed outright stays one until init reaps it (not at once everywhere).
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  local state; state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ "$state" != Z ]
}
read_pid() { [ -f "$1" ] && head -n1 "$1" | tr -dc '0-9' || true; }

# Waits until CHECK succeeds; on timeout names the service and its log.
wait_for() {
  local name=$1 log=$2 pid_file=$3; shift 3
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@"; do
    if ! pid_alive "$(read_pid "$pid_file")"; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "$name exited during start-up; see $log"
    fi
    [ $SECONDS -lt $deadline ] || die "$name not ready after ${READY_TIMEOUT}s; see $log"
    sleep 0.3
  done
}

# Starts CMD detached (setsid: Ctrl-C in `make run` stops the worker, not the services), writing its
# pid to PID_FILE and its output to LOG, and waits until the pid file exists.
spawn() {
  local pid_file=$1 log=$2; shift 2
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pid_file" "$@" >>"$log" 2>&1 </dev/null &
  local waited=0
  until [ -s "$pid_file" ] || [ $waited -ge 50 ]; do sleep 0.1; waited=$((waited + 1)); done
}

# Stops the process of PID_FILE: TERM, up to 30 s, then KILL; a stale pid file is just removed.
stop_pid_file() {
  local name=$1 pid_file=$2 pid
  pid=$(read_pid "$pid_file")
  if pid_alive "$pid"; then
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    pid_alive "$pid" && kill -KILL "$pid"
    say "stack: $name stopped"
  fi
  rm -f "$pid_file"
}

# One `make status` line: NAME up/down, pid, address, log.
status_line() {
  local name=$1 pid=$2 address=$3 log=$4
  if pid_alive "$pid"; then printf '%-10s up    pid %s  %s  log %s\n' "$name" "$pid" "$address" "$log"
  else printf '%-10s down\n' "$name"; fi
}

# ---------------------------------------------------------------- kafka
kafka_fetch() {
  local pom=$ROOT/deploy/local/kafka/pom.xml stamp=$KAFKA_LIBS/.pom.sha256 want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian package 'maven') to fetch the Kafka jars"
  say "stack: fetching Kafka jars from Maven Central into $KAFKA_LIBS (once; log: $LOGS/mvn.log)"
  rm -rf "$KAFKA_LIBS" && mkdir -p "$KAFKA_LIBS"
  mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIBS" >"$LOGS/mvn.log" 2>&1 \
    || { tail -n 20 "$LOGS/mvn.log" >&2; die "Maven could not fetch the Kafka jars; see $LOGS/mvn.log"; }
  echo "$want" >"$stamp"
}

kafka_java() {
  command -v java >/dev/null || die "java not found: Kafka needs Java 17 (Debian package 'openjdk-17-jre-headless')"
  java -Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dkafka.logs.dir=$LOGS" "-Dlog4j2.configurationFile=$ROOT/deploy/local/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_render_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@DATA_DIR@|$KAFKA_DIR/data|g" \
    "$ROOT/deploy/local/kafka/server.properties.in" >"$KAFKA_DIR/server.properties"
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null; }

kafka_up() {
  if pid_alive "$(read_pid "$KAFKA_PID")"; then say "stack: kafka already up"; return 0; fi
  rm -f "$KAFKA_PID"
  if port_open "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by another process; stop it or set LOCAL_KAFKA_PORT"
  fi
  kafka_fetch
  kafka_render_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOGS/kafka.out")
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$KAFKA_DIR/server.properties" >>"$LOGS/kafka.out" 2>&1 \
      || die "formatting Kafka storage failed; see $LOGS/kafka.out"
  fi
  : >"$LOGS/kafka.log"
  spawn "$KAFKA_PID" "$LOGS/kafka.out" \
    java -Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dkafka.logs.dir=$LOGS" "-Dlog4j2.configurationFile=$ROOT/deploy/local/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties"
  wait_for kafka "$LOGS/kafka.log" "$KAFKA_PID" kafka_ready
  STARTED=1
  say "stack: kafka up on 127.0.0.1:$KAFKA_PORT (pid $(read_pid "$KAFKA_PID"), log $LOGS/kafka.log)"
}

kafka_down() { stop_pid_file kafka "$KAFKA_PID"; }

kafka_status() {
  status_line kafka "$(read_pid "$KAFKA_PID")" "127.0.0.1:$KAFKA_PORT" "$LOGS/kafka.log"
}

# ---------------------------------------------------------------- postgres
pg_bindir() {
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return
  fi
  local d; d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "stack: installing Debian's postgresql package (log: $LOGS/apt.log)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } \
      >"$LOGS/apt.log" 2>&1 || die "apt-get install postgresql failed; see $LOGS/apt.log"
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1); echo "$d"; return
  fi
  die "PostgreSQL server binaries not found: install the 'postgresql' package (Debian/Ubuntu) or put initdb and pg_ctl on PATH"
}

# initdb and postgres refuse to run as root: as root, run them as an unprivileged system user.
pg_os_user() {
  if [ "$(id -u)" != 0 ]; then id -un; return; fi
  local u=${LOCAL_PG_OS_USER:-postgres}
  if ! id "$u" >/dev/null 2>&1; then
    u=order-recovery-pg
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  fi
  echo "$u"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

# The postgres user must be able to reach .local/ (a clone in a mktemp -d dir is mode 700).
pg_grant_traverse() {
  [ "$(id -u)" = 0 ] || return 0
  local d=$LOCAL
  while [ "$d" != / ]; do
    if ! runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null; then
      say "stack: granting traverse (o+x) on $d so the '$PG_OS_USER' user can reach $PG_DATA"
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# psql as the stack's superuser, over TCP with its password.
pg_psql() {
  PGPASSWORD=$PG_SUPERUSER_PASSWORD "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 \
    -p "$PG_PORT" -U "$PG_SUPERUSER" "$@"
}

# A cluster made before the database roles: its pg_hba.conf trusts local connections.
pg_is_legacy() { grep -Eq '^[[:space:]]*[^#].*[[:space:]]trust([[:space:]]|$)' "$PG_DATA/pg_hba.conf"; }

pg_install_hba() {
  cp "$ROOT/deploy/local/postgres/pg_hba.conf" "$PG_DATA/pg_hba.conf"
  [ "$(id -u)" != 0 ] || chown "$PG_OS_USER" "$PG_DATA/pg_hba.conf"
}

# Upgrades a running legacy cluster in place, its data kept: while it still trusts us, give the
# stack's superuser a password, then require a password of everyone (the old superuser has none,
# so it can no longer log in) and reload.
pg_upgrade_auth() {
  say "stack: this Postgres cluster trusts every local connection (made before the database roles); upgrading it to password (SCRAM) auth, data kept"
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_LEGACY_USER" \
    -d postgres -v su="$PG_SUPERUSER" -v pw="$PG_SUPERUSER_PASSWORD" >>"$LOGS/roles.log" 2>&1 <<'SQL' \
    || die "could not upgrade the cluster as its old superuser '$PG_LEGACY_USER' (see $LOGS/roles.log): set LOCAL_PG_USER to the superuser it was made with, or start afresh with 'make clean' (drops the local data)"
SELECT format('CREATE ROLE %I', :'su')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'su') \gexec
ALTER ROLE :"su" SUPERUSER LOGIN PASSWORD :'pw';
SQL
  pg_install_hba
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >>"$LOGS/pg_ctl.log" 2>&1 \
    || die "reloading postgres failed; see $LOGS/pg_ctl.log"
}

# The service's database and roles (deploy/postgres/roles.sql), on every start: idempotent.
pg_bootstrap() {
  if [ -z "$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" 2>>"$LOGS/roles.log")" ]; then
    pg_psql -d postgres -c "CREATE DATABASE \"$PG_DB\"" >>"$LOGS/roles.log" 2>&1 \
      || { tail -n 5 "$LOGS/roles.log" >&2; die "could not create database $PG_DB as '$PG_SUPERUSER'; see $LOGS/roles.log"; }
  fi
  pg_psql -d "$PG_DB" -f "$ROOT/deploy/postgres/roles.sql" >>"$LOGS/roles.log" 2>&1 \
    || { tail -n 5 "$LOGS/roles.log" >&2; die "creating the database roles failed; see $LOGS/roles.log"; }
}

pg_up() {
  PG_BIN=$(pg_bindir); PG_OS_USER=$(pg_os_user)
  if [ -f "$PG_DATA/postmaster.pid" ] && pid_alive "$(read_pid "$PG_DATA/postmaster.pid")"; then
    if pg_is_legacy; then pg_upgrade_auth; pg_bootstrap; fi
    say "stack: postgres already up"; return 0
  fi
  if port_open "$PG_PORT"; then
    die "port $PG_PORT is taken by another process; stop it or set LOCAL_PG_PORT"
  fi
  mkdir -p "$PG_DATA" "$PG_SOCK"
  [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$PG_DATA" "$PG_SOCK" && chmod 700 "$PG_DATA"
  pg_grant_traverse
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    local pwfile=$LOCAL/pg-superuser.pw
    (umask 077 && printf '%s\n' "$PG_SUPERUSER_PASSWORD" >"$pwfile")
    [ "$(id -u)" != 0 ] || chown "$PG_OS_USER" "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --pwfile="$pwfile" \
      --auth=scram-sha-256 -E UTF8 --no-locale >"$LOGS/initdb.log" 2>&1 \
      || { rm -f "$pwfile"; die "initdb failed; see $LOGS/initdb.log"; }
    rm -f "$pwfile"
    cat >>"$PG_DATA/postgresql.conf" <<EOF
# --- order-recovery local stack ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
EOF
  fi
  # Commit times of decisions, for `make bench`'s produce -> commit latency (clusters made before
  # this line get it too).
  grep -q '^track_commit_timestamp' "$PG_DATA/postgresql.conf" \
    || echo "track_commit_timestamp = on" >>"$PG_DATA/postgresql.conf"
  # The project's settings (deploy/local/postgres/order-recovery.conf), fresh on every start.
  cp "$ROOT/deploy/local/postgres/order-recovery.conf" "$PG_DATA/order-recovery.conf"
  [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$PG_DATA/order-recovery.conf"
  grep -q "^include_if_exists = 'order-recovery.conf'" "$PG_DATA/postgresql.conf" \
    || echo "include_if_exists = 'order-recovery.conf'" >>"$PG_DATA/postgresql.conf"
  # Client authentication (deploy/local/postgres/pg_hba.conf), fresh on every start too; a legacy
  # cluster keeps its own until pg_upgrade_auth has given the superuser a password.
  local legacy=0
  if pg_is_legacy; then legacy=1; else pg_install_hba; fi
  rm -f "$PG_DATA/postmaster.pid"
  touch "$LOGS/postgres.log" && { [ "$(id -u)" != 0 ] || chown "$PG_OS_USER" "$LOGS/postgres.log"; }
  setsid bash -c "$(declare -f as_pg); PG_OS_USER=$PG_OS_USER; as_pg '$PG_BIN/pg_ctl' -D '$PG_DATA' -l '$LOGS/postgres.log' -w -t '$READY_TIMEOUT' start" \
    >"$LOGS/pg_ctl.log" 2>&1 </dev/null \
    || { tail -n 20 "$LOGS/postgres.log" >&2; die "postgres did not start; see $LOGS/postgres.log"; }
  wait_for postgres "$LOGS/postgres.log" "$PG_DATA/postmaster.pid" pg_ready
  [ $legacy = 0 ] || pg_upgrade_auth
  pg_bootstrap
  STARTED=1
  say "stack: postgres up on 127.0.0.1:$PG_PORT (pid $(read_pid "$PG_DATA/postmaster.pid"), log $LOGS/postgres.log)"
}

pg_down() {
  [ -f "$PG_DATA/postmaster.pid" ] || return 0
  local pid; pid=$(read_pid "$PG_DATA/postmaster.pid")
  if pid_alive "$pid"; then
    PG_BIN=$(pg_bindir); PG_OS_USER=$(pg_os_user)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >>"$LOGS/pg_ctl.log" 2>&1 || kill -KILL "$pid"
    say "stack: postgres stopped"
  else
    rm -f "$PG_DATA/postmaster.pid"
  fi
}

pg_status() {
  status_line postgres "$(read_pid "$PG_DATA/postmaster.pid")" "127.0.0.1:$PG_PORT" "$LOGS/postgres.log"
}

# ---------------------------------------------------------------- prometheus
# The binaries: `prometheus` and `promtool` on PATH, else (as root on Debian) the `prometheus`
# package, installed the way postgres is. Debian's package does not start its own service here
# (policy-rc.d / no init); we only use its binaries.
prom_bin() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    command -v prometheus; return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "stack: installing Debian's prometheus package (log: $LOGS/apt-prometheus.log)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; } \
      >"$LOGS/apt-prometheus.log" 2>&1 || die "apt-get install prometheus failed; see $LOGS/apt-prometheus.log"
    command -v prometheus >/dev/null || die "prometheus still not on PATH after the install; see $LOGS/apt-prometheus.log"
    command -v prometheus; return
  fi
  die "prometheus not found: install the 'prometheus' package (Debian/Ubuntu) or put the prometheus and promtool binaries on PATH"
}

# deploy/prometheus/prometheus.yml with the worker's port and the rules' absolute path.
prom_render_config() {
  mkdir -p "$PROM_DIR/data"
  sed -e "s|127\.0\.0\.1:9464|127.0.0.1:$WORKER_METRICS_PORT|g" \
    -e "s|127\.0\.0\.1:9465|127.0.0.1:$LIFECYCLE_METRICS_PORT|g" \
    -e "s|- rules/|- $ROOT/deploy/prometheus/rules/|g" \
    "$ROOT/deploy/prometheus/prometheus.yml" >"$PROM_DIR/prometheus.yml"
}

prom_ready() { port_open "$PROM_PORT" && grep -q "Server is ready to receive web requests" "$LOGS/prometheus.log" 2>/dev/null; }

prometheus_up() {
  local bin; bin=$(prom_bin)
  if pid_alive "$(read_pid "$PROM_PID")"; then
    # Already up, maybe from an older checkout: its targets and rules are this checkout's again.
    prom_render_config
    if "$(dirname "$bin")/promtool" check config "$PROM_DIR/prometheus.yml" >"$LOGS/promtool.log" 2>&1; then
      kill -HUP "$(read_pid "$PROM_PID")" && say "stack: prometheus already up (config and rules reloaded)"
    else
      say "stack: prometheus already up; the new config does not check (see $LOGS/promtool.log), kept the old"
    fi
    return 0
  fi
  rm -f "$PROM_PID"
  if port_open "$PROM_PORT"; then
    die "port $PROM_PORT is taken by another process; stop it or set LOCAL_PROMETHEUS_PORT"
  fi
  prom_render_config
  "$(dirname "$bin")/promtool" check config "$PROM_DIR/prometheus.yml" >"$LOGS/promtool.log" 2>&1 \
    || { cat "$LOGS/promtool.log" >&2; die "the Prometheus config or rules do not check; see $LOGS/promtool.log"; }
  : >"$LOGS/prometheus.log"
  spawn "$PROM_PID" "$LOGS/prometheus.log" \
    "$bin" --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
    --storage.tsdb.retention.time=7d --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle
  wait_for prometheus "$LOGS/prometheus.log" "$PROM_PID" prom_ready
  STARTED=1
  say "stack: prometheus up on http://127.0.0.1:$PROM_PORT scraping 127.0.0.1:$WORKER_METRICS_PORT and 127.0.0.1:$LIFECYCLE_METRICS_PORT (pid $(read_pid "$PROM_PID"), log $LOGS/prometheus.log)"
}

prometheus_down() { stop_pid_file prometheus "$PROM_PID"; }

prometheus_status() {
  status_line prometheus "$(read_pid "$PROM_PID")" "http://127.0.0.1:$PROM_PORT" "$LOGS/prometheus.log"
}

# ---------------------------------------------------------------- dispatch
service_fn() { case $1 in kafka) echo kafka ;; postgres) echo pg ;; prometheus) echo prometheus ;; *) die "unknown service '$1'" ;; esac; }

main() {
  mkdir -p "$LOGS" "$KAFKA_DIR"
  local cmd=${1:-status}; shift || true
  local record="" from=""
  local services=()
  while [ $# -gt 0 ]; do
    case $1 in
      --record) record=$2; shift 2 ;;
      --from) from=$2; shift 2 ;;
      *) services+=("$1"); shift ;;
    esac
  done
  [ ${#services[@]} -gt 0 ] || services=("${ALL_SERVICES[@]}")
  case $cmd in
    up)
      [ -z "$record" ] || : >"$record"
      for s in "${services[@]}"; do
        STARTED=0
        "$(service_fn "$s")_up"
        if [ $STARTED = 1 ] && [ -n "$record" ]; then echo "$s" >>"$record"; fi
      done ;;
    down)
      if [ -n "$from" ]; then
        [ -f "$from" ] || return 0
        mapfile -t services <"$from"
      fi
      local i
      for ((i = ${#services[@]} - 1; i >= 0; i--)); do
        [ -z "${services[i]}" ] || "$(service_fn "${services[i]}")_down"
      done ;;
    status) for s in "${services[@]}"; do "$(service_fn "$s")_status"; done ;;
    *) die "usage: stack.sh up|down|status [--record FILE|--from FILE] [SERVICE...]" ;;
  esac
}

main "$@"
