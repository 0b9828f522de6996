#!/bin/bash
# Build the module against an nginx configured WITHOUT --with-debug.
#
# Debian's nginx is built --with-debug: NGX_DEBUG is on, and the
# ngx_log_debugN() macros use their arguments.  Without it they expand to
# nothing, so a variable used only in a debug macro becomes "set but not
# used", and nginx's -Werror fails the build: what any nginx built from
# nginx.org's defaults (or a distribution without --with-debug) would hit.
#
# This runs nginx-dev's own configure (/usr/share/nginx/src, or NGINX_SRC)
# with Debian's flags minus --with-debug into build/nodebug, and
# "make modules": a compile check only, the module is not loaded.
#
# Usage: scripts/nodebug.sh [BUILD_DIR]     (default: build/nodebug)
#
# Against Debian 13's nginx 1.26 (the chroot of scripts/trixie.sh):
#   scripts/trixie.sh run --project /bin/bash -c \
#       "cd $PWD && scripts/nodebug.sh build/trixie-build/nodebug"
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build/nodebug}
src=${NGINX_SRC:-/usr/share/nginx/src}

case "$build" in
    /*) ;;
    *) build=$top/$build ;;
esac

if [ ! -x "$src/configure" ]; then
    echo "nodebug: $src/configure not found; run scripts/setup.sh" >&2
    exit 1
fi

mkdir -p "$build"

# nginx adds -Werror itself (auto/cc/gcc), unless CFLAGS is set in the
# environment: then it takes CFLAGS instead of its own flags
unset CFLAGS

if [ ! -f "$build/Makefile" ] || [ "$top/config" -nt "$build/Makefile" ] \
   || [ "$0" -nt "$build/Makefile" ]
then
    (
        cd "$src"
        # shellcheck disable=SC1091
        . ./conf_flags
        flags=()
        for f in "${NGX_CONF_FLAGS[@]}"; do
            [ "$f" = --with-debug ] || flags+=("$f")
        done
        ./configure \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
            "${flags[@]}" \
            --add-dynamic-module="$top" \
            --builddir="$build"
    ) > "$build/configure.log" 2>&1 || {
        cat "$build/configure.log" >&2
        exit 1
    }
fi

if grep -q '^#define NGX_DEBUG ' "$build/ngx_auto_config.h"; then
    echo "nodebug: NGX_DEBUG is still defined in $build" >&2
    exit 1
fi

if ! grep -q -- '-Werror' "$build/Makefile"; then
    echo "nodebug: the build does not use -Werror" >&2
    exit 1
fi

# -k: every file is compiled, so that all the errors show at once
make -k -s -f "$build/Makefile" -C "$src" modules || {
    echo "nodebug: the module does not compile without --with-debug" >&2
    exit 1
}

echo "nodebug: $build/ngx_http_tokenrefresh_module.so compiles without" \
     "--with-debug ($(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' \
                           "$src/src/core/nginx.h"))"
