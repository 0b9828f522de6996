#!/bin/bash
# A Debian 13 (trixie) chroot with nginx 1.26 and nginx-dev from Debian's
# archive, for running the suite against a second nginx version
# (scripts/matrix.sh).  Test::Nginx is not in trixie: it comes from Debian
# unstable pinned at priority 1, as scripts/setup.sh does on bookworm.
#
# Usage: scripts/trixie.sh                    create or complete the chroot
#        scripts/trixie.sh run [--project] CMD...
#                                             run CMD in the chroot
#        scripts/trixie.sh remove             delete the chroot
#
# The chroot lives in build/trixie (TRIXIE_ROOT to choose another place).
# A first run takes about 2 minutes and leaves about 550 MB; later runs
# only check a marker (0.1 s).  "make clean" removes it with build/.
#
# Mounts: "run" enters a private mount namespace (unshare) and mounts
# /proc, /dev/pts and a fresh /dev/shm there; with --project it also
# bind-mounts this project at its own path, READ-ONLY, plus one writable
# directory, build/trixie-build (the build and the tests' server root).
# Nothing is ever mounted in the host's namespace: a "make clean" or
# "rm -rf build" on the host cannot reach /proc or the project through
# the chroot, and the kernel drops every mount when the command ends, even
# when it is killed.  The mounts are also undone on exit as usual.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
top=$(cd "$(dirname "$0")/.." && pwd)
root=${TRIXIE_ROOT:-$top/build/trixie}
writable=$top/build/trixie-build

case "$root" in
    /*) ;;
    *) root=$top/$root ;;
esac

# what building and testing need, as in scripts/setup.sh; trixie's nginx
# package is the binary (nginx-core is a transitional package there);
# redis-server pulls in redis-tools (redis-cli), and does not start in the
# chroot (policy-rc.d below)
PKGS="nginx nginx-dev libyajl-dev libhiredis-dev libssl-dev gcc make perl \
      dpkg-dev curl libio-socket-ip-perl libcryptx-perl openssl libpcre2-dev \
      zlib1g-dev ca-certificates redis-server"
# JSON::PP is part of perl itself in trixie; the package is taken when the
# archive still has it
OPTIONAL_PKGS="libjson-pp-perl"

marker=$root/.tokenrefresh-ready
# shellcheck disable=SC2086
want=$(printf '%s\n' $PKGS $OPTIONAL_PKGS libtest-nginx-perl/sid | sort | tr '\n' ' ')

die() { echo "trixie: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"

# any mount at or below the chroot in this namespace
mounts_below() {
    awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' \
        /proc/self/mountinfo
}

# the mirror the host uses for bookworm (and its security mirror)
mirror() {
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*//p' \
            /etc/apt/sources.list.d/debian.sources 2>/dev/null \
        | grep -v security | head -n 1 || true)
    if [ -z "$m" ]; then
        m=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }' \
                /etc/apt/sources.list 2>/dev/null || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

security_mirror() {
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*//p' \
            /etc/apt/sources.list.d/debian.sources 2>/dev/null \
        | grep security | head -n 1 || true)
    echo "${m:-http://deb.debian.org/debian-security}"
}


# ---- inside the private mount namespace (see ns_run) ----------------

ns_inner() {
    local project=$1
    shift

    local mounted=()

    undo() {
        local i
        for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
            umount "${mounted[$i]}" 2>/dev/null \
                || umount -l "${mounted[$i]}" 2>/dev/null || true
        done
    }
    trap undo EXIT

    # nothing of what follows may propagate back to the host
    mount --make-rprivate /

    mount -t proc proc "$root/proc"
    mounted+=("$root/proc")

    mkdir -p "$root/dev/pts" "$root/dev/shm"
    mount --bind /dev/pts "$root/dev/pts"
    mounted+=("$root/dev/pts")

    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
    mounted+=("$root/dev/shm")

    if [ "$project" = yes ]; then
        mkdir -p "$root$top" "$writable"
        mount --bind "$top" "$root$top"
        mounted+=("$root$top")
        mount -o remount,bind,ro "$root$top"
        mount --bind "$writable" "$root$writable"
        mounted+=("$root$writable")
    fi

    # the host's resolver; --remove-destination: never write through a
    # symbolic link in the chroot onto a file of the host
    cp -L --remove-destination /etc/resolv.conf "$root/etc/resolv.conf" \
        2>/dev/null || true

    # a clean environment, and the tests' settings passed through
    local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                HOME=/root LC_ALL=C.UTF-8 TERM="${TERM:-dumb}"
                DEBIAN_FRONTEND=noninteractive)
    local v
    for v in $(compgen -e); do
        case "$v" in
            TEST_*|NGINX_SRC|ASAN_OPTIONS) envs+=("$v=${!v}") ;;
        esac
    done

    local status=0
    chroot "$root" /usr/bin/env -i "${envs[@]}" "$@" || status=$?
    undo
    trap - EXIT
    return $status
}

# ns_run yes|no CMD...: CMD in the chroot, in a mount namespace of its own
ns_run() {
    unshare --mount --propagation private -- "$self" __ns "$@"
}


# ---- creating the chroot --------------------------------------------

create() {
    local t0=$SECONDS m sm

    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
       && [ -x "$root/usr/sbin/nginx" ]
    then
        echo "trixie: ready in $root ($("$self" run nginx -v 2>&1 | sed 's/.*: //'))"
        return 0
    fi

    [ -z "$(mounts_below)" ] || die "something is mounted below $root"

    if ! command -v debootstrap > /dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends debootstrap
    fi

    m=$(mirror)
    sm=$(security_mirror)

    # an interrupted debootstrap cannot be resumed: start again
    if [ -d "$root" ] && [ ! -x "$root/usr/bin/apt-get" ]; then
        echo "trixie: removing an incomplete chroot in $root"
        rm -rf --one-file-system "$root"
    fi

    if [ ! -d "$root" ]; then
        mkdir -p "$(dirname "$root")"
        rm -rf --one-file-system "$root.tmp"
        echo "trixie: debootstrap trixie from $m into $root"
        # in a mount namespace of its own too: the /proc and /sys that
        # debootstrap mounts in the target vanish with it, even on failure
        unshare --mount --propagation private -- \
            debootstrap --variant=minbase trixie "$root.tmp" "$m" \
            || die "debootstrap failed (log: $root.tmp/debootstrap/debootstrap.log)"
        mv "$root.tmp" "$root"
    fi

    # no service starts in the chroot (nginx's postinst would listen on
    # port 80 of the host's network)
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"

    rm -f "$root/etc/apt/sources.list"
    cat > "$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $m
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $sm
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > "$root/etc/apt/sources.list.d/sid.sources" <<SRC
Types: deb
URIs: $m
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > "$root/etc/apt/preferences.d/sid" <<PIN
Package: *
Pin: release n=sid
Pin-Priority: 1
PIN

    # how the host reaches the archive: its proxy, and whether it checks
    # the Release files' dates (a machine whose clock runs past a frozen
    # archive's Valid-Until turns those checks off; apt in the chroot then
    # needs the same, or sid's Release counts as expired)
    apt-config dump \
        | grep -E '^Acquire::(Check-Valid-Until|Check-Date|Retries|ForceIPv4|https?::Proxy) ' \
        > "$root/etc/apt/apt.conf.d/99tokenrefresh-host"

    # smaller and faster: no translations, manuals or documentation
    echo 'Acquire::Languages "none";' \
        > "$root/etc/apt/apt.conf.d/99tokenrefresh-slim"
    cat > "$root/etc/dpkg/dpkg.cfg.d/99tokenrefresh-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG

    local optional="" p
    ns_run no apt-get update -q
    for p in $OPTIONAL_PKGS; do
        if ns_run no apt-cache show --no-all-versions "$p" 2>/dev/null \
           | grep -q "^Version:"
        then
            optional="$optional $p"
        fi
    done

    # debootstrap takes trixie's main suite only: the security updates
    # too (sid, pinned at 1, never upgrades anything)
    ns_run no apt-get upgrade -y -q
    # shellcheck disable=SC2086
    ns_run no apt-get install -y -q --no-install-recommends $PKGS $optional
    ns_run no apt-get install -y -q --no-install-recommends \
        libtest-nginx-perl/sid
    # the package lists (about 200 MB with sid's) are fetched again when
    # the package set changes
    ns_run no apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*

    ns_run no perl -MTest::Nginx::Socket -e1 \
        || die "Test::Nginx does not load in the chroot"

    echo "$want" > "$marker"
    echo "trixie: ready in $root after $((SECONDS - t0)) s," \
         "$(du -sh --one-file-system "$root" | cut -f1)," \
         "$("$self" run nginx -v 2>&1 | sed 's/.*: //')"
}

remove() {
    [ -d "$root" ] || return 0
    [ -z "$(mounts_below)" ] || die "something is mounted below $root"
    rm -rf --one-file-system "$root"
    echo "trixie: removed $root"
}


case "${1:-}" in
    __ns)
        shift
        ns_inner "$@"
        ;;
    run)
        shift
        project=no
        if [ "${1:-}" = --project ]; then
            project=yes
            shift
        fi
        [ $# -gt 0 ] || die "run: no command"
        [ -x "$root/usr/bin/env" ] || die "no chroot in $root: run $0"
        ns_run "$project" "$@"
        ;;
    remove)
        remove
        ;;
    "")
        create
        ;;
    *)
        die "usage: $0 [run [--project] CMD... | remove]"
        ;;
esac
