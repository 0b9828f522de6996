#!/bin/bash
# Build ngx_http_tokenrefresh_module.so out of tree against Debian's
# nginx-dev (the headers and configure script that match the installed
# nginx binary), the way Debian's own dh_nginx builds dynamic modules.
#
# Usage: scripts/build.sh [BUILD_DIR]     (default: build)
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
src=${NGINX_SRC:-/usr/share/nginx/src}

case "$build" in
    /*) ;;
    *) build=$top/$build ;;
esac

if [ ! -x "$src/configure" ]; then
    echo "build: $src/configure not found; run scripts/setup.sh" >&2
    exit 1
fi

mkdir -p "$build"

# configure once (about 10 s); again only when the glue or this script
# changes.  -fno-semantic-interposition: in a PIC object, calls between the
# module's own global functions may otherwise not be inlined (the filters
# and the handler run on every request)
if [ ! -f "$build/Makefile" ] || [ "$top/config" -nt "$build/Makefile" ] \
   || [ "$0" -nt "$build/Makefile" ]
then
    (
        cd "$src"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC -fno-semantic-interposition $(dpkg-buildflags --get CPPFLAGS)" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$top" \
            --builddir="$build"
    ) > "$build/configure.log" 2>&1 || {
        cat "$build/configure.log" >&2
        exit 1
    }
fi

make -s -f "$build/Makefile" -C "$src" modules

so=$build/ngx_http_tokenrefresh_module.so

# smoke check: the installed nginx accepts the module as binary compatible
printf 'load_module %s;\nevents {}\n' "$so" > "$build/smoke.conf"
/usr/sbin/nginx -g 'error_log /dev/stderr; pid /dev/null;' -t -q \
    -c "$build/smoke.conf" -p "$build"

echo "built $so"
