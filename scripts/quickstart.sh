#!/usr/bin/env bash
# Tandem quick start: installs what is needed (idempotently) and then either runs
# the main job or the whole test suite.
#
#   sudo ./scripts/quickstart.sh demo   # the main job: a change stream, then tandem demo
#   sudo ./scripts/quickstart.sh test   # the whole test suite (what CI runs)
set -euo pipefail

cd "$(dirname "$0")/.."

die() { echo "quickstart: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (eBPF, fanotify and namespaces need it): sudo $0 ${1:-}"

install_packages() {
    local need=()
    for pkg in clang llvm libbpf-dev bpftool gcc make pkg-config attr acl rsync util-linux iproute2 debootstrap dpkg-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "quickstart: installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            echo "quickstart: installing the Rust toolchain with rustup"
            command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
            curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

demo() {
    cargo build --quiet -p tandem
    local bin=target/debug/tandem
    local dir
    dir=$(mktemp -d /var/tmp/tandem-capture.XXXXXX)
    local out="$dir.stream"
    mkdir -p "$dir/data"
    echo "quickstart: capturing changes under $dir/data"
    "$bin" capture --watch "$dir/data" --json >"$out" &
    local pid=$!
    trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir" "$out"' EXIT
    for _ in $(seq 100); do grep -q '"ready"' "$out" 2>/dev/null && break; sleep 0.1; done
    grep -q '"ready"' "$out" || die "capture did not start"
    # A small scripted workload: data ranges, names and metadata.
    (
        cd "$dir/data"
        mkdir -p app/logs
        printf 'hello\n' > app/config
        dd if=/dev/urandom of=app/db bs=4096 count=4 status=none
        dd if=/dev/zero of=app/db bs=100 count=1 seek=50 conv=notrunc status=none
        printf 'line\n' >> app/logs/today.log
        mv app/logs/today.log app/logs/yesterday.log
        ln app/config app/config.hardlink
        ln -s config app/config.symlink
        chmod 600 app/config
        setfattr -n user.demo -v 1 app/db
        truncate -s 8000 app/db
        rm app/config.hardlink
    )
    sleep 1
    kill -TERM "$pid"
    wait "$pid" || true
    echo "quickstart: the change stream (docs/capture-stream.md):"
    cat "$out"
    echo "quickstart: $(wc -l <"$out") records"
    rm -rf "$dir" "$out"
    trap - EXIT
}

# Failover on one machine: `tandem demo` builds a two-node lab with a sample
# service, loses the primary while a client writes through the VIP, checks that
# every acknowledged write survived, brings the node back and swaps back, then
# prints a summary and removes the lab. It exits non-zero if a write was lost.
failover_demo() {
    echo "quickstart: running tandem demo (about a minute)"
    target/debug/tandem demo
}

# The Docker tests need a running Docker engine (Debian's docker.io); their
# PostgreSQL image is built from Debian packages with debootstrap (installed above).
ensure_docker() {
    if ! command -v docker >/dev/null; then
        echo "quickstart: installing docker.io"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    docker info >/dev/null 2>&1 || systemctl start docker 2>/dev/null || service docker start >/dev/null 2>&1 || true
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info); the Docker tests need it"
}

# The console's browser test (failover tests, `console`) drives Debian's headless
# Chromium; only the test suite needs it, so the demo does not install it.
ensure_chromium() {
    if ! command -v chromium >/dev/null; then
        echo "quickstart: installing chromium"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
}

# rpm installs the .rpm into a scratch Debian root in the package test; only the
# test suite needs it. (cargo-deb and cargo-generate-rpm are installed by
# `cargo xtask package` itself.)
ensure_rpm() {
    if ! command -v rpm >/dev/null; then
        echo "quickstart: installing rpm"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null
    fi
}

install_packages
case "${1:-}" in
    demo) demo && failover_demo ;;
    test) ensure_docker && ensure_chromium && ensure_rpm && cargo xtask test ;;
    *) die "usage: $0 demo|test" ;;
esac
