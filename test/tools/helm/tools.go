//go:build tools

// Package tools pins the Helm release `make helm` builds for `make chart-test`
// (helm.sh/helm/v3/cmd/helm). It is a module of its own because Helm's
// Kubernetes dependencies differ from herd's. Nothing here is imported by herd.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
