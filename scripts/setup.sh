#!/bin/sh
# Install what building and testing ngx_http_tokenrefresh_module needs on
# Debian 12 (bookworm).  Idempotent: a second run installs nothing.
#
# Test::Nginx is not packaged for bookworm; Debian unstable ships it as
# libtest-nginx-perl (pure Perl, all dependencies in bookworm).  We add an
# unstable source pinned at priority 1, so apt never takes anything else
# from it, and install that single package from there.  The system is not
# upgraded.
#
# Usage: scripts/setup.sh [--check] [extra...]
#   --check   exit 1 if something is missing, install nothing
#   extra     also what one more target needs: fuzz (clang), valgrind,
#             bench (wrk, gnuplot, Debian's lua module for a comparison),
#             deb (debhelper, lintian)
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -eu

# build, test, and the AddressSanitizer nginx built from Debian's source;
# the fleet tests start their own redis-server (which pulls in redis-tools,
# their redis-cli)
PKGS="nginx-core nginx-dev libyajl-dev libhiredis-dev libssl-dev perl make \
      gcc curl libio-socket-ip-perl libjson-pp-perl libcryptx-perl openssl \
      dpkg-dev libpcre2-dev zlib1g-dev redis-server"

check=no

for arg in "$@"; do
    case "$arg" in
        --check)  check=yes ;;
        fuzz)     PKGS="$PKGS clang libclang-rt-14-dev" ;;
        valgrind) PKGS="$PKGS valgrind" ;;
        bench)    PKGS="$PKGS wrk gnuplot-nox valgrind libnginx-mod-http-lua \
                        libnginx-mod-http-ndk" ;;
        deb)      PKGS="$PKGS debhelper dpkg-dev lintian fakeroot" ;;
        *)        echo "setup: unknown argument \"$arg\"" >&2; exit 2 ;;
    esac
done

missing=""

for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"
    then
        missing="$missing $p"
    fi
done

have_tn=yes
perl -MTest::Nginx::Socket -e1 2>/dev/null || have_tn=no

if [ "$check" = yes ]; then
    if [ -n "$missing" ] || [ "$have_tn" = no ]; then
        exit 1
    fi
    exit 0
fi

if [ -z "$missing" ] && [ "$have_tn" = yes ]; then
    echo "setup: everything is installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

export DEBIAN_FRONTEND=noninteractive

if [ "$have_tn" = no ]; then
    # Use the mirror the system already uses for bookworm.
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' \
                 /etc/apt/sources.list.d/debian.sources 2>/dev/null \
             | grep -v security | head -n 1)
    if [ -z "$mirror" ]; then
        mirror=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }' \
                     /etc/apt/sources.list 2>/dev/null || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}

    if [ ! -f /etc/apt/sources.list.d/sid.sources ]; then
        $SUDO sh -c "cat > /etc/apt/sources.list.d/sid.sources" <<SRC
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi

    if [ ! -f /etc/apt/preferences.d/sid ]; then
        $SUDO sh -c "cat > /etc/apt/preferences.d/sid" <<PIN
Package: *
Pin: release n=sid
Pin-Priority: 1
PIN
    fi
fi

$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $PKGS

if [ "$have_tn" = no ]; then
    $SUDO apt-get install -y -q --no-install-recommends libtest-nginx-perl/sid
fi

# nginx-core starts a system nginx on port 80 when it is installed, and
# redis-server a system redis on 127.0.0.1:6379; the tests and the demo use
# their own instances and need neither.

echo "setup: done"
