package controlplane

import (
	"context"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/test/herdtest"
)

// Responder is the identity name (Config, Client) of herd's responder
// service account, system:serviceaccount:herd:herd-responder, in a control
// plane started with Options.InstallResponder.
const Responder = "herd-responder"

// installResponder installs herd's responder as the manifests do:
// namespace herd, manifests/rbac/responder.yaml and manifests/apf/herd.yaml,
// applied as the admin.
func (cp *ControlPlane) installResponder(ctx context.Context) error {
	root, err := herdtest.RepoRoot()
	if err != nil {
		return err
	}
	if _, err := cp.Client(Admin).CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "herd"}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("install the responder: %w", err)
	}
	for _, f := range []string{"manifests/rbac/responder.yaml", "manifests/apf/herd.yaml"} {
		if err := cp.ApplyFile(ctx, Admin, filepath.Join(root, f)); err != nil {
			return fmt.Errorf("install the responder: %w", err)
		}
	}
	return nil
}
