#!/bin/bash
# The interop suite: ngx_http_tokenrefresh_module against a real, certified
# OpenID provider (panva's oidc-provider, pinned in interop/package-lock.json)
# and a resource server that verifies RFC 9068 JWT access tokens.
#
#   scripts/interop.sh [test files...]      default: interop/t/
#
# On a fresh Debian 12 machine, as root (or with sudo), from a clone:
#   1. builds the module (make: installs nginx, Test::Nginx, ... if missing);
#   2. uses the machine's Node.js (18 or later) if there is one, otherwise
#      installs Debian's (apt-get install nodejs npm: Node 18);
#   3. npm ci in interop/ (skipped when node_modules matches the lock file);
#   4. makes the clients' keys with openssl (build/interop/keys, never
#      committed), starts the provider and the API on loopback;
#   5. runs the scenarios with prove, stops everything, prints timings.
#
# Environment:
#   INTEROP_NODE       the node binary (default: node on PATH)
#   INTEROP_OP_PORT    the provider's port (39850)
#   INTEROP_API_PORT   the API's port (39860)
#   TEST_NGINX_PORT    nginx's port (3984; the main suite uses 1984)
#   INTEROP_CYCLES     refresh cycles of t/002-rotation.t (24)
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

run=$top/build/interop
op_port=${INTEROP_OP_PORT:-39850}
api_port=${INTEROP_API_PORT:-39860}

export TEST_NGINX_PORT=${TEST_NGINX_PORT:-3984}
export INTEROP_OP_PORT=$op_port INTEROP_API_PORT=$api_port

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

t_start=$(date +%s.%N)
t_last=$t_start
timings=()

phase() {
    local now
    now=$(date +%s.%N)
    timings+=("$(awk -v a="$t_last" -v b="$now" -v w="$1" \
                     'BEGIN { printf "%-34s %6.1f s", w, b - a }')")
    t_last=$now
}

say() { printf '\n\033[1minterop: %s\033[0m\n' "$*"; }

# ------------------------------------------------------------ the module

say "building the module"
# what building and Test::Nginx need (make itself included), then make
scripts/setup.sh --check || scripts/setup.sh
make -s
phase "setup and build (make)"

# ------------------------------------------------------------ Node.js

node=${INTEROP_NODE:-node}

node_ok() {
    command -v "$node" >/dev/null 2>&1 &&
        "$node" -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'
}

if ! node_ok || ! command -v npm >/dev/null 2>&1; then
    if [ -n "${INTEROP_NODE:-}" ] && ! node_ok; then
        echo "interop: $INTEROP_NODE is not Node.js 18 or later" >&2
        exit 1
    fi
    say "installing Debian's Node.js and npm"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    if node_ok; then
        $SUDO apt-get install -y -q --no-install-recommends npm
    else
        $SUDO apt-get install -y -q --no-install-recommends nodejs npm
    fi
    node_ok || { echo "interop: no Node.js 18 or later" >&2; exit 1; }
fi

say "node $("$node" --version), npm $(npm --version)"

# ------------------------------------------------------------ npm ci

lock_sum=$(sha256sum interop/package-lock.json | cut -d' ' -f1)
stamp=interop/node_modules/.interop-lock-sha256

if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
    say "npm ci in interop/"
    (cd interop && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" > "$stamp"
fi
phase "node and npm ci"

# ------------------------------------------------------------ servers

rm -rf "$run"
mkdir -p "$run"
(
    umask 077
    mkdir -p "$run/keys"
    cd "$run/keys"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
            -out rs256.pem 2>/dev/null
    openssl pkey -in rs256.pem -pubout -out rs256.pub.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out es256.pem 2>/dev/null
    openssl pkey -in es256.pem -pubout -out es256.pub.pem
    openssl rand -hex 32 > hs256.secret
)
export INTEROP_KEYS=$run/keys

for port in "$op_port" "$api_port" "$TEST_NGINX_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
        echo "interop: something already listens on port $port" >&2
        exit 1
    fi
done

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

"$node" interop/provider.js --port "$op_port" --keys "$run/keys" \
        --resource "http://127.0.0.1:$api_port/" > "$run/provider.log" 2>&1 &
pids+=($!)
"$node" interop/resource.js --port "$api_port" \
        --issuer "http://127.0.0.1:$op_port" \
        --resource "http://127.0.0.1:$api_port/" > "$run/resource.log" 2>&1 &
pids+=($!)

for _ in $(seq 200); do
    if curl -sf -o /dev/null "http://127.0.0.1:$op_port/admin/health" &&
       curl -sf -o /dev/null "http://127.0.0.1:$api_port/admin/health"
    then
        break
    fi
    sleep 0.05
done

if ! curl -sf "http://127.0.0.1:$op_port/admin/health" > "$run/health.json"; then
    echo "interop: the provider did not start:" >&2
    cat "$run/provider.log" "$run/resource.log" >&2
    exit 1
fi
curl -sf -o /dev/null "http://127.0.0.1:$api_port/admin/health" || {
    echo "interop: the API did not start:" >&2
    cat "$run/resource.log" >&2
    exit 1
}
grep -v WARNING "$run/provider.log" || true
grep -v WARNING "$run/resource.log" || true
phase "keys, provider and API started"

# ------------------------------------------------------------ tests

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_LOAD_MODULES:-$top/build/ngx_http_tokenrefresh_module.so}
export INTEROP_NODE=$node

# storms open many sockets
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ $# -eq 0 ]; then
    set -- t/
else
    # paths given from the top of the repository
    set -- "${@#interop/}"
fi

say "running the scenarios"
status=0
(cd interop && prove -I. --timer -r "$@") || status=$?
phase "scenarios (prove)"

# ------------------------------------------------------------ summary

say "versions: $(sed 's/.*"versions":\({[^}]*}\).*/\1/' "$run/health.json")"
say "timings"
printf '  %s\n' "${timings[@]}"
awk -v a="$t_start" -v b="$(date +%s.%N)" \
    'BEGIN { printf "  %-34s %6.1f s\n", "total", b - a }'

if [ "$status" != 0 ]; then
    echo "interop: FAILED; logs in $run and interop/t/servroot/logs" >&2
fi
exit "$status"
