#!/bin/bash
# Unpack the source of the nginx version Debian ships (1.22.1) into
# build/nginx-src, for the AddressSanitizer build and the fuzzer.  The
# upstream tarball comes from Debian's archive (apt-get source); a deb-src
# entry for bookworm is added once.  Prints the source directory.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/nginx-src
version=$(dpkg-query -W -f='${Version}' nginx-dev | sed 's/-.*//')
src=$dir/nginx-$version

if [ -x "$src/configure" ]; then
    echo "$src"
    exit 0
fi

mkdir -p "$dir"
cd "$dir"

if ! ls nginx_"$version".orig.tar.* > /dev/null 2>&1; then
    if [ ! -f /etc/apt/sources.list.d/tokenrefresh-src.sources ]; then
        mirror=$(sed -n 's/^URIs:[[:space:]]*//p' \
                     /etc/apt/sources.list.d/debian.sources 2>/dev/null \
                 | grep -v security | head -n 1)
        mirror=${mirror:-http://deb.debian.org/debian}
        cat > /etc/apt/sources.list.d/tokenrefresh-src.sources <<SRC
Types: deb-src
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -q >&2
    fi

    # the .dsc of a security update may be missing from the mirror; the
    # upstream tarball, which is all we need, is shared by every revision
    apt-get source --download-only -q nginx >&2 || true

    if ! ls nginx_"$version".orig.tar.* > /dev/null 2>&1; then
        echo "nginx-source: could not download nginx $version" >&2
        exit 1
    fi
fi

tar -xf nginx_"$version".orig.tar.*
echo "$src"
