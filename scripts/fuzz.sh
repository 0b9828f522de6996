#!/bin/bash
# Build the libFuzzer target (fuzz/ngx_http_tokenrefresh_fuzz.c: the token
# response parser and token checks, with nginx's pool, array and string
# code from Debian's nginx source) and run it.  The committed corpus seeds
# it; new inputs go to build/fuzz/work, findings to build/fuzz/crashes.
#
# Usage: scripts/fuzz.sh [seconds]    (default 600)
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-600}
out=$top/build/fuzz
src=$("$top/scripts/nginx-source.sh")
cfg=$out/objs

mkdir -p "$out/work" "$out/crashes" "$cfg"

# nginx's generated headers (ngx_auto_config.h), from a minimal configure
if [ ! -f "$cfg/ngx_auto_config.h" ]; then
    (cd "$src" && ./configure --builddir="$cfg" --with-compat \
         --without-http_rewrite_module --without-http_gzip_module) \
        > "$out/configure.log" 2>&1
fi

inc=""
for d in src/core src/event src/event/modules src/os/unix src/http \
         src/http/modules src/http/v2
do
    inc="$inc -I$src/$d"
done

# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined \
    $inc -I"$cfg" -I"$top/ngx_http_tokenrefresh_module" \
    "$top/fuzz/ngx_http_tokenrefresh_fuzz.c" \
    "$top/ngx_http_tokenrefresh_module/ngx_http_tokenrefresh_json.c" \
    "$src/src/core/ngx_palloc.c" "$src/src/core/ngx_array.c" \
    "$src/src/core/ngx_string.c" "$src/src/os/unix/ngx_alloc.c" \
    -lyajl -o "$out/fuzz-token"

# seed: the first byte chooses the format the file is written for
for f in "$top"/fuzz/corpus/*; do
    name=$(basename "$f")
    case "$name" in
        *-nested-*) prefix='\001' ;;
        *)          prefix='\000' ;;
    esac
    { printf "$prefix"; cat "$f"; } > "$out/work/seed-$name"
done

"$out/fuzz-token" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$out/crashes/" -max_len=70000 \
    "$out/work" 2>&1 | tee "$out/fuzz.log" | grep -E "^#|stat::|ERROR|SUMMARY" \
    | grep -vE "^#[0-9]+\s+(NEW|REDUCE|pulse)" || true

if ls "$out"/crashes/* > /dev/null 2>&1; then
    echo "fuzz: findings in $out/crashes" >&2
    exit 1
fi

grep -E "stat::number_of_executed_units" "$out/fuzz.log"
echo "fuzz: no finding in $seconds s"
