package stack

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/test/herdtest"
)

// ApplyManifest creates, as c, every object of a multi-document YAML file
// herd ships (manifests/rbac: Namespaces, ServiceAccounts, RBAC;
// manifests/apf: priority levels and FlowSchemas), so herd runs with
// exactly the permissions and APF objects it documents. Decoding is strict: an
// unknown field is an error, as is an object that cannot be created. It
// returns the objects by kind, for static checks.
func ApplyManifest(ctx context.Context, c kubernetes.Interface, path string) (map[string][]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apply manifest: %w", err)
	}
	docs, err := herdtest.YAMLDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	objs := map[string][]any{}
	for i, doc := range docs {
		n := i + 1
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if tm.Kind == "" {
			return nil, fmt.Errorf("%s: document %d has no kind", path, n)
		}
		var obj any
		var create func() error
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			o := &corev1.Namespace{}
			obj, create = o, func() error { _, err := c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{}); return err }
		case "v1/ServiceAccount":
			o := &corev1.ServiceAccount{}
			obj, create = o, func() error {
				_, err := c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			o := &rbacv1.ClusterRole{}
			obj, create = o, func() error { _, err := c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{}); return err }
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			o := &rbacv1.ClusterRoleBinding{}
			obj, create = o, func() error {
				_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		case "rbac.authorization.k8s.io/v1/Role":
			o := &rbacv1.Role{}
			obj, create = o, func() error {
				_, err := c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			o := &rbacv1.RoleBinding{}
			obj, create = o, func() error {
				_, err := c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		case "flowcontrol.apiserver.k8s.io/v1/PriorityLevelConfiguration":
			o := &flowcontrolv1.PriorityLevelConfiguration{}
			obj, create = o, func() error {
				_, err := c.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		case "flowcontrol.apiserver.k8s.io/v1/FlowSchema":
			o := &flowcontrolv1.FlowSchema{}
			obj, create = o, func() error {
				_, err := c.FlowcontrolV1().FlowSchemas().Create(ctx, o, metav1.CreateOptions{})
				return err
			}
		default:
			return nil, fmt.Errorf("%s: document %d: %s %s is not a kind this harness creates", path, n, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", path, n, tm.Kind, err)
		}
		if err := create(); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): create: %w", path, n, tm.Kind, err)
		}
		objs[tm.Kind] = append(objs[tm.Kind], obj)
	}
	return objs, nil
}
