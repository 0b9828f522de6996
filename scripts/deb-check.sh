#!/bin/bash
# CI for the package: install build/deb's package with apt-get, test a
# configuration that uses the module with the system's nginx, check that
# "make install" and the package refuse each other's files, purge.  Run as
# root on a machine where the system's nginx may be configured (Debian 12).
#
# Usage: scripts/deb-check.sh

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

deb=$(ls build/deb/libnginx-mod-http-tokenrefresh_*.deb | grep -v dbgsym)
conf=/etc/nginx/conf.d/tokenrefresh-check.conf
so=/usr/lib/nginx/modules/ngx_http_tokenrefresh_module.so

say() { printf 'deb-check: %s\n' "$*"; }

cleanup() {
    rm -f "$conf"
    apt-get purge -y -q libnginx-mod-http-tokenrefresh > /dev/null 2>&1 || true
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive

if [ -e "$so" ] && ! dpkg-query -S "$so" > /dev/null 2>&1; then
    say "a \"make install\" copy is in the way: make uninstall first" >&2
    exit 1
fi

say "apt-get install ./$deb"
apt-get install -y -q "./$deb" > /dev/null

test -L /etc/nginx/modules-enabled/50-mod-http-tokenrefresh.conf
test -e "$so"

cat > "$conf" <<'CONF'
tokenrefresh_zone check:1m;

server {
    listen 127.0.0.1:49000;

    location /api/ {
        tokenrefresh check billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://127.0.0.1:49001;
    }

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=billing";
        proxy_pass http://127.0.0.1:49002/token;
    }
}
CONF

say "nginx -t with a configuration that uses the module"
nginx -t

say "\"make install\" refuses the package's files"
if make -s install > /tmp/deb-check.out 2>&1; then
    say "make install overwrote the package's module" >&2
    exit 1
fi
grep -q "belongs to the package libnginx-mod-http-tokenrefresh" \
    /tmp/deb-check.out
cat /tmp/deb-check.out

rm -f "$conf"

say "apt-get purge"
apt-get purge -y -q libnginx-mod-http-tokenrefresh > /dev/null
test ! -e "$so"
test ! -e /etc/nginx/modules-enabled/50-mod-http-tokenrefresh.conf

say "the package refuses \"make install\"'s files"
make -s install
if apt-get install -y -q "./$deb" > /tmp/deb-check.out 2>&1; then
    say "the package overwrote the files of make install" >&2
    exit 1
fi
grep -q 'was installed by "make install"' /tmp/deb-check.out
grep 'make install' /tmp/deb-check.out
make -s uninstall
test ! -e "$so"

# a half-installed package may be left by the refusal: gone with the purge
apt-get purge -y -q libnginx-mod-http-tokenrefresh > /dev/null 2>&1 || true

say "ok"
