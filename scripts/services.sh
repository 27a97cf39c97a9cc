#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ run on their standard local ports and that the
# wrapx database exists. On a Debian machine, as root, it installs what is missing (and cmake,
# which pingora's build needs). Services that already run are left alone.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # name, tries, command...
    local name=$1 tries=$2; shift 2
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    log "$name did not become ready"; return 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo; then sudo "$@"; else "$@"; fi; }

missing=()
have cmake || missing+=(cmake)
have pkg-config || missing+=(pkg-config)
have curl || missing+=(curl)
have jq || missing+=(jq)
have psql || missing+=(postgresql postgresql-contrib)
have redis-server || missing+=(redis-server)
have rabbitmq-server || missing+=(rabbitmq-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fresh_postgres=no
if [ ${#missing[@]} -gt 0 ]; then
    if ! have apt-get; then log "missing ${missing[*]} and no apt-get: install them by hand"; exit 1; fi
    [[ " ${missing[*]} " == *" postgresql "* ]] && fresh_postgres=yes
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL
if ! port_open 5432; then
    log "starting PostgreSQL"
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    if [ "$fresh_postgres" = yes ]; then
        # A fresh Debian cluster asks for passwords over TCP; the defaults use local trust.
        hba=/etc/postgresql/$version/main/pg_hba.conf
        as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
wait_for PostgreSQL 60 psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1'
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname = 'wrapx'")" != 1 ]; then
    log "creating database wrapx"
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE wrapx'
fi

# Redis
if ! port_open 6379; then
    log "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 30 redis-cli -h 127.0.0.1 ping

# RabbitMQ
if ! port_open 5672; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
    wait_for RabbitMQ 120 as_root rabbitmqctl await_startup
fi
wait_for RabbitMQ 120 port_open 5672
log "PostgreSQL, Redis and RabbitMQ are up"
