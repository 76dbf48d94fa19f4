#!/usr/bin/env bash
# Build the local control plane's binaries from source through the Go module proxy, into
# .rill/bin (once: a binary is rebuilt only when its wrapper's go.mod/go.sum or the
# pinned version change).
#
#   build.sh            etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kubectl and kwok
#
# Each wrapper module (kubernetes/, etcd/, kwok/ next to this script) pins one upstream
# release; its go.sum is committed, so every download is checked. Peak memory is about
# 2 GB per step (kube-apiserver); the steps run one after another. No VCS stamping: the
# binaries do not depend on the state of this checkout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin="${RILL_BIN_DIR:-$root/.rill/bin}"
k8s_version=v1.32.2
mkdir -p "$bin"

log() { printf '[k8s-build] %s\n' "$*" >&2; }

# The stamp names the inputs of a build; a binary whose stamp matches is kept.
stamp_of() { cat "$here/$1/go.mod" "$here/$1/go.sum" | sha256sum | cut -c1-16; }

fresh() { # wrapper binary...
  local want; want=$(stamp_of "$1"); shift
  local b
  for b in "$@"; do
    [ -x "$bin/$b" ] && [ "$(cat "$bin/.$b.stamp" 2>/dev/null)" = "$want" ] || return 1
  done
}

stamp() { # wrapper binary...
  local want; want=$(stamp_of "$1"); shift
  local b
  for b in "$@"; do printf '%s\n' "$want" >"$bin/.$b.stamp"; done
}

timed() { # label command...
  local label=$1 started; shift
  started=$(date +%s)
  "$@"
  log "$label built in $(( $(date +%s) - started )) s"
}

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

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  if fresh kubernetes "${names[@]}"; then log "kubernetes $k8s_version: cached"; return; fi
  log "building kubernetes $k8s_version (${names[*]}); 10+ min on 2 cores from empty caches"
  local pkgs=() n
  for n in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  (cd "$here/kubernetes" &&
    timed kubernetes go build -trimpath -buildvcs=false -ldflags "$(k8s_ldflags)" -o "$bin/" "${pkgs[@]}")
  stamp kubernetes "${names[@]}"
}

build_etcd() {
  if fresh etcd etcd; then log "etcd: cached"; return; fi
  log "building etcd"
  (cd "$here/etcd" && timed etcd go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin/etcd" .)
  stamp etcd etcd
}

build_kwok() {
  if fresh kwok kwok; then log "kwok: cached"; return; fi
  log "building kwok"
  (cd "$here/kwok" &&
    timed kwok go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  stamp kwok kwok
}

build_kubernetes
build_etcd
build_kwok
