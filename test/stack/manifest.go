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
			obj, create = creating(ctx, func(*corev1.Namespace) creator[corev1.Namespace] { return c.CoreV1().Namespaces() })
		case "v1/ServiceAccount":
			obj, create = creating(ctx, func(o *corev1.ServiceAccount) creator[corev1.ServiceAccount] {
				return c.CoreV1().ServiceAccounts(o.Namespace)
			})
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			obj, create = creating(ctx, func(*rbacv1.ClusterRole) creator[rbacv1.ClusterRole] { return c.RbacV1().ClusterRoles() })
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			obj, create = creating(ctx, func(*rbacv1.ClusterRoleBinding) creator[rbacv1.ClusterRoleBinding] {
				return c.RbacV1().ClusterRoleBindings()
			})
		case "rbac.authorization.k8s.io/v1/Role":
			obj, create = creating(ctx, func(o *rbacv1.Role) creator[rbacv1.Role] { return c.RbacV1().Roles(o.Namespace) })
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			obj, create = creating(ctx, func(o *rbacv1.RoleBinding) creator[rbacv1.RoleBinding] { return c.RbacV1().RoleBindings(o.Namespace) })
		case "flowcontrol.apiserver.k8s.io/v1/PriorityLevelConfiguration":
			obj, create = creating(ctx, func(*flowcontrolv1.PriorityLevelConfiguration) creator[flowcontrolv1.PriorityLevelConfiguration] {
				return c.FlowcontrolV1().PriorityLevelConfigurations()
			})
		case "flowcontrol.apiserver.k8s.io/v1/FlowSchema":
			obj, create = creating(ctx, func(*flowcontrolv1.FlowSchema) creator[flowcontrolv1.FlowSchema] {
				return c.FlowcontrolV1().FlowSchemas()
			})
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

// creator is a typed client's Create.
type creator[T any] interface {
	Create(ctx context.Context, o *T, opts metav1.CreateOptions) (*T, error)
}

// creating is an empty object of type T to decode a document into, and the
// create that sends it with the client client names for it (a namespaced
// client needs the decoded namespace).
func creating[T any](ctx context.Context, client func(*T) creator[T]) (*T, func() error) {
	o := new(T)
	return o, func() error {
		_, err := client(o).Create(ctx, o, metav1.CreateOptions{})
		return err
	}
}
