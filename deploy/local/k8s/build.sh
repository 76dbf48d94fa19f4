#!/usr/bin/env bash
# Build the local control plane's binaries from source through the Go module proxy, once
# per machine: they are cached outside the checkout (deploy/local/bincache.sh), keyed by
# their wrapper's go.mod/go.sum and build flags, and linked into .rill/bin.
#
#   build.sh            etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kubectl, kwok, and KEDA's operator and metrics server
#
# Each wrapper module (kubernetes/, etcd/, kwok/, keda/ next to this script) pins one upstream
# release; its go.sum is committed, so every download is checked. Peak memory is about
# 2 GB per step (kube-apiserver); the steps run one after another. No VCS stamping: the
# binaries do not depend on the state of this checkout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin="${RILL_BIN_DIR:-$root/.rill/bin}"
k8s_version=v1.32.2
mkdir -p "$bin"
# shellcheck source=../bincache.sh
. "$here/../bincache.sh"

log() { printf '[k8s-build] %s\n' "$*" >&2; }

# Without the version stamped in, the servers report v0.0.0-master and charts'
# kubeVersion checks fail.
k8s_ldflags() {
  local minor=${k8s_version#v1.}; minor=${minor%%.*}
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$flags"
}

# The key of a wrapper's binaries: its go.mod, its go.sum and how they are built.
key_of() { # wrapper extra...
  local w=$1; shift
  bincache_key "@$here/$w/go.mod" "@$here/$w/go.sum" "$@"
}

k8s_names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

build_kubernetes_into() {
  log "building kubernetes $k8s_version (${k8s_names[*]}); 10+ min on 2 cores from empty caches"
  local pkgs=() n
  for n in "${k8s_names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  (cd "$here/kubernetes" &&
    go build -trimpath -buildvcs=false -ldflags "$(k8s_ldflags)" -o "$1/" "${pkgs[@]}")
}

build_etcd_into() {
  log "building etcd"
  (cd "$here/etcd" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/etcd" .)
}

build_kwok_into() {
  log "building kwok"
  (cd "$here/kwok" &&
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

build_keda_into() {
  log "building KEDA v2.16.1 (operator, metrics server); about 15 min on 2 cores from empty caches"
  local cmd=github.com/kedacore/keda/v2/cmd
  (cd "$here/keda" &&
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/keda-operator" "$cmd/operator" &&
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/keda-adapter" "$cmd/adapter")
}

bincache_link kubernetes "$(key_of kubernetes "$(k8s_ldflags)")" "$bin" build_kubernetes_into "${k8s_names[@]}"
bincache_link etcd "$(key_of etcd "@$here/etcd/main.go" "-s -w")" "$bin" build_etcd_into etcd
bincache_link kwok "$(key_of kwok "-s -w")" "$bin" build_kwok_into kwok
bincache_link keda "$(key_of keda "-s -w")" "$bin" build_keda_into keda-operator keda-adapter
