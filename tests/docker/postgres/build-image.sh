#!/bin/sh
# Builds tandem/postgres:15, PostgreSQL 15 from Debian 12's own packages, without
# an image registry: debootstrap makes a minimal bookworm root filesystem from the
# machine's configured Debian mirror, PostgreSQL is installed into it with apt in
# a chroot, `docker import` turns it into a base image, and the Dockerfile next to
# this script adds the entrypoint and the health check.
#
# Idempotent: the image carries the hash of its recipe (this script, the
# Dockerfile and the entrypoint) as the label org.tandem.recipe, and an image
# with the same tag and hash is kept as it is. The imported root filesystem is
# kept too, as tandem/postgres-base:15-HASH with the hash of the part of this
# script that makes it (build_base), so that a change of the entrypoint or the
# Dockerfile rebuilds in well under a minute.
# TANDEM_PG_REBUILD=1 forces a new debootstrap (the mirror's packages may have
# moved on while the recipe stayed the same).
#
# Needs root and a running Docker daemon; installs debootstrap with apt-get if it
# is missing.
#
# Environment:
#   TANDEM_PG_IMAGE       tag to build (default tandem/postgres:15)
#   TANDEM_DEBIAN_MIRROR  Debian mirror (default: the one apt uses for bookworm)
#   TANDEM_PG_REBUILD=1   build even if the image is up to date
set -eu

here=$(cd "$(dirname "$0")" && pwd)
image=${TANDEM_PG_IMAGE:-tandem/postgres:15}
suite=bookworm
packages="postgresql-15 postgresql-contrib postgresql-client-15"

say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }

recipe=$(cat "$here/build-image.sh" "$here/Dockerfile" "$here/entrypoint.sh" |
    sha256sum | cut -c1-16)
# The base image depends only on the function that makes it and its inputs.
base_recipe=$({
    sed -n '/^build_base() {/,/^}/p' "$here/build-image.sh"
    echo "$suite $packages"
} | sha256sum | cut -c1-16)
base_repo=tandem/postgres-base
base="$base_repo:15-$base_recipe"

current() {
    docker image inspect --format '{{index .Config.Labels "org.tandem.recipe"}}' \
        "$image" 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, docker)"
docker info >/dev/null 2>&1 || die "needs a running Docker daemon"

# Two builds at once would debootstrap twice and race for the tag; the second
# one waits and then finds the image up to date.
exec 9>/run/lock/tandem-postgres-image.lock
flock 9

if [ "$(current)" = "$recipe" ] && [ "${TANDEM_PG_REBUILD:-0}" != 1 ]; then
    say "$image is up to date (recipe $recipe)"
    exit 0
fi

# The mirror apt already uses for the suite (tests/docker/find-mirror.sh).
find_mirror() { sh "$here/../find-mirror.sh" "$suite"; }

started=$(date +%s)
old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
[ "${TANDEM_PG_REBUILD:-0}" != 1 ] || docker image rm "$base" >/dev/null 2>&1 || true

# The root filesystem, unless the base image of this script's version exists.
build_base() {
    mirror=${TANDEM_DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
    [ -n "$mirror" ] || die "no Debian $suite mirror in /etc/apt/sources.list*; set TANDEM_DEBIAN_MIRROR"

    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends debootstrap >&2; }
    fi

    # /var/tmp rather than /tmp: the root filesystem is a few hundred MB and /tmp may
    # be a small tmpfs.
    work=$(mktemp -d /var/tmp/tandem-pg-image.XXXXXX)
    root=$work/rootfs
    log=$work/build.log

    # Unmounts whatever is still mounted under the root filesystem (a failed chroot
    # step can leave /proc there), deepest first, so that rm cannot reach the host's
    # /proc through it.
    unmount_root() {
        awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts |
            sort -r | while read -r m; do umount -l "$m" || true; done
    }

    cleanup() {
        rc=$?
        if [ "$rc" != 0 ] && [ -f "$log" ]; then
            say "failed; the last lines of the build log:"
            tail -n 40 "$log" >&2
        fi
        unmount_root
        rm -rf --one-file-system "$work"
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    say "debootstrap $suite (minbase) from $mirror"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >>"$log" 2>&1

    # Daemons must not start inside the chroot, and the Debian packaging must not
    # create its default cluster in /var/lib/postgresql/15/main: the entrypoint
    # creates the cluster in the (replicated) data directory on first start.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    mkdir -p "$root/etc/postgresql-common"
    echo "create_main_cluster = false" >"$root/etc/postgresql-common/createcluster.conf"
    # A fixed uid/gid (999, as the Docker Hub postgres image uses) so that both
    # nodes' copies of a data directory have the same owner whatever else differs.
    chroot "$root" groupadd --system --gid 999 postgres
    chroot "$root" useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
        --no-create-home --shell /bin/bash postgres

    mount -t proc proc "$root/proc"
    say "installing $packages"
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update >>"$log" 2>&1
    # shellcheck disable=SC2086 # the package list is meant to be split
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends $packages >>"$log" 2>&1
    chroot "$root" /usr/lib/postgresql/15/bin/postgres --version >&2
    for tool in pgbench pg_isready initdb psql; do
        [ -x "$root/usr/lib/postgresql/15/bin/$tool" ] || die "$tool is missing from the packages"
    done
    [ -f "$root/usr/share/postgresql/15/extension/amcheck.control" ] || die "amcheck is missing"
    umount "$root/proc"

    # Smaller image: no package lists or caches, no documentation but the copyright
    # notices, no translations.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/var/cache/debconf/*-old "$root"/var/log/apt/* "$root"/var/log/dpkg.log \
        "$root/usr/sbin/policy-rc.d" "$root/etc/hostname" "$root/etc/resolv.conf"
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    find "$root/usr/share/doc" -depth -type d -empty -delete
    # The socket directory, writable by postgres also when the container is started
    # with --user postgres (the entrypoint then cannot create it). It is made under
    # /run: /var/run is an absolute symlink to /run, which outside the chroot would
    # lead to the host's /run.
    install -d -o 999 -g 999 -m 2775 "$root/run/postgresql"
    install -d -o 999 -g 999 -m 755 "$root/var/lib/postgresql"

    say "docker import $base"
    tar -C "$root" --numeric-owner -c . | docker import - "$base" >>"$log"
    unmount_root
    rm -rf --one-file-system "$work"
    trap - EXIT INT TERM
    # Base images of earlier versions of this script are of no further use.
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$base_repo" | grep -vxF "$base" |
        while read -r stale; do docker image rm "$stale" >/dev/null 2>&1 || true; done
}

if docker image inspect "$base" >/dev/null 2>&1; then
    say "reusing $base"
else
    build_base
fi

say "docker build $image"
# The legacy builder: BuildKit needs buildx, which Debian 12's docker.io lacks.
# It prints a deprecation notice on every build, so its messages are shown only
# when it fails.
build_err=$(mktemp)
if ! DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$base" \
    --build-arg "RECIPE=$recipe" -t "$image" "$here" >/dev/null 2>"$build_err"; then
    cat "$build_err" >&2
    rm -f "$build_err"
    die "docker build failed"
fi
rm -f "$build_err"
[ "$(current)" = "$recipe" ] || die "the built image does not carry recipe $recipe"

new_id=$(docker image inspect --format '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The previous build is now untagged; it goes unless a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
size=$(docker image inspect --format '{{.Size}}' "$image")
say "built $image (recipe $recipe, $((size / 1048576)) MiB) in $(($(date +%s) - started)) s"
