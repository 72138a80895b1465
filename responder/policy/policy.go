// Package policy reads `herd responder --config`: which alert runs which
// action, how each action is bounded, and the limits every action keeps.
// Default is the one source of the defaults: the file is decoded over it,
// and the listing below is checked against it by a test.
//
// The file is strict YAML: an unknown field is an error naming it, so a typo
// never silently falls back to a default. Validation refuses any
// configuration that would let herd act on every node or without limits, and
// says why. The whole file, with its defaults:
//
//	dryRun: true                   # decide, record and count, change nothing; acting needs an explicit false
//	prometheus:
//	  url: ""                      # required when a route has an action other than none (alerts are
//	                               # triggers, not evidence: herd re-verifies from Prometheus); or --prometheus.url
//	  timeout: 10s                 # per evidence query
//	  rateWindow: 5m               # the mixin's _config.rateWindow: herd's recording rules are named after it
//	routes:                        # first match wins; these defaults apply only when routes is omitted
//	- match: {alertname: KubeAPIErrorBudgetBurn}
//	  action: triage
//	- match: {alertname: HerdStaleKubelet}
//	  action: cordon
//	- match: {alertname: HerdStampedeRisk}
//	  action: protect
//	- match: {alertname: HerdRelistStorm}
//	  action: isolate
//	- match: {alertname: HerdSynchronizedRelist, cost: expensive}
//	  action: isolate            # the fast path; cheap synchronized relists are reported, not acted on
//	- match: {alertname: HerdGhostNodeClient}
//	  action: quarantine
//	- match: {alertname: HerdMetricsServerTokenAuth}
//	  action: flag-metrics-server
//	- match: {alertname: HerdKubeletTokenReviewStorm}
//	  action: flag-metrics-server
//	actions:
//	  triage: {remediate: false}   # true: triage also runs the remediations its findings call for
//	  cordon:
//	    uncordonOnResolve: true    # only nodes herd cordoned and nobody touched since
//	    nodeSelector: {}           # label equality: nodes herd may cordon; {} = every non-control-plane node
//	  isolate:                     # the bounded PriorityLevelConfiguration and FlowSchemas herd applies
//	    ttl: 1h                    # removed after this long whatever happens
//	    holdDown: 10m              # kept this long after the alert resolves
//	    priorityLevelShares: 2     # nominalConcurrencyShares, 1..20
//	    queues: 16                 # 1..10000000 (APF API)
//	    handSize: 4                # 1..queues, entropy of (queues, handSize) at most 60 bits (APF API)
//	    queueLengthLimit: 50       # at least 1 (APF API)
//	    maxManagedFlowSchemas: 10  # 1..100
//	    minSubjectRelists: 3       # an identity is a subject only with this many relists of its own in the
//	                               # exporter's window (herd_instance_relists; its accounting.relistThreshold)
//	    minWaveInstances: 10       # HerdSynchronizedRelist: instances of the client in the relist wave
//	                               # (herd_relist_wave_instances) before isolate believes it
//	  protect:                     # the standing guard against a forecast stampede (HerdStampedeRisk)
//	    holdDown: 30m              # kept this long after the risk clears; no TTL while it holds
//	    priorityLevelShares: 1     # herd-protect's nominalConcurrencyShares, 1..20: the smallest level APF
//	                               # can express (3 seats of the default 600); protect checks that it fits
//	    queues: 16
//	    handSize: 4
//	    queueLengthLimit: 50
//	    maxManagedFlowSchemas: 10  # 1..100
//	  quarantine:
//	    ttl: 24h
//	    maxManagedFlowSchemas: 10
//	  flagMetricsServer: {}
//	measurement:                   # without audit logs: per-client LIST counters from API Priority and Fairness
//	  enabled: false               # true: the leader keeps one FlowSchema per (subject, resource) below, in the
//	                               # priority level and with the distinguisher the apiserver chose without it
//	                               # (docs/apf-measurement.md); written even with dryRun: true, which governs actions
//	  maxFlowSchemas: 50           # slots herd-measure-1..N (RBAC pins them); subjects x resources must fit, 1..100
//	  ownerClusterRole: herd-responder # owner of every measurement FlowSchema: deleting it (uninstall) deletes them
//	  clients:                     # omitted or null: these, the node-side agents herd classifies; [] measures nothing
//	  - {role: kubelet, client: kubelet, subjects: [{group: "system:nodes"}], resources: [pods, services]}
//	  - {role: kube-proxy, client: kube-proxy, subjects: [{user: "system:kube-proxy"}, {serviceAccount: "kube-system:kube-proxy"}], resources: [services, endpointslices.discovery.k8s.io, nodes]}
//	  - {role: cni, client: calico-node, subjects: [{serviceAccount: "kube-system:calico-node"}, {serviceAccount: "calico-system:calico-node"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io]}
//	  - {role: cni, client: cilium-agent, subjects: [{serviceAccount: "kube-system:cilium"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io, ciliumendpoints.cilium.io, ciliumnodes.cilium.io, ciliumidentities.cilium.io]}
//	  - {role: cni, client: flannel, subjects: [{serviceAccount: "kube-flannel:flannel"}, {serviceAccount: "kube-system:flannel"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io]}
//	  - {role: cni, client: antrea-agent, subjects: [{serviceAccount: "kube-system:antrea-agent"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io]}
//	  - {role: cni, client: kube-router, subjects: [{serviceAccount: "kube-system:kube-router"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io]}
//	  - {role: cni, client: aws-node, subjects: [{serviceAccount: "kube-system:aws-node"}], resources: [pods, nodes, services, endpointslices.discovery.k8s.io]}
//	guards:
//	  maxUnschedulableFraction: 0.10  # of all nodes, counting every cordoned node, not only herd's
//	  maxActionsPerHour: {triage: 30, cordon: 3, isolate: 5, protect: 5, quarantine: 5, flag-metrics-server: 5}
//	  stormCooldown: 30m              # nothing of that action runs for this long once a guard trips
//	  excludeAnnotation: herd.dev/exclude
//
// Matching: match is label equality; matchRE holds RE2 patterns anchored at
// both ends as in Prometheus and Alertmanager (`Herd.*` matches HerdFoo, not
// XHerdFoo). A label an alert lacks has the value "". A route matches when all
// its matchers do.
//
// maxActionsPerHour is merged over its defaults key by key; routes and
// measurement.clients replace their defaults as a whole: omitted or null
// means the defaults, [] means none.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/util/shufflesharding"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// Action names what herd does about an alert.
type Action string

// The actions (SPEC §4.2).
const (
	ActionTriage            Action = "triage"
	ActionCordon            Action = "cordon"
	ActionIsolate           Action = "isolate"
	ActionProtect           Action = "protect"
	ActionQuarantine        Action = "quarantine"
	ActionFlagMetricsServer Action = "flag-metrics-server"
	ActionNone              Action = "none"
)

// AllActions lists every action, in the order error messages name them.
var AllActions = []Action{ActionTriage, ActionCordon, ActionIsolate, ActionProtect, ActionQuarantine, ActionFlagMetricsServer, ActionNone}

// mutating are the actions that change cluster objects.
var mutating = []Action{ActionCordon, ActionIsolate, ActionProtect, ActionQuarantine, ActionFlagMetricsServer}

// Mutating reports whether a changes cluster objects (triage only reads and
// records, unless actions.triage.remediate runs the others for it).
func (a Action) Mutating() bool { return slices.Contains(mutating, a) }

func (a Action) known() bool { return slices.Contains(AllActions, a) }

// Config is the responder's configuration file.
type Config struct {
	// DryRun decides, records and counts but changes nothing.
	DryRun     bool       `json:"dryRun"`
	Prometheus Prometheus `json:"prometheus"`
	// Routes map alerts to actions; the first that matches wins.
	Routes  []Route `json:"routes"`
	Actions Actions `json:"actions"`
	// Measurement keeps the APF measurement FlowSchemas (without audit
	// logs); it is not an action and DryRun does not govern it.
	Measurement Measurement `json:"measurement"`
	Guards      Guards      `json:"guards"`
}

// Measurement configures the APF measurement FlowSchemas: for each subject
// of each client and each of its resources, a FlowSchema for `list` that
// keeps the requests in the priority level they had, so that the
// apiserver's apiserver_flowcontrol_* metrics count them per client and
// resource (docs/apf-measurement.md).
type Measurement struct {
	// Enabled writes the schemas; false removes any the responder wrote.
	Enabled bool `json:"enabled"`
	// MaxFlowSchemas is the number of slots herd-measure-1..N, the names
	// the responder's RBAC pins its writes to.
	MaxFlowSchemas int `json:"maxFlowSchemas"`
	// OwnerClusterRole owns every measurement FlowSchema (ownerReferences):
	// the responder's own ClusterRole, so that deleting it (helm uninstall,
	// kubectl delete -f manifests/rbac/responder.yaml) has the garbage
	// collector delete the schemas.
	OwnerClusterRole string `json:"ownerClusterRole"`
	// Clients are what is measured; nil means DefaultMeasuredClients.
	Clients []MeasuredClient `json:"clients"`
}

// MeasuredClient is one node-side client and what to measure of it.
type MeasuredClient struct {
	Role   string `json:"role"`
	Client string `json:"client"`
	// Subjects are the client's identities: each gets its own FlowSchema
	// per resource, so that each carries its own evidence.
	Subjects []nodeclient.Subject `json:"subjects"`
	// Resources are plural[.group], as herd's resource label writes them
	// (pods, endpointslices.discovery.k8s.io).
	Resources []string `json:"resources"`
}

// Schemas is the number of FlowSchemas the clients take.
func (m Measurement) Schemas() int {
	n := 0
	for _, c := range m.Clients {
		n += len(c.Subjects) * len(c.Resources)
	}
	return n
}

// measuredResources are what each role's agents LIST that a storm makes
// expensive: whole-cluster pods, nodes, services and endpoint slices, and
// Cilium's own objects. A kubelet's Node and its ConfigMaps and Secrets are
// read one object at a time (metadata.name=), which APF cannot tell from a
// relist, so they are not measured.
var measuredResources = map[nodeclient.Role][]string{
	nodeclient.RoleKubelet:   {"pods", "services"},
	nodeclient.RoleKubeProxy: {"services", "endpointslices.discovery.k8s.io", "nodes"},
	nodeclient.RoleCNI:       {"pods", "nodes", "services", "endpointslices.discovery.k8s.io"},
}

var extraMeasuredResources = map[string][]string{
	"cilium-agent": {"ciliumendpoints.cilium.io", "ciliumnodes.cilium.io", "ciliumidentities.cilium.io"},
}

// DefaultMeasuredClients are the node-side agents herd classifies
// (nodeclient.DefaultAgents) but metrics-server, each with its identities
// as APF subjects and the resources its role lists.
func DefaultMeasuredClients() []MeasuredClient {
	var out []MeasuredClient
	for _, a := range nodeclient.DefaultAgents() {
		res, ok := measuredResources[a.Role]
		if !ok {
			continue
		}
		out = append(out, MeasuredClient{Role: a.Role.String(), Client: a.Client, Subjects: a.Subjects(),
			Resources: append(slices.Clone(res), extraMeasuredResources[a.Client]...)})
	}
	return out
}

// Prometheus is where the evidence comes from.
type Prometheus struct {
	URL     string         `json:"url"`
	Timeout model.Duration `json:"timeout"`
	// RateWindow is the mixin's _config.rateWindow; the recording rules
	// herd reads are named after it (herd:relists_by_resource:rate5m).
	RateWindow string `json:"rateWindow"`
}

// Route sends the alerts that match it to an action.
type Route struct {
	// Match is label equality.
	Match map[string]string `json:"match,omitempty"`
	// MatchRE maps label names to RE2 patterns, anchored at both ends.
	MatchRE map[string]string `json:"matchRE,omitempty"`
	Action  Action            `json:"action"`

	re map[string]*regexp.Regexp // compiled MatchRE, set by Parse
}

// Actions tune each action.
type Actions struct {
	Triage            Triage            `json:"triage"`
	Cordon            Cordon            `json:"cordon"`
	Isolate           Isolate           `json:"isolate"`
	Protect           Protect           `json:"protect"`
	Quarantine        Quarantine        `json:"quarantine"`
	FlagMetricsServer FlagMetricsServer `json:"flagMetricsServer"`
}

// Triage tunes the triage action.
type Triage struct {
	// Remediate runs the remediations triage's findings call for (each
	// still passes its own guards and limits).
	Remediate bool `json:"remediate"`
}

// Cordon tunes the cordon action.
type Cordon struct {
	// UncordonOnResolve uncordons, when the alert resolves, nodes herd
	// cordoned that nobody touched since.
	UncordonOnResolve bool `json:"uncordonOnResolve"`
	// NodeSelector restricts the nodes herd may cordon (label equality);
	// empty means every node. Control-plane nodes are never cordoned.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
}

// Level is the spec of an action's priority level (herd-isolate,
// herd-protect): installed with herd from these values (the chart renders
// them), created by the responder only when it finds the level missing.
// The file keeps them flat under the action (actions.isolate.queues), so
// that its errors name the keys the file has.
type Level struct {
	PriorityLevelShares int `json:"priorityLevelShares"`
	Queues              int `json:"queues"`
	HandSize            int `json:"handSize"`
	QueueLengthLimit    int `json:"queueLengthLimit"`
}

// Isolate tunes the isolate action's APF objects.
type Isolate struct {
	TTL                   model.Duration `json:"ttl"`
	HoldDown              model.Duration `json:"holdDown"`
	PriorityLevelShares   int            `json:"priorityLevelShares"`
	Queues                int            `json:"queues"`
	HandSize              int            `json:"handSize"`
	QueueLengthLimit      int            `json:"queueLengthLimit"`
	MaxManagedFlowSchemas int            `json:"maxManagedFlowSchemas"`
	// MinSubjectRelists is how many relists of the resource in the
	// exporter's window an identity must have made itself (its busiest
	// instance, herd_instance_relists) to be a subject of the FlowSchema:
	// sharing a client label with stormers is not evidence (issue 16).
	MinSubjectRelists int `json:"minSubjectRelists"`
	// MinWaveInstances is how many of the client's instances must be in a
	// relist wave (herd_relist_wave_instances) for isolate to believe a
	// HerdSynchronizedRelist: the fast path acts on the wave, before any
	// instance relisted often enough to show a relist rate.
	MinWaveInstances int `json:"minWaveInstances"`
}

// Protect tunes the protect action: its standing FlowSchemas and the
// priority level herd-protect they route to.
type Protect struct {
	// HoldDown keeps a guard this long after HerdStampedeRisk resolved.
	// There is no TTL: a guard stays while its risk holds.
	HoldDown model.Duration `json:"holdDown"`
	// herd-protect's spec (installed with herd; protect checks that it
	// bounds the target's LISTs enough and never changes it).
	PriorityLevelShares   int `json:"priorityLevelShares"`
	Queues                int `json:"queues"`
	HandSize              int `json:"handSize"`
	QueueLengthLimit      int `json:"queueLengthLimit"`
	MaxManagedFlowSchemas int `json:"maxManagedFlowSchemas"`
}

// Quarantine tunes the quarantine action.
type Quarantine struct {
	TTL                   model.Duration `json:"ttl"`
	MaxManagedFlowSchemas int            `json:"maxManagedFlowSchemas"`
}

// Level is isolate's priority level spec.
func (is Isolate) Level() Level {
	return Level{PriorityLevelShares: is.PriorityLevelShares, Queues: is.Queues, HandSize: is.HandSize, QueueLengthLimit: is.QueueLengthLimit}
}

// Level is protect's priority level spec.
func (p Protect) Level() Level {
	return Level{PriorityLevelShares: p.PriorityLevelShares, Queues: p.Queues, HandSize: p.HandSize, QueueLengthLimit: p.QueueLengthLimit}
}

// FlagMetricsServer has no settings yet; it is a struct so that any field
// given is an error rather than ignored.
type FlagMetricsServer struct{}

// Guards bound every action (SPEC §4.3).
type Guards struct {
	// MaxUnschedulableFraction of all nodes may be unschedulable after a
	// cordon, counting every cordoned node.
	MaxUnschedulableFraction float64 `json:"maxUnschedulableFraction"`
	// MaxActionsPerHour per action.
	MaxActionsPerHour map[Action]int `json:"maxActionsPerHour"`
	// StormCooldown stops an action for this long once a guard trips.
	StormCooldown model.Duration `json:"stormCooldown"`
	// ExcludeAnnotation marks nodes and objects herd never touches.
	ExcludeAnnotation string `json:"excludeAnnotation"`
}

// DefaultRoutes are the routes of SPEC §4.2.
func DefaultRoutes() []Route {
	r := func(alertname string, a Action) Route {
		return Route{Match: map[string]string{"alertname": alertname}, Action: a}
	}
	return []Route{
		r("KubeAPIErrorBudgetBurn", ActionTriage),
		r("HerdStaleKubelet", ActionCordon),
		r("HerdStampedeRisk", ActionProtect),
		r("HerdRelistStorm", ActionIsolate),
		{Match: map[string]string{"alertname": "HerdSynchronizedRelist", "cost": "expensive"}, Action: ActionIsolate},
		r("HerdGhostNodeClient", ActionQuarantine),
		r("HerdMetricsServerTokenAuth", ActionFlagMetricsServer),
		r("HerdKubeletTokenReviewStorm", ActionFlagMetricsServer),
	}
}

// Default is the configuration with no file. It does not validate on its
// own: prometheus.url has no default.
func Default() Config {
	return Config{
		DryRun:     true,
		Prometheus: Prometheus{Timeout: model.Duration(10 * time.Second), RateWindow: "5m"},
		Routes:     DefaultRoutes(),
		Actions: Actions{
			Triage: Triage{Remediate: false},
			Cordon: Cordon{UncordonOnResolve: true},
			Isolate: Isolate{
				TTL: model.Duration(time.Hour), HoldDown: model.Duration(10 * time.Minute),
				PriorityLevelShares: 2, Queues: 16, HandSize: 4, QueueLengthLimit: 50, MaxManagedFlowSchemas: 10,
				MinSubjectRelists: 3, MinWaveInstances: 10,
			},
			Protect: Protect{
				HoldDown: model.Duration(30 * time.Minute), PriorityLevelShares: 1, Queues: 16, HandSize: 4, QueueLengthLimit: 50,
				MaxManagedFlowSchemas: 10,
			},
			Quarantine: Quarantine{TTL: model.Duration(24 * time.Hour), MaxManagedFlowSchemas: 10},
		},
		Measurement: Measurement{MaxFlowSchemas: 50, OwnerClusterRole: "herd-responder", Clients: DefaultMeasuredClients()},
		Guards: Guards{
			MaxUnschedulableFraction: 0.10,
			MaxActionsPerHour: map[Action]int{
				ActionTriage: 30, ActionCordon: 3, ActionIsolate: 5, ActionProtect: 5, ActionQuarantine: 5, ActionFlagMetricsServer: 5,
			},
			StormCooldown:     model.Duration(30 * time.Minute),
			ExcludeAnnotation: "herd.dev/exclude",
		},
	}
}

// Option changes a decoded configuration before it is validated, e.g. to
// apply a command-line flag.
type Option func(*Config)

// WithPrometheusURL sets prometheus.url when u is not empty (a flag given
// on the command line wins over the file).
func WithPrometheusURL(u string) Option {
	return func(c *Config) {
		if u != "" {
			c.Prometheus.URL = u
		}
	}
}

// Load reads path over the defaults, applies opts and validates the result.
// Errors name the file.
func Load(path string, opts ...Option) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b, opts...)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults, applies opts and validates the
// result. With no error, the config's regular expressions are compiled.
func Parse(b []byte, opts ...Option) (Config, error) {
	c := Default()
	// encoding/json decodes a list into the elements already there without
	// zeroing them, so "- action: cordon" over the default routes would
	// keep the first default's match. Decode routes into nothing instead,
	// and put the defaults back only when the file has no routes.
	c.Routes = nil
	c.Measurement.Clients = nil
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, err
	}
	if c.Routes == nil || c.Measurement.Clients == nil {
		var has struct {
			Routes      *[]json.RawMessage `json:"routes"`
			Measurement struct {
				Clients *[]json.RawMessage `json:"clients"`
			} `json:"measurement"`
		}
		if err := yaml.Unmarshal(b, &has); err != nil {
			return Config{}, err
		}
		switch {
		case c.Routes != nil:
		case has.Routes == nil: // omitted or null
			c.Routes = DefaultRoutes()
		default:
			c.Routes = []Route{}
		}
		switch {
		case c.Measurement.Clients != nil:
		case has.Measurement.Clients == nil:
			c.Measurement.Clients = DefaultMeasuredClients()
		default:
			c.Measurement.Clients = []MeasuredClient{}
		}
	}
	for _, o := range opts {
		o(&c)
	}
	if err := c.compile(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// FromDefault is Default with opts applied, validated: the configuration
// of a responder started without --config.
func FromDefault(opts ...Option) (Config, error) {
	c := Default()
	for _, o := range opts {
		o(&c)
	}
	if err := c.compile(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// compile validates c and compiles its routes' patterns in place.
func (c *Config) compile() error {
	if err := c.Validate(); err != nil {
		return err
	}
	for i := range c.Routes {
		c.Routes[i].re = compileAll(c.Routes[i].MatchRE)
	}
	return nil
}

// Validate checks c and says, for each problem, what is wrong and why.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// Routes.
	firstCatchAll := -1
	for i, r := range c.Routes {
		switch {
		case r.Action == "":
			fail("routes[%d].action: missing (want one of %s)", i, actionList())
		case !r.Action.known():
			fail("routes[%d].action %q: unknown action (want one of %s)", i, r.Action, actionList())
		}
		for _, name := range slices.Sorted(maps.Keys(r.Match)) {
			if !validLabelName(name) {
				fail("routes[%d].match: %q is not a valid label name", i, name)
			}
		}
		reOK := true
		for _, name := range slices.Sorted(maps.Keys(r.MatchRE)) {
			if !validLabelName(name) {
				fail("routes[%d].matchRE: %q is not a valid label name", i, name)
			}
			// Compiled alone first: anchoring must not turn "a)|(b" into a
			// valid pattern that means something else.
			if _, err := regexp.Compile(r.MatchRE[name]); err != nil {
				reOK = false
				fail("routes[%d].matchRE.%s %q: invalid regular expression: %v", i, name, r.MatchRE[name], unwrapRE(err))
			}
		}
		if firstCatchAll >= 0 {
			fail("routes[%d]: unreachable: routes[%d] before it matches every alert", i, firstCatchAll)
			continue
		}
		if reOK && r.matchesEverything() {
			firstCatchAll = i
			switch {
			case r.Action.Mutating():
				fail("routes[%d]: matches every alert (no match, and matchRE has only catch-all patterns); a route to %s must name the alerts it acts on", i, r.Action)
			case r.Action == ActionTriage && c.Actions.Triage.Remediate:
				fail("routes[%d]: matches every alert (no match, and matchRE has only catch-all patterns); a route to triage must name the alerts it acts on while actions.triage.remediate is true", i)
			}
		}
	}

	// Prometheus.
	if c.Prometheus.URL == "" {
		if i := c.firstRouteActing(); i >= 0 {
			fail("prometheus.url: required, because routes[%d] runs %s and herd re-verifies every alert from Prometheus before acting (set it here or with --prometheus.url)", i, c.Routes[i].Action)
		}
	} else if u, err := url.Parse(c.Prometheus.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fail("prometheus.url %q: must be an absolute http or https URL", c.Prometheus.URL)
	}
	if d, err := model.ParseDuration(c.Prometheus.RateWindow); err != nil || d <= 0 {
		fail("prometheus.rateWindow %q: must be a Prometheus duration such as 5m (the mixin's _config.rateWindow)", c.Prometheus.RateWindow)
	}
	if c.Prometheus.Timeout <= 0 {
		fail("prometheus.timeout %s: must be positive", c.Prometheus.Timeout)
	}

	// Actions.
	for _, k := range slices.Sorted(maps.Keys(c.Actions.Cordon.NodeSelector)) {
		if msgs := content.IsLabelKey(k); len(msgs) > 0 {
			fail("actions.cordon.nodeSelector: key %q: %s", k, strings.Join(msgs, "; "))
		}
		if v := c.Actions.Cordon.NodeSelector[k]; len(content.IsLabelValue(v)) > 0 {
			fail("actions.cordon.nodeSelector: value %q of %q: %s", v, k, strings.Join(content.IsLabelValue(v), "; "))
		}
	}
	is := c.Actions.Isolate
	if is.TTL <= 0 {
		fail("actions.isolate.ttl %s: must be positive (every FlowSchema herd applies expires)", is.TTL)
	}
	if is.HoldDown < 0 {
		fail("actions.isolate.holdDown %s: must not be negative", is.HoldDown)
	}
	is.Level().validate(fail, "isolate")
	if is.MaxManagedFlowSchemas < 1 || is.MaxManagedFlowSchemas > maxFlowSchemas {
		fail("actions.isolate.maxManagedFlowSchemas %d: must be 1..%d (every request is matched against every FlowSchema)", is.MaxManagedFlowSchemas, maxFlowSchemas)
	}
	if is.MinSubjectRelists < 1 {
		fail("actions.isolate.minSubjectRelists %d: must be at least 1 (an identity that did not relist carries no evidence)", is.MinSubjectRelists)
	}
	if is.MinWaveInstances < 2 {
		fail("actions.isolate.minWaveInstances %d: must be at least 2 (one instance relisting is not a synchronized relist)", is.MinWaveInstances)
	}
	p := c.Actions.Protect
	if p.HoldDown < 0 {
		fail("actions.protect.holdDown %s: must not be negative", p.HoldDown)
	}
	p.Level().validate(fail, "protect")
	if p.MaxManagedFlowSchemas < 1 || p.MaxManagedFlowSchemas > maxFlowSchemas {
		fail("actions.protect.maxManagedFlowSchemas %d: must be 1..%d (every request is matched against every FlowSchema)", p.MaxManagedFlowSchemas, maxFlowSchemas)
	}
	q := c.Actions.Quarantine
	if q.TTL <= 0 {
		fail("actions.quarantine.ttl %s: must be positive (every FlowSchema herd applies expires)", q.TTL)
	}
	if q.MaxManagedFlowSchemas < 1 || q.MaxManagedFlowSchemas > maxFlowSchemas {
		fail("actions.quarantine.maxManagedFlowSchemas %d: must be 1..%d (every request is matched against every FlowSchema)", q.MaxManagedFlowSchemas, maxFlowSchemas)
	}

	errs = append(errs, c.Measurement.validate()...)

	// Guards.
	g := c.Guards
	if !(g.MaxUnschedulableFraction > 0 && g.MaxUnschedulableFraction < 1) {
		fail("guards.maxUnschedulableFraction %v: must be more than 0 and less than 1 (1 would let herd cordon every node; to never cordon, route no alert to cordon)", g.MaxUnschedulableFraction)
	}
	for _, a := range slices.Sorted(maps.Keys(g.MaxActionsPerHour)) {
		n := g.MaxActionsPerHour[a]
		switch {
		case !a.known():
			fail("guards.maxActionsPerHour.%s: unknown action (want one of %s)", a, actionList())
		case a == ActionNone:
			fail("guards.maxActionsPerHour.none: none takes no action to limit")
		case n < 0:
			fail("guards.maxActionsPerHour.%s %d: must not be negative", a, n)
		}
	}
	for _, a := range AllActions {
		why := c.enabledBy(a)
		if a == ActionNone || why == "" {
			continue
		}
		if n, ok := g.MaxActionsPerHour[a]; !ok {
			fail("guards.maxActionsPerHour.%s: missing; %s is enabled (%s), so it needs a limit of at least 1 (to disable it, route no alert to it)", a, a, why)
		} else if n == 0 {
			fail("guards.maxActionsPerHour.%s 0: must be at least 1 because %s is enabled (%s); to disable it, route no alert to it", a, a, why)
		}
	}
	if g.StormCooldown <= 0 {
		fail("guards.stormCooldown %s: must be positive (it is the pause after a guard trips)", g.StormCooldown)
	}
	if g.ExcludeAnnotation == "" {
		fail("guards.excludeAnnotation: required (nodes and objects carrying it are never touched)")
	} else if msgs := content.IsLabelKey(g.ExcludeAnnotation); len(msgs) > 0 {
		fail("guards.excludeAnnotation %q: not an annotation key: %s", g.ExcludeAnnotation, strings.Join(msgs, "; "))
	}
	return errors.Join(errs...)
}

// validate checks the measurement settings; each error names its field.
func (m Measurement) validate() []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.MaxFlowSchemas < 1 || m.MaxFlowSchemas > maxFlowSchemas {
		fail("measurement.maxFlowSchemas %d: must be 1..%d (every request is matched against every FlowSchema)", m.MaxFlowSchemas, maxFlowSchemas)
	}
	if msgs := validation.IsDNS1123Subdomain(m.OwnerClusterRole); len(msgs) > 0 {
		fail("measurement.ownerClusterRole %q: not a ClusterRole name: %s", m.OwnerClusterRole, strings.Join(msgs, "; "))
	}
	seen := map[string]string{} // identity/resource → where
	for i, mc := range m.Clients {
		at := fmt.Sprintf("measurement.clients[%d]", i)
		if role, err := nodeclient.ParseRole(mc.Role); err != nil || role == nodeclient.RoleOther {
			fail("%s.role %q: must be a node-side role (kubelet, kube-proxy, cni, metrics-server)", at, mc.Role)
		}
		if !nodeclient.ValidClientName(mc.Client) || mc.Client == "other" {
			fail("%s.client %q: must be a client name (a lowercase DNS label, dots allowed), not other", at, mc.Client)
		}
		if len(mc.Subjects) == 0 {
			fail("%s.subjects: at least one identity (group, user or serviceAccount)", at)
		}
		if len(mc.Resources) == 0 {
			fail("%s.resources: at least one resource (plural, or plural.group)", at)
		}
		for j, sub := range mc.Subjects {
			if why := subjectProblem(sub); why != "" {
				fail("%s.subjects[%d]: %s", at, j, why)
			}
		}
		for j, r := range mc.Resources {
			if !nodeclient.ValidResource(r) || r == "other" {
				fail("%s.resources[%d] %q: not a resource (plural, or plural.group, as herd's resource label writes it)", at, j, r)
			}
			for _, sub := range mc.Subjects {
				key := sub.Identity() + " " + r
				if prev, ok := seen[key]; ok {
					fail("%s: %s's LISTs of %s are measured already by %s: one FlowSchema per identity and resource", at, sub.Identity(), r, prev)
				}
				seen[key] = at
			}
		}
	}
	if n := m.Schemas(); n > m.MaxFlowSchemas && m.MaxFlowSchemas > 0 {
		fail("measurement.clients need %d FlowSchemas (one per subject and resource); measurement.maxFlowSchemas is %d (raise it, and the RBAC rendered from it, or measure less)", n, m.MaxFlowSchemas)
	}
	return errs
}

// subjectProblem says why s cannot be a measurement subject ("" when it can).
func subjectProblem(s nodeclient.Subject) string {
	set := 0
	for _, v := range []string{s.Group, s.User, s.ServiceAccount} {
		if v != "" {
			set++
		}
	}
	switch {
	case set != 1:
		return "set exactly one of group, user, serviceAccount"
	case s.Group != "" && nodeclient.BroadGroup(s.Group):
		return fmt.Sprintf("group %q takes in callers that are not one node-side client", s.Group)
	case s.User != "" && (strings.Contains(s.User, "*") || nodeclient.Unauthenticated(s.User)):
		return fmt.Sprintf("user %q: not one authenticated user", s.User)
	case s.User != "" && strings.HasPrefix(s.User, nodeclient.ServiceAccountUserPrefix):
		return fmt.Sprintf("user %q is a service account: write serviceAccount: NAMESPACE:NAME", s.User)
	case s.User != "" && strings.HasPrefix(s.User, nodeclient.NodeUserPrefix):
		return fmt.Sprintf("user %q is one kubelet: measure the fleet with group: %s", s.User, nodeclient.NodesGroup)
	case s.ServiceAccount != "":
		ns, name, ok := strings.Cut(s.ServiceAccount, ":")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return fmt.Sprintf("serviceAccount %q: want NAMESPACE:NAME (no wildcard: an APF subject names its namespace)", s.ServiceAccount)
		}
	}
	return ""
}

// validate checks the spec of an action's priority level.
func (l Level) validate(fail func(string, ...any), action string) {
	shares, queues, handSize, queueLengthLimit := l.PriorityLevelShares, l.Queues, l.HandSize, l.QueueLengthLimit
	if shares < 1 || shares > maxShares {
		fail("actions.%s.priorityLevelShares %d: must be 1..%d (0 would jail the client instead of slowing it; more than global-default's %d would not bound it)", action, shares, maxShares, maxShares)
	}
	if queues < 1 || queues > maxQueues {
		fail("actions.%s.queues %d: must be 1..%d (the APF API's range)", action, queues, maxQueues)
	}
	switch {
	case handSize < 1 || handSize > max(queues, 1):
		fail("actions.%s.handSize %d: must be 1..queues (%d)", action, handSize, queues)
	case queues <= maxQueues:
		if bits := shufflesharding.RequiredEntropyBits(queues, handSize); bits > shufflesharding.MaxHashBits {
			fail("actions.%s.handSize %d: with %d queues it needs %d bits of entropy; the APF API allows %d", action, handSize, queues, bits, shufflesharding.MaxHashBits)
		}
	}
	if queueLengthLimit < 1 || queueLengthLimit > math.MaxInt32 {
		fail("actions.%s.queueLengthLimit %d: must be 1..%d (the APF API's range)", action, queueLengthLimit, math.MaxInt32)
	}
}

// Bounds on the APF objects herd applies: the API's where it has one, herd's
// where a larger value would defeat the action.
const (
	maxShares      = 20               // global-default's nominalConcurrencyShares
	maxQueues      = 10 * 1000 * 1000 // APF validation: priorityLevelConfigurationQueuingMaxQueues
	maxFlowSchemas = 100              // FlowSchemas are matched linearly on every request
)

// firstRouteActing is the index of the first route whose action is not
// none, or -1.
func (c Config) firstRouteActing() int {
	for i, r := range c.Routes {
		if r.Action != ActionNone && r.Action.known() {
			return i
		}
	}
	return -1
}

// enabledBy says why action a can run ("" when it cannot): a route to it,
// or triage with remediate.
func (c Config) enabledBy(a Action) string {
	for i, r := range c.Routes {
		if r.Action == a {
			return fmt.Sprintf("routes[%d]", i)
		}
	}
	if a.Mutating() && c.Actions.Triage.Remediate {
		for i, r := range c.Routes {
			if r.Action == ActionTriage {
				return fmt.Sprintf("triage remediates, routes[%d]", i)
			}
		}
	}
	return ""
}

// Enabled reports whether action a can run: an alert routes to it, or
// triage runs it as a remediation.
func (c Config) Enabled(a Action) bool { return a != ActionNone && c.enabledBy(a) != "" }

// Route returns the first route that matches an alert's labels.
func (c Config) Route(labels map[string]string) (Route, bool) {
	for _, r := range c.Routes {
		if r.Matches(labels) {
			return r, true
		}
	}
	return Route{}, false
}

// Known reports whether some route matches alertname by equality: the
// alert names worth a label value of their own in herd's metrics (a bounded
// set, unlike what a pattern may match).
func (c Config) Known(alertname string) bool {
	for _, r := range c.Routes {
		if v, ok := r.Match["alertname"]; ok && v == alertname {
			return true
		}
	}
	return false
}

// Alertnames lists the alert names routes match by equality, in route
// order without repeats: the names Known accepts.
func (c Config) Alertnames() []string {
	var out []string
	for _, r := range c.Routes {
		if v, ok := r.Match["alertname"]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// Matches reports whether labels satisfy every matcher of r. A missing
// label has the value "".
func (r Route) Matches(labels map[string]string) bool {
	for k, v := range r.Match {
		if labels[k] != v {
			return false
		}
	}
	if len(r.MatchRE) == 0 {
		return true
	}
	re := r.re
	if re == nil { // a Route built in code rather than parsed
		re = compileAll(r.MatchRE)
	}
	for k := range r.MatchRE {
		p := re[k]
		if p == nil || !p.MatchString(labels[k]) {
			return false
		}
	}
	return true
}

// matchesEverything reports whether r has no equality matcher and only
// patterns that match any value: ".*", "(.*|x)", ".*.*" and the like, and
// for alertname, which no alert lacks, also ".+". It judges by probing, so
// a pattern that matches every probe counts as matching everything.
func (r Route) matchesEverything() bool {
	if len(r.Match) > 0 {
		return false
	}
	for name, p := range r.MatchRE {
		re, err := regexp.Compile(anchor(p))
		if err != nil {
			return false
		}
		for _, v := range probes {
			if !re.MatchString(v) && !(v == "" && name == "alertname") {
				return false
			}
		}
	}
	return true
}

// probes are label values of every shape a catch-all pattern must match.
var probes = []string{
	"", "a", "Z", "0", "_", "-", ".", " ", "HerdStaleKubelet", "KubeAPIErrorBudgetBurn",
	"ip-10-0-3-17.eu-west-1.compute.internal", "system:node:worker-1", "prod/eu 1 ümlaut ✓",
	strings.Repeat("x9-", 100),
}

func anchor(p string) string { return "^(?:" + p + ")$" }

func compileAll(m map[string]string) map[string]*regexp.Regexp {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*regexp.Regexp, len(m))
	for k, p := range m {
		if re, err := regexp.Compile(anchor(p)); err == nil {
			out[k] = re
		}
	}
	return out
}

// unwrapRE drops regexp's restatement of the pattern, which the caller
// quotes already.
func unwrapRE(err error) error {
	var se *syntax.Error
	if errors.As(err, &se) {
		return errors.New(string(se.Code))
	}
	return err
}

var labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func validLabelName(s string) bool { return labelNameRE.MatchString(s) }

func actionList() string {
	s := make([]string, len(AllActions))
	for i, a := range AllActions {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}
