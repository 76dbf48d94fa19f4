#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, without containers: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler, plus kwok standing in for
# kubelets (it marks the pods on its fake node Running and Ready without running them).
# The Deployment, ReplicaSet and HorizontalPodAutoscaler controllers are the real ones.
#
#   cluster.sh up      build the binaries (once), start the cluster (a no-op when it
#                      answers), register a kwok node, install the KEDA and
#                      prometheus-operator CRDs
#   cluster.sh down    stop it and remove its state (not the binaries)
#   cluster.sh status  print whether it answers
#
# Ports are free ones picked at start, or RILL_K8S_APISERVER_PORT / RILL_K8S_ETCD_PORT
# when set. The admin kubeconfig is .rill/k8s/kubeconfig; .rill/k8s/env holds KUBECONFIG
# and the paths the tests read.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin="${RILL_BIN_DIR:-$root/.rill/bin}"
state="$root/.rill/k8s"
pki="$state/pki"
run="$state/run"
logs="$state/logs"
kubeconfig="$state/kubeconfig"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[k8s] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

answers() {
  [ -f "$kubeconfig" ] && kubectl get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

all_running() {
  local c
  for c in "${components[@]}"; do
    [ -f "$run/$c.pid" ] && kill -0 "$(cat "$run/$c.pid")" 2>/dev/null || return 1
  done
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2 i; shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up within ${seconds} s; logs in $logs"
  return 1
}

# --- certificates ---------------------------------------------------------------------

sign() { # name subject [extensions-file]
  local name=$1 subj=$2 ext=${3:-} ca=${4:-ca}
  openssl req -new -newkey rsa:2048 -nodes -subj "$subj" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -CAcreateserial -days 3650 -sha256 -out "$pki/$name.crt" \
    ${ext:+-extfile "$ext"} 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  [ -f "$pki/.complete" ] && return
  log "creating certificates (openssl)"
  rm -rf "$pki"; mkdir -p "$pki"
  local ca
  for ca in ca front-proxy-ca; do
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rill-local-$ca" \
      -keyout "$pki/$ca.key" -out "$pki/$ca.crt" 2>/dev/null
  done
  cat >"$pki/serving.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EXT
  cat >"$pki/client.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
  sign apiserver "/CN=kube-apiserver" "$pki/serving.ext"
  # The external metrics stand-in, an aggregated API on localhost behind an ExternalName
  # Service: the aggregator checks the name <service>.<namespace>.svc.
  sed 's/^subjectAltName=.*/subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:external-metrics-standin.kube-system.svc/' \
    "$pki/serving.ext" >"$pki/adapter.ext"
  sign metrics-adapter "/CN=external-metrics-standin.kube-system.svc" "$pki/adapter.ext"
  sign admin "/O=system:masters/CN=rill-admin" "$pki/client.ext"
  sign controller-manager "/CN=system:kube-controller-manager" "$pki/client.ext"
  sign scheduler "/CN=system:kube-scheduler" "$pki/client.ext"
  sign kwok "/O=system:masters/CN=kwok" "$pki/client.ext"
  sign front-proxy-client "/CN=front-proxy-client" "$pki/client.ext" front-proxy-ca
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  touch "$pki/.complete"
}

write_kubeconfig() { # file user port
  cat >"$1" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: https://127.0.0.1:$3
      certificate-authority: $pki/ca.crt
users:
  - name: $2
    user:
      client-certificate: $pki/$2.crt
      client-key: $pki/$2.key
contexts:
  - name: local
    context: {cluster: local, user: $2}
current-context: local
YAML
}

# --- processes ------------------------------------------------------------------------

start() { # name command...
  local name=$1; shift
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

stop_all() {
  local c pids=() pid
  for c in "${components[@]}"; do
    [ -f "$run/$c.pid" ] || continue
    pid=$(cat "$run/$c.pid")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$run/$c.pid"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

install_crds() {
  log "installing the KEDA and prometheus-operator CRDs"
  local keda=github.com/kedacore/keda/v2 prom=github.com/prometheus-operator/prometheus-operator
  (cd "$here/crds" && go mod download "$keda" "$prom")
  keda=$(cd "$here/crds" && go list -m -f '{{.Dir}}' "$keda")
  prom=$(cd "$here/crds" && go list -m -f '{{.Dir}}' "$prom")
  # Server-side apply: the prometheus-operator CRDs exceed the client-side annotation limit.
  kubectl apply --server-side --force-conflicts -f "$keda/config/crd/bases" >/dev/null
  kubectl apply --server-side --force-conflicts \
    -f "$prom/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
    -f "$prom/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" \
    -f "$prom/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s \
    crd/scaledobjects.keda.sh crd/triggerauthentications.keda.sh \
    crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
}

add_node() {
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: local-a
    type: kwok
spec: {}
status:
  allocatable: {cpu: "32", memory: 64Gi, pods: "110"}
  capacity: {cpu: "32", memory: 64Gi, pods: "110"}
  nodeInfo:
    kubeletVersion: fake
    operatingSystem: linux
    architecture: amd64
YAML
}

up() {
  if all_running && answers; then
    log "already up: KUBECONFIG=$kubeconfig"
    return
  fi
  stop_all 2>/dev/null || true
  "$here/build.sh"
  command -v openssl >/dev/null || { log "openssl is missing (apt-get install openssl)"; exit 1; }
  rm -rf "$run" "$logs" "$state/etcd"
  mkdir -p "$run" "$logs" "$state/etcd"
  make_pki

  local etcd_port=${RILL_K8S_ETCD_PORT:-$(free_port)} peer_port api_port cm_port sched_port kwok_port
  peer_port=$(free_port)
  api_port=${RILL_K8S_APISERVER_PORT:-$(free_port)}
  cm_port=$(free_port); sched_port=$(free_port); kwok_port=$(free_port)
  write_kubeconfig "$kubeconfig" admin "$api_port"
  for c in controller-manager scheduler kwok; do
    write_kubeconfig "$state/$c.kubeconfig" "$c" "$api_port"
  done

  log "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bin/etcd" --name local --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "local=http://127.0.0.1:$peer_port"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  log "starting kube-apiserver on 127.0.0.1:$api_port"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode Node,RBAC \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" \
    --proxy-client-key-file "$pki/front-proxy-client.key" \
    --profiling=false
  wait_for kube-apiserver 120 kubectl get --raw /readyz --request-timeout=3s

  log "starting kube-controller-manager, kube-scheduler and kwok"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" \
    --controllers '*' --use-service-account-credentials=true --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --horizontal-pod-autoscaler-sync-period 5s
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false
  # Without a 40 s lease the node flaps NotReady and Deployments never become available.
  start kwok "$bin/kwok" --kubeconfig "$state/kwok.kubeconfig" \
    --manage-all-nodes=true --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$kwok_port"
  add_node
  wait_for "the kwok node" 60 kubectl wait --for=condition=Ready --timeout=2s node/kwok-node-0
  wait_for "the default service account" 60 kubectl get serviceaccount default -n default
  install_crds

  cat >"$state/env" <<ENV
KUBECONFIG=$kubeconfig
RILL_K8S_BIN=$bin
RILL_K8S_PKI=$pki
ENV
  log "up: KUBECONFIG=$kubeconfig ($("$bin/kubectl" version --kubeconfig "$kubeconfig" 2>/dev/null | tail -1))"
}

down() {
  stop_all
  rm -rf "$run" "$logs" "$state/etcd" "$state/env" "$kubeconfig"
  log "down"
}

status() {
  if answers; then log "up: KUBECONFIG=$kubeconfig"; kubectl get nodes; else log "not running"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
