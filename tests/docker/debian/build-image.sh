#!/bin/sh
# Builds tandem/debian:12, a minimal Debian 12 (bookworm) image for the package
# install tests (tests/tests/docker/package.rs, systemd.rs), without an image
# registry: debootstrap makes a minbase root filesystem from the machine's
# configured Debian mirror and `docker import` turns it into an image. The only
# package added to minbase is systemd-sysv (systemd as /sbin/init, as on every
# Debian 12 server), so that the unit can be run under a real systemd; the tests
# must find that the .deb installs with what such a bare Debian 12 has.
#
# Idempotent: the tag carries the hash of this script (tandem/debian:12-HASH), and
# an image of that tag is kept as it is; images of earlier versions of the script
# are removed. Prints the tag on standard output.
# TANDEM_DEBIAN_REBUILD=1 forces a new debootstrap.
#
# Needs root and a running Docker daemon; installs debootstrap with apt-get if it
# is missing.
#
# Environment:
#   TANDEM_DEBIAN_MIRROR   Debian mirror (default: the one apt uses for bookworm)
#   TANDEM_DEBIAN_REBUILD=1   build even if the image exists
set -eu

here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
repo=tandem/debian
recipe=$(sha256sum <"$here/build-image.sh" | cut -c1-16)
image="$repo:12-$recipe"

say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, docker)"
docker info >/dev/null 2>&1 || die "needs a running Docker daemon"

# Two builds at once would debootstrap twice and race for the tag; the second one
# waits and then finds the image.
exec 9>/run/lock/tandem-debian-image.lock
flock 9

[ "${TANDEM_DEBIAN_REBUILD:-0}" != 1 ] || docker image rm "$image" >/dev/null 2>&1 || true
if docker image inspect "$image" >/dev/null 2>&1; then
    say "reusing $image"
    echo "$image"
    exit 0
fi

# The mirror apt already uses for the suite (tests/docker/find-mirror.sh).
find_mirror() { sh "$here/../find-mirror.sh" "$suite"; }
mirror=${TANDEM_DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
[ -n "$mirror" ] || die "no Debian $suite mirror in /etc/apt/sources.list*; set TANDEM_DEBIAN_MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends debootstrap >&2; }
fi

started=$(date +%s)
# /var/tmp rather than /tmp: the root filesystem is ~150 MB and /tmp may be a
# small tmpfs.
work=$(mktemp -d /var/tmp/tandem-debian-image.XXXXXX)
root=$work/rootfs
log=$work/build.log
cleanup() {
    rc=$?
    if [ "$rc" != 0 ] && [ -f "$log" ]; then
        say "failed; the last lines of the build log:"
        tail -n 40 "$log" >&2
    fi
    # debootstrap mounts /proc and /sys in the root while it works and may leave
    # them after a failure; unmount them (deepest first) before rm can reach the
    # host's through them.
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts |
        sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "debootstrap $suite (minbase + systemd-sysv) from $mirror"
debootstrap --variant=minbase --include=systemd-sysv "$suite" "$root" "$mirror" >>"$log" 2>&1
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/apt/* \
    "$root/etc/hostname" "$root/etc/resolv.conf"

say "docker import $image"
tar -C "$root" --numeric-owner -c . | docker import - "$image" >>"$log"
# Images of earlier versions of this script are of no further use.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -vxF "$image" |
    while read -r stale; do docker image rm "$stale" >/dev/null 2>&1 || true; done
say "built $image in $(($(date +%s) - started)) s"
echo "$image"
