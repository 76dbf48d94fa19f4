#!/usr/bin/env bash
# Build a pinned Go tool once per machine and link it into .rill/bin.
#
#   gotool.sh helm        helm, for the chart tests and installs
#   gotool.sh promtool    promtool, for `promtool test rules` on the alert rules
#
# `go install <module>/cmd/<tool>@<version>` through the Go module proxy (checked against
# the checksum database); the binary is cached outside the checkout, keyed by the
# version (deploy/local/bincache.sh), so a new clone on the same machine reuses it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="${RILL_BIN_DIR:-$root/.rill/bin}"
# shellcheck source=bincache.sh
. "$here/bincache.sh"

HELM_VERSION=${HELM_VERSION:-v3.16.4}
# Prometheus v3.x is published to the module proxy as v0.3xx.y.
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}

tags=""
case "${1:-}" in
  helm) pkg=helm.sh/helm/v3/cmd/helm@$HELM_VERSION ;;
  # Rule tests need no service discovery: without the SD plugins (Azure, AWS, GCP, ...
  # SDKs) the build from empty caches is several times shorter.
  promtool) pkg=github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION; tags=remove_all_sd ;;
  *) echo "usage: $0 helm|promtool" >&2; exit 2 ;;
esac
tool=$1

install_into() {
  printf '[gotool] building %s\n' "$pkg" >&2
  GOBIN="$1" go install -trimpath -tags "$tags" -ldflags "-s -w" "$pkg"
}

key=$(bincache_key "$pkg" "-trimpath -s -w" ${tags:+"tags=$tags"})
bincache_link "$tool" "$key" "$bin" install_into "$tool"
