package controlplane

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// grantTestRBAC gives the simulated node-side service accounts what their real
// counterparts get from their Helm charts: kube-proxy the bootstrap
// system:node-proxier role, CNI agents read access to the objects they watch,
// metrics-server its aggregated-reader role and token reviews. Kubelets need
// nothing: the Node authorizer serves them.
func (cp *ControlPlane) grantTestRBAC(ctx context.Context) error {
	c := cp.Client(Admin)
	roles := []rbacv1.ClusterRole{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "herd-test:cni"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces", "services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "herd-test:metrics-server"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "nodes/metrics"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			},
		},
	}
	for i := range roles {
		if _, err := c.RbacV1().ClusterRoles().Create(ctx, &roles[i], metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create cluster role %s: %w", roles[i].Name, err)
		}
	}
	bind := func(name, role string, ids ...string) error {
		b := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		}
		for _, id := range ids {
			b.Subjects = append(b.Subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: cp.User(id)})
		}
		if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create cluster role binding %s: %w", name, err)
		}
		return nil
	}
	if err := bind("herd-test:kube-proxy", "system:node-proxier", KubeProxy); err != nil {
		return err
	}
	if err := bind("herd-test:cni", "herd-test:cni", CalicoNode, Cilium); err != nil {
		return err
	}
	return bind("herd-test:metrics-server", "herd-test:metrics-server", MetricsServer)
}
