#!/bin/bash
# Build the Debian package libnginx-mod-http-tokenrefresh, the way Debian
# builds its own nginx module packages (nginx-dev's nginx_mod debhelper
# build system and dh_nginx), from a copy of the tracked files, and check
# it with lintian.  The .deb lands in build/deb/.
#
# Usage: scripts/deb.sh

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/build/deb

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
src=$out/libnginx-mod-http-tokenrefresh-$version

rm -rf "$out"
mkdir -p "$src"

# what git tracks, uncommitted changes included: never build/ or t/servroot
( cd "$top" && git ls-files -z --cached --others --exclude-standard ) \
    | ( cd "$top" && xargs -0 cp --parents -t "$src" )

t0=$(date +%s)

( cd "$src" && dpkg-buildpackage -b -us -uc ) > "$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2
    echo "deb: the build failed, see $out/build.log" >&2
    exit 1
}

deb=$(ls "$out"/libnginx-mod-http-tokenrefresh_"$version"_*.deb | grep -v dbgsym)
changes=$(ls "$out"/libnginx-mod-http-tokenrefresh_"$version"_*.changes)

echo "deb: built $deb in $(( $(date +%s) - t0 )) s"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/deb:   \1:/p'
dpkg-deb --contents "$deb" | awk '{ print "deb:   " $6 }'

# lintian: tags that remain are explained in docs/packaging.md
if command -v lintian > /dev/null; then
    lintian --info --display-info --pedantic "$changes" | tee "$out/lintian.log" \
        || true
    if grep -q '^E: ' "$out/lintian.log"; then
        echo "deb: lintian reports errors" >&2
        exit 1
    fi
fi
