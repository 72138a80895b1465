package chart

import (
	"reflect"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/herd-k8s/herd/responder/action"
	responderpolicy "github.com/herd-k8s/herd/responder/policy"
)

// apfObjects are the rendered or listed APF objects, by kind and name.
func apfObjects(t *testing.T, objs []*unstructured.Unstructured) (map[string]flowcontrolv1.PriorityLevelConfigurationSpec, map[string]flowcontrolv1.FlowSchemaSpec) {
	t.Helper()
	levels := map[string]flowcontrolv1.PriorityLevelConfigurationSpec{}
	schemas := map[string]flowcontrolv1.FlowSchemaSpec{}
	for _, o := range ofKind(objs, "PriorityLevelConfiguration") {
		var pl flowcontrolv1.PriorityLevelConfiguration
		into(t, o, &pl)
		levels[pl.Name] = pl.Spec
	}
	for _, o := range ofKind(objs, "FlowSchema") {
		var fs flowcontrolv1.FlowSchema
		into(t, o, &fs)
		schemas[fs.Name] = fs.Spec
	}
	return levels, schemas
}

// TestAPFMatchesManifests: with the release named herd in namespace herd
// the chart installs exactly manifests/apf/herd.yaml's priority levels and
// FlowSchema, and the levels are the ones the responder would create
// (action.IsolateLevelSpec and ProtectLevelSpec of the default policy,
// QuarantineLevelSpec).
func TestAPFMatchesManifests(t *testing.T) {
	listed := decodeFile(t, "../../manifests/apf/herd.yaml")
	wantLevels, wantSchemas := apfObjects(t, listed)
	gotLevels, gotSchemas := apfObjects(t, render(t, defaults))
	if !reflect.DeepEqual(gotLevels, wantLevels) {
		t.Errorf("the chart's priority levels\n%+v\nmanifests/apf/herd.yaml's\n%+v", gotLevels, wantLevels)
	}
	if !reflect.DeepEqual(gotSchemas, wantSchemas) {
		t.Errorf("the chart's FlowSchemas\n%+v\nmanifests/apf/herd.yaml's\n%+v", gotSchemas, wantSchemas)
	}
	responderLevels := map[string]flowcontrolv1.PriorityLevelConfigurationSpec{
		action.IsolateLevel:    action.IsolateLevelSpec(responderpolicy.Default().Actions.Isolate),
		action.ProtectLevel:    action.ProtectLevelSpec(responderpolicy.Default().Actions.Protect),
		action.QuarantineLevel: action.QuarantineLevelSpec(),
	}
	if !reflect.DeepEqual(wantLevels, responderLevels) {
		t.Errorf("manifests/apf/herd.yaml's levels\n%+v\nthe responder's\n%+v", wantLevels, responderLevels)
	}
	if len(wantSchemas) != 1 || wantSchemas["herd-responder"].PriorityLevelConfiguration.Name != "leader-election" {
		t.Errorf("FlowSchemas %+v, want herd-responder to leader-election", wantSchemas)
	}
}

// TestAPFFromValues: herd-isolate and herd-protect follow
// responder.config.actions.isolate and .protect, the numbers the responder
// reads from the same config; apf.install=false renders none.
func TestAPFFromValues(t *testing.T) {
	r := defaults
	r.set = []string{"responder.config.actions.isolate.priorityLevelShares=5", "responder.config.actions.isolate.queues=32",
		"responder.config.actions.isolate.handSize=6", "responder.config.actions.isolate.queueLengthLimit=20",
		"responder.config.actions.protect.priorityLevelShares=3", "responder.config.actions.protect.queues=8",
		"responder.config.actions.protect.handSize=2", "responder.config.actions.protect.queueLengthLimit=100"}
	objs := render(t, r)
	cfg, err := responderpolicy.Parse([]byte(configMapData(t, objs, "herd-responder", "responder.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	levels, _ := apfObjects(t, objs)
	if got, want := levels[action.IsolateLevel], action.IsolateLevelSpec(cfg.Actions.Isolate); !reflect.DeepEqual(got, want) {
		t.Errorf("herd-isolate\n%+v\nwant\n%+v", got, want)
	}
	if got, want := levels[action.ProtectLevel], action.ProtectLevelSpec(cfg.Actions.Protect); !reflect.DeepEqual(got, want) || *want.Limited.NominalConcurrencyShares != 3 {
		t.Errorf("herd-protect\n%+v\nwant\n%+v", got, want)
	}
	r.set = []string{"responder.apf.install=false"}
	if levels, schemas := apfObjects(t, render(t, r)); len(levels)+len(schemas) != 0 {
		t.Errorf("apf.install=false renders %v %v", levels, schemas)
	}
}
