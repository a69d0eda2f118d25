#!/usr/bin/env bash
# Tandem quick start: installs what is needed (idempotently) and then either runs
# the main job or the whole test suite.
#
#   sudo ./scripts/quickstart.sh demo   # the main job
#   sudo ./scripts/quickstart.sh test   # the whole test suite (what CI runs)
set -euo pipefail

cd "$(dirname "$0")/.."

die() { echo "quickstart: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (eBPF, fanotify and namespaces need it): sudo $0 ${1:-}"

install_packages() {
    local need=()
    for pkg in clang llvm libbpf-dev bpftool gcc make pkg-config attr acl rsync util-linux iproute2 debootstrap; do
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
    dir=$(mktemp -d /var/tmp/tandem-demo.XXXXXX)
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

# The replicated pair: two agents in network namespaces, a write that waits for the
# peer, a node that leaves and returns to a range-only resync.
replication_demo() {
    local bin=target/debug/tandem
    export TANDEM_LAB_PREFIX=tandem-demo TANDEM_LAB_DIR=/var/tmp/tandem-demo-lab
    trap '"$bin" lab down >/dev/null 2>&1 || true' EXIT
    echo "quickstart: bringing up a two-node lab (node1 primary, node2 secondary)"
    "$bin" lab up >/dev/null
    local base=$TANDEM_LAB_DIR c1=$TANDEM_LAB_DIR/node1/tandem.yaml c2=$TANDEM_LAB_DIR/node2/tandem.yaml
    for _ in $(seq 300); do "$bin" status -c "$c1" --json | grep -q '"in_sync": true' && break; sleep 0.1; done
    "$bin" status -c "$c1"
    echo "quickstart: writing 8 MiB on node1 with fsync under the durability barrier"
    ip netns exec tandem-demo-node1 "$bin" exec -c "$c1" -- \
        sh -c "dd if=/dev/urandom of=$base/node1/data/db bs=1M count=8 conv=fsync status=none"
    diff -r "$base/node1/data" "$base/node2/data" && echo "quickstart: node2 holds the same bytes"
    echo "quickstart: stopping node2, changing 64 KiB on node1, starting node2 again"
    kill "$("$bin" lab status --json | sed -n 's/.*"agent_pid": \([0-9]*\).*/\1/p' | sed -n 2p)"
    sleep 2
    dd if=/dev/urandom of="$base/node1/data/db" bs=4096 count=16 seek=100 conv=notrunc status=none
    "$bin" lab up >/dev/null
    for _ in $(seq 300); do "$bin" status -c "$c2" --json | grep -q '"in_sync": true' && break; sleep 0.1; done
    "$bin" status -c "$c2"
    echo "quickstart: the resync sent $("$bin" status -c "$c1" --json | sed -n 's/.*"resync_total_bytes": \([0-9]*\).*/\1/p') bytes of data for 65536 changed"
    diff -r "$base/node1/data" "$base/node2/data" && echo "quickstart: node2 holds the same bytes again"
    "$bin" lab down >/dev/null
    trap - EXIT
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

install_packages
case "${1:-}" in
    demo) demo && replication_demo ;;
    test) ensure_docker && cargo xtask test ;;
    *) die "usage: $0 demo|test" ;;
esac
