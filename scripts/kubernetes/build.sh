#!/usr/bin/env bash
# Build the Kubernetes 1.20 server binaries from Debian bookworm's own source
# package `kubernetes`, with the few changes this sandbox needs, into a cache
# that outlives any work tree:
#
#   scripts/kubernetes/build.sh CACHE_DIR KUBE_DIR
#   scripts/kubernetes/build.sh --patch TREE KUBE_DIR   (the source changes alone, on an
#                                                       unpacked tree; for the tests)
#
# CACHE_DIR (e.g. /var/cache/execbroker/kubernetes) gets
#   apt/                 a private apt state with one deb-src line (the host's
#                        apt sources are left as they are)
#   VERSION/bin/         kube-apiserver kube-controller-manager kube-scheduler
#                        kubelet kubectl pause, and VERSION/bin/STAMP
# where VERSION is the Debian version of the source package.  KUBE_DIR is the
# service's own directory; the kubelet's otherwise hard-coded log and
# device-plugin paths are compiled to point under it.
#
# Needs golang-go, jq, rsync, build-essential and dpkg-dev (installed by
# scripts/services.sh).  The Go build is offline (GOPROXY=off): every Go
# dependency is vendored in the source package.  Prints the bin directory.
# Bump RECIPE_VERSION whenever the changes below change, so caches rebuild.
set -euo pipefail

RECIPE_VERSION=2
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

# --- the changes this sandbox needs, in the unpacked tree (the current directory) -------
# patch_line FILE OLD NEW: replace the text OLD (one line) in FILE, failing loudly
# when it is not there: a newer source must be looked at, not silently mis-built.
patch_line() {
    OLD=$2 NEW=$3 perl -pi -e '$n += s/\Q$ENV{OLD}\E/$ENV{NEW}/g; END { exit($n ? 0 : 3) }' "$1" ||
        { echo "build.sh: '$2' not found in $1" >&2; exit 1; }
}

apply_patches() {
    local KUBE_DIR=$1
    # Root here lacks CAP_SYS_RESOURCE, so runc fails to set a negative
    # oom_score_adj: the sandbox's and Guaranteed pods' adjustments become 0.
    patch_line pkg/kubelet/dockershim/docker_sandbox.go 'defaultSandboxOOMAdj int = -998' 'defaultSandboxOOMAdj int = 0'
    patch_line pkg/kubelet/qos/policy.go 'guaranteedOOMScoreAdj int = -997' 'guaranteedOOMScoreAdj int = 0'
    # The host's sysctls are reported when they differ from what the kubelet wants,
    # never changed (it would otherwise set vm.overcommit_memory, kernel.panic...).
    patch_line pkg/kubelet/cm/container_manager_linux.go 'b := KernelTunableModify' \
        'b := KernelTunableWarn // execbroker: report, never change, the host sysctls'
    # The node lives on loopback only (nothing listens on another address).
    patch_line pkg/kubelet/kubelet_node_status.go 'if nodeIP.IsLoopback() {' \
        'if false && nodeIP.IsLoopback() { // execbroker: a single node on loopback'
    # Hard-coded host paths, moved under the service's own directory.
    patch_line pkg/kubelet/kubelet.go 'ContainerLogsDir = "/var/log/containers"' "ContainerLogsDir = \"$KUBE_DIR/log/containers\""
    patch_line pkg/kubelet/kuberuntime/legacy.go 'legacyContainerLogsDir = "/var/log/containers"' "legacyContainerLogsDir = \"$KUBE_DIR/log/containers\""
    patch_line pkg/kubelet/kuberuntime/kuberuntime_manager.go 'podLogsRootDirectory = "/var/log/pods"' "podLogsRootDirectory = \"$KUBE_DIR/log/pods\""
    for api in v1alpha v1beta1; do
        patch_line "staging/src/k8s.io/kubelet/pkg/apis/deviceplugin/$api/constants.go" \
            'DevicePluginPath = "/var/lib/kubelet/device-plugins/"' "DevicePluginPath = \"$KUBE_DIR/kubelet/device-plugins/\""
    done
}

main() {
    CACHE_DIR=${1:?usage: build.sh CACHE_DIR KUBE_DIR}
    KUBE_DIR=${2:?usage: build.sh CACHE_DIR KUBE_DIR}
    apt_dir=$CACHE_DIR/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
        >"$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")

    # Nothing on a bare machine (apt-cache fails while the private lists are empty): then
    # the lists are fetched once.
    source_version() {
        { apt-cache "${apt_opts[@]}" showsrc kubernetes 2>/dev/null || true; } |
            sed -n 's/^Version: //p' | sort -V | tail -1
    }
    version=$(source_version)
    if [ -z "$version" ]; then
        apt-get "${apt_opts[@]}" update -q >&2
        version=$(source_version)
    fi
    [ -n "$version" ] || { echo "no source package 'kubernetes' in bookworm main" >&2; exit 1; }

    bin=$CACHE_DIR/$version/bin
    stamp="recipe=$RECIPE_VERSION kube_dir=$KUBE_DIR"
    if [ -f "$bin/STAMP" ] && [ "$(cat "$bin/STAMP")" = "$stamp" ]; then
        echo "$bin"
        exit 0
    fi

    work=$CACHE_DIR/$version/build
    rm -rf "$work"
    mkdir -p "$work"
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    # apt-get source drops to the _apt user when it can: give it a writable place.
    chmod 0777 "$work"
    echo "fetching the source package kubernetes $version" >&2
    apt-get "${apt_opts[@]}" source --download-only -q "kubernetes=$version" >&2
    dpkg-source -x ./*.dsc tree >&2
    cd tree

    apply_patches "$KUBE_DIR"

    # --- build ---------------------------------------------------------------------
    # As debian/rules does: a GOPATH inside the tree, static binaries, no network.
    # The build cache outlives a failed build (a retry then takes a minute, not ten).
    export GOPATH=$PWD/.go GOCACHE=$CACHE_DIR/gocache GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 HOME=$work
    mkdir -p .go/src/k8s.io
    ln -s ../../.. .go/src/k8s.io/kubernetes
    upstream=${version%%-*}
    upstream=${upstream##*really}
    export KUBE_GIT_VERSION=v$upstream KUBE_GIT_TREE_STATE=clean
    echo "building ${BINARIES[*]} (go $(go env GOVERSION))" >&2
    make WHAT="${BINARIES[*]/#/cmd/}" >&2

    # The pod sandbox ("pause") binary, from the same tree.
    gcc -Os -static -Wall -Werror -o _output/bin/pause build/pause/linux/pause.c >&2

    staging=$CACHE_DIR/$version/bin.new
    rm -rf "$staging"
    mkdir -p "$staging"
    for b in "${BINARIES[@]}" pause; do
        install -m 0755 "_output/bin/$b" "$staging/$b"
    done
    echo "$stamp" >"$staging/STAMP"
    rm -rf "$bin"
    mv "$staging" "$bin"
    # Go's build cache (GBs) only speeds up a retry after a failed build.
    rm -rf "$CACHE_DIR/gocache"
    echo "$bin"
}

# On one line, so that bash, which reads a script as it runs it, never reads past this
# point: editing the script while it builds cannot break the build.
if [ "${1:-}" = --patch ]; then cd "${2:?usage: build.sh --patch TREE KUBE_DIR}" && apply_patches "${3:?usage: build.sh --patch TREE KUBE_DIR}"; else main "$@"; fi; exit
