#!/bin/bash
# Run the Test::Nginx suite against Debian's nginx binary with the module
# built by scripts/build.sh.  Arguments: test files (default: all of t/).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_LOAD_MODULES:-$top/build/ngx_http_tokenrefresh_module.so}

# storms open hundreds of sockets
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ $# -eq 0 ]; then
    set -- t/
fi

exec prove -I. -r "$@"
