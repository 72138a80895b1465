//go:build tools

// Package tools pins the control-plane binaries the tests build:
// kube-apiserver and kube-controller-manager from k8s.io/kubernetes, etcd
// (./etcd) and kubemark's hollow node (./hollownode). Nothing here is
// imported by herd.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
