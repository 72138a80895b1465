package policy

import (
	"github.com/prometheus/common/model"

	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const promURL = "prometheus: {url: http://prometheus:9090}\n"

func TestDefaultRoutes(t *testing.T) {
	c, err := FromDefault(WithPrometheusURL("http://prometheus:9090"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Action{
		"KubeAPIErrorBudgetBurn":      ActionTriage,
		"HerdStaleKubelet":            ActionCordon,
		"HerdStampedeRisk":            ActionProtect,
		"HerdRelistStorm":             ActionIsolate,
		"HerdGhostNodeClient":         ActionQuarantine,
		"HerdMetricsServerTokenAuth":  ActionFlagMetricsServer,
		"HerdKubeletTokenReviewStorm": ActionFlagMetricsServer,
	}
	for name, a := range want {
		r, ok := c.Route(map[string]string{"alertname": name, "severity": "critical"})
		if !ok || r.Action != a {
			t.Errorf("%s: route %+v %v, want %s", name, r, ok, a)
		}
		if !c.Known(name) {
			t.Errorf("Known(%s) = false", name)
		}
	}
	// The fast path: an expensive synchronized relist is isolated; a cheap
	// one is reported, not acted on (issue 12).
	if r, ok := c.Route(map[string]string{"alertname": "HerdSynchronizedRelist", "cost": "expensive"}); !ok || r.Action != ActionIsolate {
		t.Errorf("HerdSynchronizedRelist{cost=expensive}: route %+v %v, want isolate", r, ok)
	}
	for _, cost := range []string{"cheap", ""} {
		if r, ok := c.Route(map[string]string{"alertname": "HerdSynchronizedRelist", "cost": cost}); ok {
			t.Errorf("HerdSynchronizedRelist{cost=%q} routed to %+v", cost, r)
		}
	}
	if r, ok := c.Route(map[string]string{"alertname": "Watchdog"}); ok {
		t.Errorf("Watchdog routed to %+v", r)
	}
	if c.Known("Watchdog") || c.Known("") {
		t.Error("Known accepts an unrouted alertname")
	}
	if !c.DryRun {
		t.Error("dryRun must default to true")
	}
	for _, a := range []Action{ActionTriage, ActionCordon, ActionIsolate, ActionProtect, ActionQuarantine, ActionFlagMetricsServer} {
		if !c.Enabled(a) {
			t.Errorf("Enabled(%s) = false", a)
		}
	}
	if c.Enabled(ActionNone) {
		t.Error("Enabled(none)")
	}
	// The documented defaults.
	if c.Guards.MaxUnschedulableFraction != 0.10 || c.Guards.StormCooldown != model.Duration(30*time.Minute) ||
		c.Guards.ExcludeAnnotation != "herd.dev/exclude" || c.Actions.Isolate.Queues != 16 ||
		c.Actions.Quarantine.TTL != model.Duration(24*time.Hour) || c.Prometheus.Timeout != model.Duration(10*time.Second) ||
		c.Actions.Isolate.MinWaveInstances != 10 ||
		c.Actions.Protect != (Protect{HoldDown: model.Duration(30 * time.Minute), PriorityLevelShares: 1, Queues: 16, HandSize: 4, QueueLengthLimit: 50, MaxManagedFlowSchemas: 10}) {
		t.Errorf("defaults: %+v", c)
	}
	wantLimits := map[Action]int{ActionTriage: 30, ActionCordon: 3, ActionIsolate: 5, ActionProtect: 5, ActionQuarantine: 5, ActionFlagMetricsServer: 5}
	if !reflect.DeepEqual(c.Guards.MaxActionsPerHour, wantLimits) {
		t.Errorf("maxActionsPerHour = %v", c.Guards.MaxActionsPerHour)
	}
	// Default() hands out fresh maps: changing one does not change the next.
	d := Default()
	d.Guards.MaxActionsPerHour[ActionCordon] = 99
	d.Routes[0].Match["alertname"] = "X"
	if e := Default(); e.Guards.MaxActionsPerHour[ActionCordon] != 3 || e.Routes[0].Match["alertname"] != "KubeAPIErrorBudgetBurn" {
		t.Error("Default shares its maps")
	}
}

func TestDefaultNeedsPrometheus(t *testing.T) {
	want := "prometheus.url: required, because routes[0] runs triage and herd re-verifies every alert from Prometheus before acting (set it here or with --prometheus.url)"
	if _, err := FromDefault(); err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
	if _, err := Parse(nil); err == nil || err.Error() != want {
		t.Errorf("empty file: error = %v\nwant    %s", err, want)
	}
	// The flag fills it in, and wins over the file.
	c, err := Parse([]byte(promURL), WithPrometheusURL("https://thanos:10902"))
	if err != nil || c.Prometheus.URL != "https://thanos:10902" {
		t.Errorf("url = %q, %v", c.Prometheus.URL, err)
	}
	// An empty flag keeps the file's.
	c, err = Parse([]byte(promURL), WithPrometheusURL(""))
	if err != nil || c.Prometheus.URL != "http://prometheus:9090" {
		t.Errorf("url = %q, %v", c.Prometheus.URL, err)
	}
	// Routing nothing but none needs no Prometheus.
	if _, err := Parse([]byte("routes:\n- match: {alertname: X}\n  action: none\n")); err != nil {
		t.Error(err)
	}
	if _, err := Parse([]byte("routes: []\n")); err != nil {
		t.Error(err)
	}
}

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(promURL + `
dryRun: false
routes:
- match: {alertname: HerdStaleKubelet, severity: critical}
  action: cordon
- matchRE: {alertname: 'Herd.*Storm', cluster: 'prod-.+'}
  action: isolate
- match: {alertname: HerdStaleKubelet}
  action: none
- action: triage
actions:
  cordon: {uncordonOnResolve: false, nodeSelector: {node.kubernetes.io/pool: workers}}
  isolate: {ttl: 30m, queues: 32, handSize: 6}
guards:
  maxActionsPerHour: {cordon: 1}
  stormCooldown: 1h
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.DryRun {
		t.Error("dryRun: false ignored")
	}
	if c.Actions.Isolate.TTL != model.Duration(30*time.Minute) || c.Actions.Isolate.Queues != 32 || c.Actions.Isolate.HandSize != 6 {
		t.Errorf("isolate = %+v", c.Actions.Isolate)
	}
	// Unset fields keep their defaults; maxActionsPerHour merges key by key.
	if c.Actions.Isolate.QueueLengthLimit != 50 || c.Actions.Isolate.HoldDown != model.Duration(10*time.Minute) {
		t.Errorf("isolate defaults lost: %+v", c.Actions.Isolate)
	}
	if got := c.Guards.MaxActionsPerHour; got[ActionCordon] != 1 || got[ActionIsolate] != 5 || got[ActionTriage] != 30 {
		t.Errorf("maxActionsPerHour = %v", got)
	}
	if c.Actions.Cordon.UncordonOnResolve || c.Actions.Cordon.NodeSelector["node.kubernetes.io/pool"] != "workers" {
		t.Errorf("cordon = %+v", c.Actions.Cordon)
	}
	if len(c.Routes) != 4 {
		t.Fatalf("routes = %+v, want the file's 4 instead of the defaults", c.Routes)
	}

	tests := []struct {
		labels map[string]string
		action Action
	}{
		{map[string]string{"alertname": "HerdStaleKubelet", "severity": "critical"}, ActionCordon},
		{map[string]string{"alertname": "HerdStaleKubelet", "severity": "warning"}, ActionNone}, // first match wins
		{map[string]string{"alertname": "HerdRelistStorm", "cluster": "prod-eu"}, ActionIsolate},
		{map[string]string{"alertname": "HerdRelistStorm", "cluster": "prod-"}, ActionTriage},    // .+ needs one
		{map[string]string{"alertname": "HerdRelistStorm", "cluster": "xprod-eu"}, ActionTriage}, // anchored
		{map[string]string{"alertname": "XHerdRelistStorm", "cluster": "prod-eu"}, ActionTriage}, // anchored
		{map[string]string{"alertname": "HerdKubeletTokenReviewStorm", "cluster": "prod-1"}, ActionIsolate},
		{map[string]string{"alertname": "HerdRelistStorm"}, ActionTriage}, // missing label is ""
		{map[string]string{}, ActionTriage},
		{nil, ActionTriage},
	}
	for _, tc := range tests {
		r, ok := c.Route(tc.labels)
		if !ok || r.Action != tc.action {
			t.Errorf("Route(%v) = %s %v, want %s", tc.labels, r.Action, ok, tc.action)
		}
	}
	// Only equality matchers on alertname make a name known.
	if !c.Known("HerdStaleKubelet") || c.Known("HerdRelistStorm") {
		t.Error("Known: want only HerdStaleKubelet")
	}
}

// TestRouteBuiltInCode: a Route that did not come through Parse compiles
// its patterns on use, and an invalid pattern matches nothing.
func TestRouteBuiltInCode(t *testing.T) {
	r := Route{MatchRE: map[string]string{"node": "n-[0-9]+"}, Action: ActionCordon}
	if !r.Matches(map[string]string{"node": "n-12"}) || r.Matches(map[string]string{"node": "n-12x"}) {
		t.Error("pattern not applied as anchored RE2")
	}
	if (Route{MatchRE: map[string]string{"node": "("}}).Matches(map[string]string{"node": "("}) {
		t.Error("an invalid pattern matched")
	}
}

func TestRoutesNullAndEmpty(t *testing.T) {
	for y, want := range map[string]int{
		promURL + "routes:\n":      len(DefaultRoutes()), // null: the defaults
		promURL + "routes: null\n": len(DefaultRoutes()),
		promURL + "routes: []\n":   0,
		promURL:                    len(DefaultRoutes()),
	} {
		c, err := Parse([]byte(y))
		if err != nil || len(c.Routes) != want {
			t.Errorf("%q: %d routes, %v; want %d", y, len(c.Routes), err, want)
		}
	}
}

// TestParseInvalid: every refusal, with the exact message.
func TestParseInvalid(t *testing.T) {
	const actions = "(want one of triage, cordon, isolate, protect, quarantine, flag-metrics-server, none)"
	tests := []struct{ name, yaml, err string }{
		// Strict decoding.
		{"unknown top-level", promURL + "dry_run: false\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "dry_run"`},
		{"unknown route field", promURL + "routes:\n- matchers: [alertname=X]\n  action: none\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "matchers"`},
		{"unknown action field", promURL + "actions:\n  isolate: {tll: 1h}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "tll"`},
		{"field under flagMetricsServer", promURL + "actions:\n  flagMetricsServer: {annotate: false}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "annotate"`},
		{"bad duration", promURL + "guards: {stormCooldown: 30 minutes}\n", `error unmarshaling JSON: while decoding JSON: unknown unit " minutes" in duration "30 minutes"`},
		{"number duration", promURL + "actions: {isolate: {ttl: 3600}}\n", `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal number into Go struct field Isolate.actions.isolate.ttl of type string`},
		{"string for a number", promURL + "actions: {isolate: {queues: many}}\n", `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field Isolate.actions.isolate.queues of type int`},
		{"dryRun not a bool", "dryRun: maybe\n", `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field Config.dryRun of type bool`},
		{"not yaml", "routes: [\n", "error converting YAML to JSON: yaml: line 1: did not find expected node content"},

		// Routes.
		{"unknown action", promURL + "routes:\n- match: {alertname: X}\n  action: drain\n", `routes[0].action "drain": unknown action ` + actions},
		{"missing action", promURL + "routes:\n- match: {alertname: X}\n", "routes[0].action: missing " + actions},
		{"invalid regex", promURL + "routes:\n- matchRE: {node: '(worker'}\n  action: none\n", `routes[0].matchRE.node "(worker": invalid regular expression: missing closing )`},
		{"regex that anchoring would hide", promURL + "routes:\n- matchRE: {node: 'a)|(b'}\n  action: none\n", `routes[0].matchRE.node "a)|(b": invalid regular expression: unexpected )`},
		{"bad label name", promURL + "routes:\n- match: {node-name: x}\n  action: none\n", `routes[0].match: "node-name" is not a valid label name`},
		{"bad label name in matchRE", promURL + "routes:\n- matchRE: {0node: x}\n  action: none\n", `routes[0].matchRE: "0node" is not a valid label name`},
		{"empty match, mutating", promURL + "routes:\n- action: cordon\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to cordon must name the alerts it acts on"},
		{"empty maps, mutating", promURL + "routes:\n- {match: {}, matchRE: {}, action: quarantine}\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to quarantine must name the alerts it acts on"},
		{"catch-all pattern, mutating", promURL + "routes:\n- matchRE: {alertname: '.*'}\n  action: isolate\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to isolate must name the alerts it acts on"},
		{"catch-all .+ pattern", promURL + "routes:\n- matchRE: {alertname: '(.+)', job: '.*'}\n  action: flag-metrics-server\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to flag-metrics-server must name the alerts it acts on"},
		{"catch-all in disguise", promURL + "routes:\n- matchRE: {alertname: '(.*|Herd.*)', severity: '.*.*'}\n  action: cordon\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to cordon must name the alerts it acts on"},
		{"dotall catch-all", promURL + "routes:\n- matchRE: {alertname: '(?s).*'}\n  action: cordon\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to cordon must name the alerts it acts on"},
		{"empty match, remediating triage", promURL + "actions: {triage: {remediate: true}}\nroutes:\n- action: triage\n", "routes[0]: matches every alert (no match, and matchRE has only catch-all patterns); a route to triage must name the alerts it acts on while actions.triage.remediate is true"},
		{"route after a catch-all", promURL + "routes:\n- action: none\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\n", "routes[1]: unreachable: routes[0] before it matches every alert"},

		// Prometheus.
		{"relative url", "prometheus: {url: 'prometheus:9090'}\n", `prometheus.url "prometheus:9090": must be an absolute http or https URL`},
		{"url without host", "prometheus: {url: 'http:///api'}\n", `prometheus.url "http:///api": must be an absolute http or https URL`},
		{"zero timeout", "prometheus: {url: 'http://p:9090', timeout: 0s}\n", "prometheus.timeout 0s: must be positive"},
		{"url missing for a mutating route", "routes:\n- match: {alertname: X}\n  action: none\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\n", "prometheus.url: required, because routes[1] runs cordon and herd re-verifies every alert from Prometheus before acting (set it here or with --prometheus.url)"},

		// Actions.
		{"isolate ttl zero", promURL + "actions: {isolate: {ttl: 0s}}\n", "actions.isolate.ttl 0s: must be positive (every FlowSchema herd applies expires)"},
		{"quarantine ttl negative", promURL + "actions: {quarantine: {ttl: -1h}}\n", "error unmarshaling JSON: while decoding JSON: not a valid duration string: \"-1h\""},
		{"negative hold-down", promURL + "actions: {isolate: {holdDown: -1m}}\n", "error unmarshaling JSON: while decoding JSON: not a valid duration string: \"-1m\""},
		{"zero shares", promURL + "actions: {isolate: {priorityLevelShares: 0}}\n", "actions.isolate.priorityLevelShares 0: must be 1..20 (0 would jail the client instead of slowing it; more than global-default's 20 would not bound it)"},
		{"too many shares", promURL + "actions: {isolate: {priorityLevelShares: 100}}\n", "actions.isolate.priorityLevelShares 100: must be 1..20 (0 would jail the client instead of slowing it; more than global-default's 20 would not bound it)"},
		{"zero queues", promURL + "actions: {isolate: {queues: 0, handSize: 1}}\n", "actions.isolate.queues 0: must be 1..10000000 (the APF API's range)"},
		{"too many queues", promURL + "actions: {isolate: {queues: 10000001}}\n", "actions.isolate.queues 10000001: must be 1..10000000 (the APF API's range)"},
		{"hand larger than deck", promURL + "actions: {isolate: {queues: 4, handSize: 8}}\n", "actions.isolate.handSize 8: must be 1..queues (4)"},
		{"hand entropy", promURL + "actions: {isolate: {queues: 128, handSize: 100}}\n", "actions.isolate.handSize 100: with 128 queues it needs 700 bits of entropy; the APF API allows 60"},
		{"zero queue length", promURL + "actions: {isolate: {queueLengthLimit: 0}}\n", "actions.isolate.queueLengthLimit 0: must be 1..2147483647 (the APF API's range)"},
		{"protect zero shares", promURL + "actions: {protect: {priorityLevelShares: 0}}\n", "actions.protect.priorityLevelShares 0: must be 1..20 (0 would jail the client instead of slowing it; more than global-default's 20 would not bound it)"},
		{"protect hand larger than deck", promURL + "actions: {protect: {queues: 2, handSize: 3}}\n", "actions.protect.handSize 3: must be 1..queues (2)"},
		{"protect zero queue length", promURL + "actions: {protect: {queueLengthLimit: 0}}\n", "actions.protect.queueLengthLimit 0: must be 1..2147483647 (the APF API's range)"},
		{"protect too many slots", promURL + "actions: {protect: {maxManagedFlowSchemas: 101}}\n", "actions.protect.maxManagedFlowSchemas 101: must be 1..100 (every request is matched against every FlowSchema)"},
		{"protect ttl", promURL + "actions: {protect: {ttl: 1h}}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "ttl"`},
		{"wave of one", promURL + "actions: {isolate: {minWaveInstances: 1}}\n", "actions.isolate.minWaveInstances 1: must be at least 2 (one instance relisting is not a synchronized relist)"},
		{"zero managed flowschemas", promURL + "actions: {isolate: {maxManagedFlowSchemas: 0}}\n", "actions.isolate.maxManagedFlowSchemas 0: must be 1..100 (every request is matched against every FlowSchema)"},
		{"too many quarantine flowschemas", promURL + "actions: {quarantine: {maxManagedFlowSchemas: 1000}}\n", "actions.quarantine.maxManagedFlowSchemas 1000: must be 1..100 (every request is matched against every FlowSchema)"},
		{"bad node selector", promURL + "actions: {cordon: {nodeSelector: {pool: 'a b'}}}\n", `actions.cordon.nodeSelector: value "a b" of "pool": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`},

		// Guards.
		{"fraction zero", promURL + "guards: {maxUnschedulableFraction: 0}\n", "guards.maxUnschedulableFraction 0: must be more than 0 and less than 1 (1 would let herd cordon every node; to never cordon, route no alert to cordon)"},
		{"fraction one", promURL + "guards: {maxUnschedulableFraction: 1}\n", "guards.maxUnschedulableFraction 1: must be more than 0 and less than 1 (1 would let herd cordon every node; to never cordon, route no alert to cordon)"},
		{"fraction negative", promURL + "guards: {maxUnschedulableFraction: -0.1}\n", "guards.maxUnschedulableFraction -0.1: must be more than 0 and less than 1 (1 would let herd cordon every node; to never cordon, route no alert to cordon)"},
		{"fraction NaN", promURL + "guards: {maxUnschedulableFraction: .nan}\n", "error converting YAML to JSON: json: unsupported value: NaN"},
		{"zero actions per hour", promURL + "guards: {maxActionsPerHour: {isolate: 0}}\n", "guards.maxActionsPerHour.isolate 0: must be at least 1 because isolate is enabled (routes[3]); to disable it, route no alert to it"},
		{"negative actions per hour", promURL + "guards: {maxActionsPerHour: {cordon: -1}}\n", "guards.maxActionsPerHour.cordon -1: must not be negative"},
		{"limits removed", promURL + "routes:\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\nguards: {maxActionsPerHour: null}\n", "guards.maxActionsPerHour.cordon: missing; cordon is enabled (routes[0]), so it needs a limit of at least 1 (to disable it, route no alert to it)"},
		{"remediation needs limits", promURL + "routes:\n- match: {alertname: KubeAPIErrorBudgetBurn}\n  action: triage\nactions: {triage: {remediate: true}}\nguards: {maxActionsPerHour: {quarantine: 0}}\n", "guards.maxActionsPerHour.quarantine 0: must be at least 1 because quarantine is enabled (triage remediates, routes[0]); to disable it, route no alert to it"},
		{"unknown action limit", promURL + "guards: {maxActionsPerHour: {drain: 1}}\n", "guards.maxActionsPerHour.drain: unknown action " + actions},
		{"limit for none", promURL + "guards: {maxActionsPerHour: {none: 1}}\n", "guards.maxActionsPerHour.none: none takes no action to limit"},
		{"zero cooldown", promURL + "guards: {stormCooldown: 0s}\n", "guards.stormCooldown 0s: must be positive (it is the pause after a guard trips)"},
		{"no exclude annotation", promURL + "guards: {excludeAnnotation: ''}\n", "guards.excludeAnnotation: required (nodes and objects carrying it are never touched)"},
		{"bad exclude annotation", promURL + "guards: {excludeAnnotation: 'herd.dev/'}\n", `guards.excludeAnnotation "herd.dev/": not an annotation key: name part must be non-empty; name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},

		// Several at once, in file order.
		{"three errors", "prometheus: {url: http://p:9090, timeout: 0s}\nactions: {isolate: {ttl: 0s}}\nguards: {stormCooldown: 0s}\n",
			"prometheus.timeout 0s: must be positive\nactions.isolate.ttl 0s: must be positive (every FlowSchema herd applies expires)\nguards.stormCooldown 0s: must be positive (it is the pause after a guard trips)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || err.Error() != tc.err {
				t.Errorf("error = %v\nwant    %s", err, tc.err)
			}
		})
	}
}

// TestAllowedEdges: the boundaries of each range are accepted.
func TestAllowedEdges(t *testing.T) {
	for _, y := range []string{
		"actions: {isolate: {priorityLevelShares: 1, queues: 1, handSize: 1, queueLengthLimit: 1, maxManagedFlowSchemas: 1}}\n",
		"actions: {isolate: {priorityLevelShares: 20, queues: 10000000, handSize: 2, maxManagedFlowSchemas: 100, holdDown: 0s}}\n",
		"actions: {isolate: {queues: 128, handSize: 8}}\n", // 56 bits: as the API allows
		"actions: {protect: {priorityLevelShares: 20, queues: 1, handSize: 1, queueLengthLimit: 1, maxManagedFlowSchemas: 100, holdDown: 0s}}\n",
		"guards: {maxUnschedulableFraction: 0.999, maxActionsPerHour: {cordon: 1}}\n",
		// A disabled action may be limited to 0.
		"routes:\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\nguards: {maxActionsPerHour: {isolate: 0, protect: 0, quarantine: 0}}\n",
		// A catch-all is fine for none, and for triage without remediation.
		"routes:\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\n- action: none\n",
		"routes:\n- matchRE: {alertname: '.*'}\n  action: triage\n",
		// A pattern that merely can match everything of one label is not a catch-all.
		"routes:\n- matchRE: {alertname: 'Herd.*'}\n  action: isolate\n",
		"routes:\n- {match: {alertname: HerdStaleKubelet}, matchRE: {node: '.*'}, action: cordon}\n",
		// Requiring a label to be there is a filter (alertname excepted).
		"routes:\n- matchRE: {node: '.+'}\n  action: cordon\n",
		"guards: {excludeAnnotation: example.com/keep-out}\n",
	} {
		if _, err := Parse([]byte(promURL + y)); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "responder.yaml")
	if err := os.WriteFile(p, []byte("bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	want := "config " + p + `: error unmarshaling JSON: while decoding JSON: json: unknown field "bogus"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := Load(missing); err == nil || !strings.HasPrefix(err.Error(), "read config: open "+missing) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(p, []byte(promURL+"dryRun: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p); err != nil || c.DryRun {
		t.Errorf("Load = %+v, %v", c, err)
	}
}

// TestRoundTrip: the effective configuration (as /debug/config shows it)
// parses back to itself.
func TestRoundTrip(t *testing.T) {
	c, err := Parse([]byte(promURL + "routes:\n- matchRE: {alertname: 'Herd.*'}\n  action: isolate\n"))
	if err != nil {
		t.Fatal(err)
	}
	assertRoundTrip(t, c)
}

func assertRoundTrip(t *testing.T, c Config) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(b)
	if err != nil {
		t.Fatalf("reparse %s: %v", b, err)
	}
	b2, err := json.Marshal(c2)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(b2) {
		t.Fatalf("round trip changed the config:\n%s\n%s", b, b2)
	}
}

// TestDocListsTheDefaults: the listing in the package comment is Default,
// not a second copy that could drift from it.
func TestDocListsTheDefaults(t *testing.T) {
	src, err := os.ReadFile("policy.go")
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "//\tdryRun:") {
			in = true
		}
		if in && !strings.HasPrefix(line, "//\t") {
			break
		}
		if in {
			doc = append(doc, strings.TrimPrefix(line, "//\t"))
		}
	}
	if len(doc) < 20 {
		t.Fatalf("found %d lines of the listing in policy.go's package comment", len(doc))
	}
	var listed Config
	if err := yaml.UnmarshalStrict([]byte(strings.Join(doc, "\n")), &listed); err != nil {
		t.Fatalf("the listing does not decode strictly: %v", err)
	}
	got, _ := json.Marshal(listed)
	want, _ := json.Marshal(Default())
	if string(got) != string(want) {
		t.Errorf("the package comment lists\n%s\nDefault() is\n%s", got, want)
	}
}

// TestMeasurementDefaults: off by default; the default clients are the
// node-side agents herd classifies but metrics-server, 43 schemas within the
// 50 slots; clients omitted or null means those, [] means none.
func TestMeasurementDefaults(t *testing.T) {
	c, err := Parse([]byte(promURL))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Measurement
	if m.Enabled || m.MaxFlowSchemas != 50 || m.OwnerClusterRole != "herd-responder" || m.Schemas() != 43 {
		t.Errorf("defaults: enabled %v, max %d, owner %q, %d schemas", m.Enabled, m.MaxFlowSchemas, m.OwnerClusterRole, m.Schemas())
	}
	var clients []string
	for _, mc := range m.Clients {
		clients = append(clients, mc.Role+"/"+mc.Client)
	}
	if want := "kubelet/kubelet kube-proxy/kube-proxy cni/calico-node cni/cilium-agent cni/flannel cni/antrea-agent cni/kube-router cni/aws-node"; strings.Join(clients, " ") != want {
		t.Errorf("default clients %v, want %s", clients, want)
	}
	for y, want := range map[string]int{
		promURL + "measurement: {enabled: true}\n":                43,
		promURL + "measurement: {enabled: true, clients: null}\n": 43,
		promURL + "measurement: {enabled: true, clients: []}\n":   0,
		promURL + "measurement:\n  clients:\n  - {role: cni, client: cilium-agent, subjects: [{serviceAccount: 'cilium:cilium'}], resources: [pods, nodes]}\n": 2,
	} {
		c, err := Parse([]byte(y))
		if err != nil || c.Measurement.Schemas() != want {
			t.Errorf("%q: %d schemas, %v; want %d", y, c.Measurement.Schemas(), err, want)
		}
	}
}

// TestMeasurementInvalid: every refusal of the measurement settings, with
// the exact message.
func TestMeasurementInvalid(t *testing.T) {
	client := func(subjects, resources string) string {
		return promURL + "measurement:\n  clients:\n  - {role: cni, client: cilium-agent, subjects: " + subjects + ", resources: " + resources + "}\n"
	}
	for _, tc := range []struct{ name, yaml, err string }{
		{"unknown field", promURL + "measurement: {enable: true}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "enable"`},
		{"no slot", promURL + "measurement: {maxFlowSchemas: 0}\n", "measurement.maxFlowSchemas 0: must be 1..100 (every request is matched against every FlowSchema)"},
		{"too few slots", promURL + "measurement: {maxFlowSchemas: 40}\n", "measurement.clients need 43 FlowSchemas (one per subject and resource); measurement.maxFlowSchemas is 40 (raise it, and the RBAC rendered from it, or measure less)"},
		{"owner", promURL + "measurement: {ownerClusterRole: 'Herd Responder'}\n", `measurement.ownerClusterRole "Herd Responder": not a ClusterRole name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"role", promURL + "measurement:\n  clients:\n  - {role: other, client: x, subjects: [{group: g}], resources: [pods]}\n", `measurement.clients[0].role "other": must be a node-side role (kubelet, kube-proxy, cni, metrics-server)`},
		{"client", promURL + "measurement:\n  clients:\n  - {role: cni, client: 'Cilium Agent', subjects: [{group: g}], resources: [pods]}\n", `measurement.clients[0].client "Cilium Agent": must be a client name (a lowercase DNS label, dots allowed), not other`},
		{"no subject", client("[]", "[pods]"), "measurement.clients[0].subjects: at least one identity (group, user or serviceAccount)"},
		{"no resource", client("[{group: g}]", "[]"), "measurement.clients[0].resources: at least one resource (plural, or plural.group)"},
		{"two kinds", client("[{group: g, user: u}]", "[pods]"), "measurement.clients[0].subjects[0]: set exactly one of group, user, serviceAccount"},
		{"every caller", client("[{group: 'system:authenticated'}]", "[pods]"), `measurement.clients[0].subjects[0]: group "system:authenticated" takes in callers that are not one node-side client`},
		{"a namespace's service accounts", client("[{group: 'system:serviceaccounts:kube-system'}]", "[pods]"), `measurement.clients[0].subjects[0]: group "system:serviceaccounts:kube-system" takes in callers that are not one node-side client`},
		{"wildcard user", client("[{user: '*'}]", "[pods]"), `measurement.clients[0].subjects[0]: user "*": not one authenticated user`},
		{"anonymous", client("[{user: 'system:anonymous'}]", "[pods]"), `measurement.clients[0].subjects[0]: user "system:anonymous": not one authenticated user`},
		{"service account as user", client("[{user: 'system:serviceaccount:kube-system:cilium'}]", "[pods]"), `measurement.clients[0].subjects[0]: user "system:serviceaccount:kube-system:cilium" is a service account: write serviceAccount: NAMESPACE:NAME`},
		{"one kubelet", client("[{user: 'system:node:n1'}]", "[pods]"), `measurement.clients[0].subjects[0]: user "system:node:n1" is one kubelet: measure the fleet with group: system:nodes`},
		{"wildcard namespace", client("[{serviceAccount: '*:cilium'}]", "[pods]"), `measurement.clients[0].subjects[0]: serviceAccount "*:cilium": want NAMESPACE:NAME (no wildcard: an APF subject names its namespace)`},
		{"bad resource", client("[{group: g}]", "['Pods']"), `measurement.clients[0].resources[0] "Pods": not a resource (plural, or plural.group, as herd's resource label writes it)`},
		{"twice", promURL + "measurement:\n  clients:\n  - {role: cni, client: a, subjects: [{group: g}], resources: [pods]}\n  - {role: cni, client: b, subjects: [{group: g}], resources: [pods]}\n",
			"measurement.clients[1]: group:g's LISTs of pods are measured already by measurement.clients[0]: one FlowSchema per identity and resource"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || err.Error() != tc.err {
				t.Errorf("error = %v\nwant    %s", err, tc.err)
			}
		})
	}
}
