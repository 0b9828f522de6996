#!/bin/bash
# The Test::Nginx suite under valgrind's memcheck: Debian's nginx with the
# module loaded.  Storms are smaller and time bounds stretched (valgrind
# is slow); suppressions cover nginx's own start-up allocations only
# (t/valgrind.suppress).  Fails on any error valgrind reports.
#
# Usage: scripts/valgrind.sh [test files]
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/build/valgrind

rm -rf "$out"
mkdir -p "$out"

export TEST_NGINX_USE_VALGRIND="--tool=memcheck --leak-check=full \
--show-leak-kinds=definite --errors-for-leak-kinds=definite \
--num-callers=40 --suppressions=$top/t/valgrind.suppress \
--log-file=$out/vg.%p"
export TEST_NGINX_SLEEP=${TEST_NGINX_SLEEP:-1}
export TEST_NGINX_TIMEOUT=${TEST_NGINX_TIMEOUT:-30}
export TEST_TIME_SCALE=${TEST_TIME_SCALE:-5}
export TEST_STORM_CLIENTS=${TEST_STORM_CLIENTS:-40}

# ports and a server root of its own: it may run beside the normal suite
export TEST_NGINX_SERVER_PORT=${TEST_NGINX_SERVER_PORT:-2984}
export TEST_NGINX_MOCK_PORT=${TEST_NGINX_MOCK_PORT:-29850}
export TEST_NGINX_SERVROOT=${TEST_NGINX_SERVROOT:-$top/t/servroot-valgrind}

# a copy of the module, so that a rebuild meanwhile cannot pull it away
cp "$top/build/ngx_http_tokenrefresh_module.so" "$out/module.so"
export TEST_NGINX_LOAD_MODULES=$out/module.so

status=0
"$top/scripts/test.sh" "$@" || status=$?

# with -q, valgrind writes nothing unless it has something to report
bad=$(grep -l "^==[0-9]*==" "$out"/vg.* 2>/dev/null || true)

if [ -n "$bad" ]; then
    echo "valgrind reported errors:" >&2
    # shellcheck disable=SC2086
    cat $bad >&2
    exit 1
fi

echo "valgrind: no error in $(ls "$out" | wc -l) processes"
exit $status
