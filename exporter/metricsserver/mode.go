package metricsserver

import (
	"sort"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/herd-k8s/herd/internal/kubeletauth"
)

// The mode detection is shared with the responder (internal/kubeletauth);
// these names keep the exporter's API.
type (
	// Mode is how metrics-server authenticates to kubelets.
	Mode = kubeletauth.Mode
	// DeploymentView is what /debug pages show about one Deployment.
	DeploymentView = kubeletauth.DeploymentView
)

// The modes.
const (
	ModeToken       = kubeletauth.ModeToken
	ModeCertificate = kubeletauth.ModeCertificate
	ModeUnknown     = kubeletauth.ModeUnknown
)

// TokenFix is the advice for a metrics-server in token mode.
const TokenFix = kubeletauth.TokenFix

// Inspect decides a Deployment's kubelet auth mode.
func Inspect(d *appsv1.Deployment) DeploymentView { return kubeletauth.Inspect(d) }

// sortViews orders views by namespace then name.
func sortViews(vs []DeploymentView) {
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].Namespace != vs[j].Namespace {
			return vs[i].Namespace < vs[j].Namespace
		}
		return vs[i].Name < vs[j].Name
	})
}
