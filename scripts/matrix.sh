#!/bin/bash
# The Test::Nginx suite against two nginx versions from Debian's archive:
# the host's (Debian 12, nginx 1.22) and Debian 13's (nginx 1.26) in the
# chroot of scripts/trixie.sh.  The same t/ files, one version after the
# other (they use the same ports); a summary at the end.  Exits non-zero
# if either version fails.
#
# Usage: scripts/matrix.sh [test files or prove arguments, as scripts/test.sh]
#
#   MATRIX="host trixie"   the versions to run (default: both)
#
# On the host: scripts/build.sh into build/, scripts/test.sh.  In the
# chroot: the same scripts, the project mounted read-only at its own path,
# the module built against trixie's nginx-dev into build/trixie-build/
# (the only writable directory of the project there), the server root in
# build/trixie-build/servroot.  Logs: build/matrix/<version>.log.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

logs=$top/build/matrix
mkdir -p "$logs"

versions=${MATRIX:-host trixie}
summary=()
failed=0

# the prove summary of a log: the first failed tests by name, the failed
# files, a bail-out, "Result: ..."
prove_summary() {
    local n
    n=$(grep -c "^#   Failed test" "$1")
    grep "^#   Failed test" "$1" | head -n 12 | sed 's/^#   Failed test /      - /'
    [ "$n" -le 12 ] || echo "      - ... $((n - 12)) more in $1"
    sed -n '/^Test Summary Report/,$p' "$1" \
        | grep -E '^(t/|  Non-zero|  Parse errors|Result:|FAILED--)' \
        | cut -c1-300 | sed 's/^/      /'
    grep -q '^Result:' "$1" || echo "      (no prove result: see $1)"
}

run_host() {
    local log=$logs/host.log t0 t1 status=0 version

    {
        scripts/setup.sh --check || scripts/setup.sh
    } || return 1

    version=$(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //')
    echo "=== $version (host, Debian 12) ==="

    t0=$SECONDS
    scripts/build.sh build 2>&1 | tee "$log" || status=1
    t1=$SECONDS

    if [ $status = 0 ]; then
        scripts/test.sh "$@" 2>&1 | tee -a "$log" || status=$?
    fi

    record "$version (host, Debian 12)" $status $((t1 - t0)) \
           $((SECONDS - t1)) "$log"
}

run_trixie() {
    local log=$logs/trixie.log t0 t1 status=0 version
    local out=$top/build/trixie-build

    scripts/trixie.sh || return 1

    version=$(scripts/trixie.sh run nginx -v 2>&1 | sed 's/.*: //')
    echo "=== $version (chroot, Debian 13) ==="

    t0=$SECONDS
    # shellcheck disable=SC2016
    scripts/trixie.sh run --project /bin/bash -c \
        'cd "$1" && exec scripts/build.sh "$2"' _ "$top" "$out" \
        2>&1 | tee "$log" || status=1
    t1=$SECONDS

    if [ $status = 0 ]; then
        # shellcheck disable=SC2016
        TEST_NGINX_BINARY=/usr/sbin/nginx \
        TEST_NGINX_LOAD_MODULES=$out/ngx_http_tokenrefresh_module.so \
        TEST_NGINX_SERVROOT=$out/servroot \
        scripts/trixie.sh run --project /bin/bash -c \
            'cd "$1" && shift && exec scripts/test.sh "$@"' _ "$top" "$@" \
            2>&1 | tee -a "$log" || status=$?
    fi

    record "$version (chroot, Debian 13)" $status $((t1 - t0)) \
           $((SECONDS - t1)) "$log"
}

# record LABEL STATUS BUILD_SECONDS TEST_SECONDS LOG
record() {
    local result=PASS
    [ "$2" = 0 ] || { result=FAIL; failed=1; }
    summary+=("$(printf '%s  %-34s build %3d s, tests %4d s\n%s' \
                        "$result" "$1" "$3" "$4" "$(prove_summary "$5")")")
}

for v in $versions; do
    case "$v" in
        host)   run_host "$@" || record "host: setup failed" 1 0 0 /dev/null ;;
        trixie) run_trixie "$@" || record "trixie: chroot setup failed" 1 0 0 /dev/null ;;
        *)      echo "matrix: unknown version \"$v\" (host, trixie)" >&2; exit 2 ;;
    esac
done

echo
echo "=== matrix summary ==="
for s in "${summary[@]}"; do
    echo "$s"
done

exit $failed
