//go:build tools

// Package tools pins the control-plane binaries the tests build:
// kube-apiserver and kube-controller-manager from k8s.io/kubernetes, etcd
// (./etcd), kubemark's hollow node (./hollownode) and etcdutl (its main
// package cannot be imported: the package of its commands keeps its
// requirements). Nothing here is imported by herd.
package tools

import (
	_ "go.etcd.io/etcd/etcdutl/v3/etcdutl"
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
