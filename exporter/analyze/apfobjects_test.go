package analyze

import (
	"os"
	"strings"
	"testing"
)

// TestParseAPFObjects: kubectl's List, YAML documents and JSON are read;
// other kinds, unknown fields and a file without levels are errors naming
// the object.
func TestParseAPFObjects(t *testing.T) {
	list := `apiVersion: v1
kind: List
items:
- apiVersion: flowcontrol.apiserver.k8s.io/v1
  kind: FlowSchema
  metadata: {name: custom, resourceVersion: "7"}
  spec:
    matchingPrecedence: 300
    priorityLevelConfiguration: {name: custom}
    rules:
    - subjects: [{kind: ServiceAccount, serviceAccount: {namespace: kube-system, name: cilium}}]
      resourceRules: [{verbs: [list], apiGroups: [""], resources: [pods], clusterScope: true, namespaces: ["*"]}]
  status: {conditions: [{type: Dangling, status: "False"}]}
- apiVersion: flowcontrol.apiserver.k8s.io/v1
  kind: PriorityLevelConfiguration
  metadata: {name: custom}
  spec: {type: Limited, limited: {nominalConcurrencyShares: 5, limitResponse: {type: Reject}}}
`
	fs, pl, err := ParseAPFObjects("apf.yaml", []byte(list))
	if err != nil || len(fs) != 1 || len(pl) != 1 || fs[0].Spec.MatchingPrecedence != 300 || *pl[0].Spec.Limited.NominalConcurrencyShares != 5 {
		t.Fatalf("%v %v %v", fs, pl, err)
	}
	docs := "---\napiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata: {name: a}\nspec: {type: Exempt}\n---\n" +
		`{"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": {"name": "b"}, "spec": {"type": "Exempt"}}` + "\n"
	if _, pl, err := ParseAPFObjects("apf.yaml", []byte(docs)); err != nil || len(pl) != 2 {
		t.Errorf("documents: %v %v", pl, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"kind: Pod\nmetadata: {name: x}\n", `apf.yaml: object 1 is a "Pod": want FlowSchemas and PriorityLevelConfigurations (kubectl get flowschemas,prioritylevelconfigurations -o yaml)`},
		{"kind: PriorityLevelConfiguration\nmetadata: {name: a}\nspec: {typo: 1}\n", `apf.yaml: object 1 (PriorityLevelConfiguration): strict decoding error: unknown field "spec.typo"`},
		{"kind: List\nitems: [3]\n", "apf.yaml: an item of the List is not an object"},
		{"", "apf.yaml has no PriorityLevelConfiguration: get both kinds (kubectl get flowschemas,prioritylevelconfigurations -o yaml)"},
	} {
		if _, _, err := ParseAPFObjects("apf.yaml", []byte(tc.in)); err == nil || err.Error() != tc.want {
			t.Errorf("%q: %v, want %s", tc.in, err, tc.want)
		}
	}
}

// FuzzParseAPFObjects: whatever the file holds, an answer or an error,
// never a panic; what parses has a level.
func FuzzParseAPFObjects(f *testing.F) {
	f.Add([]byte("kind: List\nitems:\n- kind: PriorityLevelConfiguration\n  metadata: {name: a}\n  spec: {type: Exempt}\n"))
	f.Add([]byte(`{"kind":"FlowSchema","spec":{"rules":[{"subjects":[{"kind":"User","user":{"name":"*"}}]}]}}`))
	if b, err := os.ReadFile("../../manifests/apf/herd.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, pl, err := ParseAPFObjects("fuzz", data)
		if err == nil && len(pl) == 0 {
			t.Fatal("parsed without a level")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
