#!/usr/bin/env bash
# scripts/test-env.sh: prepare the real components remediator's tests use
# (Docker Engine, PostgreSQL, Redis, Alertmanager/amtool, promtool,
# systemd-analyze/systemd-sysusers and the local busybox test image) and
# export their coordinates.
#
#   scripts/test-env.sh cargo test        # set up, then exec the command
#   scripts/test-env.sh                   # set up only
#   source scripts/test-env.sh            # set up, export into this shell
#
# Idempotent and fast when everything is already there: it installs only
# missing Debian packages (apt-get update only then), starts only daemons
# that do not answer, and rebuilds the image only when its build context
# (tests/stack/image/ + /bin/busybox) changed. Works with or without systemd
# as PID 1 (without it, daemons are started directly, detached).
# Never pulls from a registry.
#
# Exports:
#   REMEDIATOR_TEST_POSTGRES_URL   postgres://postgres:postgres@127.0.0.1:5432/postgres
#   REMEDIATOR_TEST_REDIS_URL      redis://127.0.0.1:6379/
#   REMEDIATOR_TEST_ALERTMANAGER_BIN, REMEDIATOR_TEST_AMTOOL_BIN,
#   REMEDIATOR_TEST_PROMTOOL_BIN   absolute paths
#   REMEDIATOR_TEST_CHROMIUM_BIN   Debian's chromium, for the pages' browser test
#   REMEDIATOR_TEST_IMAGE          remediator-test/busybox:ctx-HASH (this context's build)
#   REMEDIATOR_TEST_DOCKER_BIN     a docker CLI that works with the daemon
#                                  (also first on PATH as `docker`)
#   REMEDIATOR_TEST_COMPOSE_FILE   tests/stack/docker-compose.yml (absolute)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  _rmte_sourced=1
else
  _rmte_sourced=0
  set -euo pipefail
fi

_rmte_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# systemd: systemd-analyze and systemd-sysusers check deploy/ (no systemd as PID 1 needed).
# chromium (and a font for its text): the incident pages are tested in a real headless browser.
_RMTE_PACKAGES=(docker.io docker-compose busybox-static postgresql redis-server
  prometheus-alertmanager prometheus wrk libssl-dev pkg-config systemd chromium
  fonts-dejavu-core)
_RMTE_IMAGE_REPO="remediator-test/busybox"
_RMTE_IMAGE="$_RMTE_IMAGE_REPO:latest"
_RMTE_IMAGE_LABEL="org.remediator.test.context-sha256"
_RMTE_STATE_DIR="/tmp/remediator-test-env"
_RMTE_DOCKERD_LOG="/var/log/remediator-test-dockerd.log"

_rmte_log() { printf 'test-env: %s\n' "$*" >&2; }
_rmte_die() { _rmte_log "ERROR: $*"; return 1; }

_rmte_sudo() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

_rmte_have_systemd() { [[ -d /run/systemd/system ]]; }

# ---------------------------------------------------------------- packages
_rmte_packages() {
  local missing=() p
  for p in "${_RMTE_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  _rmte_log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  _rmte_sudo env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get update -qq
  _rmte_sudo env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    --no-install-recommends "${missing[@]}" >&2
}

# ------------------------------------------------------------------ docker
# The Debian client (/usr/bin/docker) always matches the Debian daemon; a
# newer client elsewhere on PATH (e.g. /usr/local/bin/docker) is used only
# if it actually works with the daemon.
_rmte_docker_ok() { "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

_rmte_pick_docker() {
  local onpath
  onpath="$(command -v docker 2>/dev/null || true)"
  if [[ -n "$onpath" ]] && _rmte_docker_ok "$onpath"; then
    printf '%s\n' "$onpath"
  elif [[ -x /usr/bin/docker ]] && _rmte_docker_ok /usr/bin/docker; then
    printf '%s\n' /usr/bin/docker
  else
    return 1
  fi
}

_rmte_daemon_answers() {
  local c
  for c in /usr/bin/docker "$(command -v docker 2>/dev/null || true)"; do
    [[ -n "$c" && -x "$c" ]] && _rmte_docker_ok "$c" && return 0
  done
  return 1
}

# True if PID is a live (not zombie) process, optionally named $2.
_rmte_alive() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [[ "${st%% *}" != Z ]] || return 1
  [[ -z "${2:-}" || "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

# After an unclean dockerd death its containerd may linger as a zombie for a
# while (PID 1 here reaps lazily); dockerd then trusts the stale pid file,
# waits for that "containerd" and gives up. Drop such stale pid files.
_rmte_clean_stale_pids() {
  local f pid i
  for f in /var/run/docker/containerd/containerd.pid /var/run/docker.pid; do
    [[ -r $f ]] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ -n "$pid" ]] || { _rmte_sudo rm -f "$f"; continue; }
    for ((i = 0; i < 10; i++)); do
      if [[ ! -e /proc/$pid ]] || _rmte_alive "$pid"; then break; fi  # gone, or alive
      sleep 0.5
    done
    if ! _rmte_alive "$pid"; then
      _rmte_log "removing stale $f (pid $pid is gone or a zombie)"
      _rmte_sudo rm -f "$f"
    fi
  done
}

_rmte_dockerd() {
  _rmte_daemon_answers && return 0
  local i attempt pid="" logstart=0
  if _rmte_have_systemd; then
    _rmte_log "starting docker via systemctl"
    _rmte_sudo systemctl start docker 9>&- || true
  else
    # cgroups must be mounted for dockerd; most VMs/containers already do.
    if ! grep -q ' /sys/fs/cgroup' /proc/mounts && command -v cgroupfs-mount >/dev/null; then
      _rmte_sudo cgroupfs-mount || true
    fi
    [[ -r /var/run/docker.pid ]] && pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if [[ -n "$pid" ]] && _rmte_alive "$pid" dockerd; then
      _rmte_log "dockerd (pid $pid) is running but not answering yet; waiting"
    else
      pid=""
    fi
  fi
  for ((attempt = 1; attempt <= 2; attempt++)); do
    if ! _rmte_have_systemd && [[ -z "$pid" ]]; then
      _rmte_clean_stale_pids
      logstart="$(stat -c %s "$_RMTE_DOCKERD_LOG" 2>/dev/null || echo 0)"
      _rmte_log "starting dockerd directly (no systemd); log: $_RMTE_DOCKERD_LOG"
      # Detached from us; fd 9 is our lock: daemons must not inherit it.
      _rmte_sudo setsid nohup /usr/sbin/dockerd </dev/null >>"$_RMTE_DOCKERD_LOG" 2>&1 9>&- &
      pid=$!
      disown 2>/dev/null || true
    fi
    for ((i = 0; i < 120; i++)); do
      _rmte_daemon_answers && { _rmte_log "docker daemon is up"; return 0; }
      if [[ -n "$pid" ]] && ! _rmte_alive "$pid"; then
        _rmte_log "dockerd exited during start-up (attempt $attempt):"
        tail -c +"$((logstart + 1))" "$_RMTE_DOCKERD_LOG" 2>/dev/null | tail -n 5 >&2 || true
        break
      fi
      sleep 0.5
    done
    if [[ -n "$pid" ]] && _rmte_alive "$pid"; then break; fi  # alive, but mute for 60s
    pid=""
    _rmte_have_systemd && break
  done
  tail -c +"$((logstart + 1))" "$_RMTE_DOCKERD_LOG" 2>/dev/null | tail -n 30 >&2 || true
  _rmte_die "docker daemon did not answer within 60s"
}

# -------------------------------------------------------------- postgresql
# Chooses the cluster on port 5432 (else the newest one) and prints
# "VERSION CLUSTER PORT".
_rmte_pg_cluster() {
  local line
  line="$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $1, $2, $3; exit}')"
  [[ -z "$line" ]] && line="$(pg_lsclusters -h 2>/dev/null | sort -k1,1n | tail -n1 | awk '{print $1, $2, $3}')"
  printf '%s\n' "$line"
}

_rmte_pg_login_ok() {
  PGPASSWORD=postgres PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$1" -U postgres -d postgres \
    -Atqc 'SELECT 1' >/dev/null 2>&1
}

_rmte_postgres() {
  local ver cluster port line
  line="$(_rmte_pg_cluster)"
  if [[ -z "$line" ]]; then
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n1)"
    [[ -n "$ver" ]] || _rmte_die "no PostgreSQL server installed" || return 1
    _rmte_log "creating PostgreSQL cluster $ver/main"
    _rmte_sudo pg_createcluster "$ver" main --port 5432 >&2
    line="$(_rmte_pg_cluster)"
  fi
  read -r ver cluster port <<<"$line"
  _RMTE_PG_PORT="$port"
  _rmte_pg_login_ok "$port" && return 0

  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    _rmte_log "starting PostgreSQL $ver/$cluster (port $port)"
    # pg_ctlcluster works with and without systemd (it defers to systemctl
    # when systemd runs). An already-running cluster makes it fail: ignore.
    _rmte_sudo pg_ctlcluster "$ver" "$cluster" start >&2 9>&- || true
    local i
    for ((i = 0; i < 30; i++)); do
      pg_isready -q -h 127.0.0.1 -p "$port" && break
      sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p "$port" \
      || _rmte_die "PostgreSQL did not accept connections on 127.0.0.1:$port" || return 1
  fi
  if ! _rmte_pg_login_ok "$port"; then
    _rmte_log "setting the password of role postgres"
    (cd / && _rmte_sudo runuser -u postgres -- psql -p "$port" -qX -v ON_ERROR_STOP=1 \
      -c "ALTER ROLE postgres WITH PASSWORD 'postgres'") >&2
    _rmte_pg_login_ok "$port" \
      || _rmte_die "postgres/postgres cannot log in over TCP 127.0.0.1:$port (check pg_hba.conf)"
  fi
}

# ------------------------------------------------------------------- redis
_rmte_redis_ok() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

_rmte_redis() {
  _rmte_redis_ok && return 0
  if _rmte_have_systemd; then
    _rmte_log "starting redis-server via systemctl"
    _rmte_sudo systemctl start redis-server 9>&- || true
  fi
  if ! _rmte_redis_ok; then
    _rmte_log "starting redis-server directly (daemonized, 127.0.0.1:6379)"
    if id redis >/dev/null 2>&1 && [[ -r /etc/redis/redis.conf ]]; then
      local d
      for d in /run/redis /var/log/redis /var/lib/redis; do
        [[ -d $d ]] || _rmte_sudo install -d -o redis -g redis -m 0750 "$d"
      done
      (cd / && _rmte_sudo runuser -u redis -- redis-server /etc/redis/redis.conf \
        --daemonize yes --supervised no --bind 127.0.0.1 --port 6379) >&2 9>&-
    else
      mkdir -p "$_RMTE_STATE_DIR/redis"
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
        --dir "$_RMTE_STATE_DIR/redis" --logfile "$_RMTE_STATE_DIR/redis.log" >&2 9>&-
    fi
  fi
  local i
  for ((i = 0; i < 20; i++)); do
    _rmte_redis_ok && return 0
    sleep 0.5
  done
  _rmte_die "redis-server did not answer PING on 127.0.0.1:6379"
}

# ------------------------------------------------------------- test image
_rmte_image_hash() {
  local dir="$_rmte_root/tests/stack/image"
  {
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf 'busybox %s\n' "$(sha256sum </bin/busybox)"
  } | sha256sum | cut -d' ' -f1
}

_rmte_image() {
  local docker="$1" want have ctx
  [[ -x /bin/busybox ]] || _rmte_die "/bin/busybox missing (busybox-static)" || return 1
  want="$(_rmte_image_hash)"
  # Each build context has its own tag (worktrees with different stand-ins run their tests
  # side by side on one daemon); `latest` is the last one built.
  "$docker" image inspect "$_RMTE_IMAGE_REPO:ctx-${want:0:12}" >/dev/null 2>&1 && return 0
  have="$("$docker" image inspect -f "{{index .Config.Labels \"$_RMTE_IMAGE_LABEL\"}}" \
    "$_RMTE_IMAGE" 2>/dev/null || true)"
  if [[ "$have" == "$want" ]]; then
    "$docker" tag "$_RMTE_IMAGE" "$_RMTE_IMAGE_REPO:ctx-${want:0:12}"
    return 0
  fi
  _rmte_log "building $_RMTE_IMAGE (context ${want:0:12})"
  ctx="$(mktemp -d)"
  cp -a "$_rmte_root/tests/stack/image/." "$ctx/"
  cp /bin/busybox "$ctx/busybox"
  # Classic builder: no buildx plugin needed, and nothing is pulled FROM scratch.
  if ! DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false "$docker" build -q --label "$_RMTE_IMAGE_LABEL=$want" \
    -t "$_RMTE_IMAGE" -t "$_RMTE_IMAGE_REPO:ctx-${want:0:12}" "$ctx" >&2; then
    rm -rf "$ctx"
    _rmte_die "docker build of $_RMTE_IMAGE failed"
    return 1
  fi
  rm -rf "$ctx"
  "$docker" image prune -f --filter "label=$_RMTE_IMAGE_LABEL" >/dev/null 2>&1 || true
}

# ------------------------------------------------------------------- setup
_rmte_setup() {
  set -euo pipefail
  mkdir -p "$_RMTE_STATE_DIR"
  # Serialize concurrent runs (e.g. several test binaries calling us).
  exec 9>"$_RMTE_STATE_DIR/lock"
  flock 9
  _rmte_packages
  _rmte_dockerd
  local docker
  docker="$(_rmte_pick_docker)" || _rmte_die "no docker client works with the daemon"
  _rmte_postgres
  _rmte_redis
  # Build with the Debian client when it works: it matches the Debian daemon.
  if [[ -x /usr/bin/docker ]] && _rmte_docker_ok /usr/bin/docker; then docker=/usr/bin/docker; fi
  _rmte_image "$docker"
  printf '%s\n' "$_RMTE_PG_PORT" >"$_RMTE_STATE_DIR/pg-port"
}

# Computes and exports the environment (cheap; run in the caller's shell).
_rmte_export() {
  local docker pg_port am amtool promtool
  docker="$(_rmte_pick_docker)" || docker=""
  if [[ -n "$docker" && "$docker" != "$(command -v docker 2>/dev/null || true)" ]]; then
    # The client first on PATH does not work with this daemon: shadow it.
    mkdir -p "$_RMTE_STATE_DIR/bin"
    ln -sf "$docker" "$_RMTE_STATE_DIR/bin/docker"
    export PATH="$_RMTE_STATE_DIR/bin:$PATH"
  fi
  pg_port="$(cat "$_RMTE_STATE_DIR/pg-port" 2>/dev/null || echo 5432)"
  am="$(command -v prometheus-alertmanager 2>/dev/null || command -v alertmanager 2>/dev/null || true)"
  amtool="$(command -v amtool 2>/dev/null || true)"
  promtool="$(command -v promtool 2>/dev/null || true)"
  chromium="$(command -v chromium 2>/dev/null || true)"
  export REMEDIATOR_TEST_POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:${pg_port}/postgres"
  export REMEDIATOR_TEST_REDIS_URL="redis://127.0.0.1:6379/"
  export REMEDIATOR_TEST_ALERTMANAGER_BIN="$am"
  export REMEDIATOR_TEST_AMTOOL_BIN="$amtool"
  export REMEDIATOR_TEST_PROMTOOL_BIN="$promtool"
  export REMEDIATOR_TEST_CHROMIUM_BIN="$chromium"
  export REMEDIATOR_TEST_IMAGE="$_RMTE_IMAGE_REPO:ctx-$(_rmte_image_hash | cut -c1-12)"
  export REMEDIATOR_TEST_DOCKER_BIN="$docker"
  export REMEDIATOR_TEST_COMPOSE_FILE="$_rmte_root/tests/stack/docker-compose.yml"
}

if [[ $_rmte_sourced -eq 1 ]]; then
  # Run the set-up in a subshell so that `set -e` and friends do not leak
  # into (or kill) the sourcing shell; then export into it.
  if (_rmte_setup); then
    _rmte_export
    _rmte_rc=0
  else
    _rmte_rc=$?
    _rmte_log "set-up failed (exit $_rmte_rc)"
  fi
  unset -f _rmte_log _rmte_die _rmte_sudo _rmte_have_systemd _rmte_packages _rmte_docker_ok \
    _rmte_pick_docker _rmte_daemon_answers _rmte_alive _rmte_clean_stale_pids _rmte_dockerd _rmte_pg_cluster _rmte_pg_login_ok \
    _rmte_postgres _rmte_redis_ok _rmte_redis _rmte_image_hash _rmte_image _rmte_setup _rmte_export
  unset _rmte_sourced _rmte_root _RMTE_PACKAGES _RMTE_IMAGE _RMTE_IMAGE_REPO _RMTE_IMAGE_LABEL _RMTE_STATE_DIR \
    _RMTE_DOCKERD_LOG _RMTE_PG_PORT
  # shellcheck disable=SC2317
  return "$_rmte_rc" 2>/dev/null
else
  (_rmte_setup)
  _rmte_export
  if [[ $# -gt 0 ]]; then
    exec "$@"
  fi
fi
