// Not built: pins the Go modules whose zips carry the KEDA and prometheus-operator CRD
// manifests, so `go mod download` fetches them checked against go.sum.
module rill.local/k8s/crds

go 1.24

require (
	github.com/kedacore/keda/v2 v2.16.1
	github.com/prometheus-operator/prometheus-operator v0.80.1
)
