package controlplane

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Access is one request an identity might make, for authorization checks:
// a verb on a resource, or on a non-resource URL (Path).
type Access struct {
	Verb, Group, Resource, Subresource, Namespace, Name string
	Path                                                string
}

func (a Access) String() string {
	if a.Path != "" {
		return a.Verb + " " + a.Path
	}
	s := a.Verb + " " + a.Resource
	if a.Subresource != "" {
		s += "/" + a.Subresource
	}
	if a.Group != "" {
		s += "." + a.Group
	}
	if a.Name != "" {
		s += " " + a.Name
	}
	if a.Namespace == "" {
		return s + " (cluster-wide)"
	}
	return s + " in " + a.Namespace
}

// Attributes are a's resource or non-resource attributes, as access
// reviews take them.
func (a Access) Attributes() (*authorizationv1.ResourceAttributes, *authorizationv1.NonResourceAttributes) {
	if a.Path != "" {
		return nil, &authorizationv1.NonResourceAttributes{Path: a.Path, Verb: a.Verb}
	}
	return &authorizationv1.ResourceAttributes{
		Verb: a.Verb, Group: a.Group, Resource: a.Resource, Subresource: a.Subresource, Namespace: a.Namespace, Name: a.Name,
	}, nil
}

// Allowed asks the apiserver, as admin, whether user with exactly groups
// may do a: a SubjectAccessReview, what `kubectl auth can-i --as` asks.
// Leaving system:authenticated out of groups asks what a user's own
// bindings grant, without the defaults every authenticated user gets.
func (cp *ControlPlane) Allowed(ctx context.Context, user string, groups []string, a Access) (bool, error) {
	res, nonRes := a.Attributes()
	r, err := cp.Client(Admin).AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups, ResourceAttributes: res, NonResourceAttributes: nonRes,
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview %s: %w", a, err)
	}
	return r.Status.Allowed, nil
}

// SelfAllowed asks the apiserver as identity whether it may do a (a
// SelfSubjectAccessReview, `kubectl auth can-i`), with the authorizer's
// reason.
func (cp *ControlPlane) SelfAllowed(ctx context.Context, identity string, a Access) (bool, string, error) {
	res, nonRes := a.Attributes()
	r, err := cp.Client(identity).AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: res, NonResourceAttributes: nonRes,
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("SelfSubjectAccessReview %s as %s: %w", a, identity, err)
	}
	return r.Status.Allowed, r.Status.Reason, nil
}
