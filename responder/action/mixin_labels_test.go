package action

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/policy"
)

// TestMixinAlertsCarryWhatTheActionsRead: the alerts the shipped mixin's
// promtool tests expect (rules/tests/stampede.yaml) are routed by the
// default policy, and the action they are routed to accepts their labels:
// HerdStampedeRisk → protect (role, client, resource, shape), an expensive
// HerdSynchronizedRelist → isolate's fast path (cost, shape), a cheap one
// to nothing. A label renamed on either side fails here, not in a storm.
func TestMixinAlertsCarryWhatTheActionsRead(t *testing.T) {
	b, err := os.ReadFile("../../rules/tests/stampede.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []struct {
					ExpLabels map[string]string `json:"exp_labels"`
				} `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	env := &Env{Config: testPolicy(t, nil)}
	routes := policy.DefaultRoutes()
	seen := map[string]int{}
	for _, tc := range tests.Tests {
		for _, art := range tc.AlertRuleTest {
			for _, exp := range art.ExpAlerts {
				labels := map[string]string{"alertname": art.Alertname}
				for k, v := range exp.ExpLabels {
					labels[k] = v
				}
				a := alert.Alert{Status: alert.StatusFiring, Labels: labels}
				var act policy.Action = policy.ActionNone
				for _, r := range routes {
					if r.Matches(labels) {
						act = r.Action
						break
					}
				}
				cheap := art.Alertname == AlertSynchronizedRelist && labels["cost"] != "expensive"
				switch {
				case art.Alertname == "HerdStampedeRisk":
					if act != policy.ActionProtect {
						t.Errorf("%v is routed to %s, want protect", labels, act)
					}
					if _, r := NewProtect(env).Request(a); r != nil {
						t.Errorf("protect refuses the mixin's %v: %s", labels, r.Reason)
					}
				case cheap:
					if act != policy.ActionNone && act != policy.ActionTriage {
						t.Errorf("a cheap wave %v is routed to %s", labels, act)
					}
				case art.Alertname == AlertSynchronizedRelist:
					if act != policy.ActionIsolate {
						t.Errorf("%v is routed to %s, want isolate", labels, act)
					}
					if _, r := NewIsolate(env).Request(a); r != nil {
						t.Errorf("isolate refuses the mixin's %v: %s", labels, r.Reason)
					}
				}
				seen[art.Alertname+" "+labels["cost"]]++
			}
		}
	}
	for _, k := range []string{"HerdStampedeRisk ", "HerdSynchronizedRelist expensive", "HerdSynchronizedRelist cheap"} {
		if seen[k] == 0 {
			t.Errorf("rules/tests/stampede.yaml expects no %s alert: nothing checked", k)
		}
	}
}
