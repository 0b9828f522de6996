#!/bin/bash
# Build an AddressSanitizer nginx from Debian's nginx source, with this
# module compiled in (--add-module: the static build path), and run the
# Test::Nginx suite against it.  Fails on any ASan report.
#
# Usage: scripts/asan.sh [test files]
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build/asan
src=$("$top/scripts/nginx-source.sh")

mkdir -p "$build"

if [ ! -f "$build/Makefile" ] || [ "$top/config" -nt "$build/Makefile" ]
then
    (
        cd "$src"
        # shellcheck disable=SC1091
        . /usr/share/nginx/src/conf_flags
        ./configure \
            --with-cc-opt="-g -O1 -fno-omit-frame-pointer -fsanitize=address -DNGX_DEBUG_PALLOC=1" \
            --with-ld-opt="-fsanitize=address" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-module="$top" \
            --builddir="$build"
    ) > "$build/configure.log" 2>&1 || {
        cat "$build/configure.log" >&2
        exit 1
    }
fi

make -s -j"$(nproc)" -f "$build/Makefile" -C "$src" > "$build/make.log" 2>&1 || {
    tail -50 "$build/make.log" >&2
    exit 1
}

reports=$build/reports
rm -rf "$reports"
mkdir -p "$reports"

# ASan reports go to files of their own (also those written when a
# worker exits), not into error logs a test may not look at.  Test::Nginx
# appends the test's name to log_path, and expects ',' between options.
export ASAN_OPTIONS="detect_leaks=0,detect_odr_violation=0,log_path=$reports/asan"
export TEST_NGINX_BINARY=$build/nginx
export TEST_NGINX_LOAD_MODULES=" "

status=0
"$top/scripts/test.sh" "$@" || status=$?

if ls "$reports"/asan* > /dev/null 2>&1; then
    echo "AddressSanitizer reports:" >&2
    cat "$reports"/asan* >&2
    exit 1
fi

echo "asan: no AddressSanitizer report"
exit $status
