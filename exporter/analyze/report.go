package analyze

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
)

// SchemaVersion is the version of the JSON report (docs/analyze.md). It
// changes only when a field changes meaning or goes away; new fields may be
// added without a change.
const SchemaVersion = 1

// Report is everything `herd analyze` prints, most important first. It is
// also the JSON document of `--output json`: every field is always present
// (numbers as 0, lists as []), so scripts need no existence checks.
type Report struct {
	SchemaVersion int            `json:"schemaVersion"`
	Inputs        []InputSummary `json:"inputs"`
	// Span is the time covered by the events' stageTimestamps; nil when no
	// event had one.
	Span   *Span       `json:"span"`
	Window Window      `json:"window"`
	Events EventCounts `json:"events"`
	// Roles has one entry per role, in a fixed order, node-side roles first.
	Roles        []RoleTotals       `json:"roles"`
	Relisting    RelistingSection   `json:"relisting"`
	TooLarge     TooLargeSection    `json:"tooLargeResourceVersion"`
	TokenReviews TokenReviewSection `json:"tokenReviews"`
	Ghosts       GhostSection       `json:"possibleGhosts"`
	Consistency  ConsistencySection `json:"consistency"`
	Errors       ErrorSection       `json:"errors"`
	// Forecast is the stampede forecast at the end of the input.
	Forecast ForecastSection `json:"stampedeForecast"`
	// Notes are caveats about the numbers (instances evicted, untimed
	// events), in plain words.
	Notes []string `json:"notes"`

	top          int
	includeOther bool
}

// InputSummary is what was read from one input.
type InputSummary struct {
	Name      string `json:"name"`
	Mode      Mode   `json:"mode"`
	Lines     int64  `json:"lines"`
	Events    int    `json:"events"`
	Malformed int    `json:"malformed"`
	Oversized int    `json:"oversized"`
	// Error is why the input could not be read to its end; what was read
	// before it is in the report.
	Error string `json:"error,omitempty"`
}

// Span is the time the input covers.
type Span struct {
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Seconds float64   `json:"seconds"`
}

// Window is what the window* fields cover: the Seconds before End, the
// newest event's time.
type Window struct {
	// All is set when the window is the whole input (--window=all); the
	// window* fields then equal the totals.
	All     bool       `json:"all"`
	Seconds float64    `json:"seconds"`
	End     *time.Time `json:"end"`
}

// EventCounts says what happened to every event read.
type EventCounts struct {
	// Read counts events decoded (duplicates included).
	Read int `json:"read"`
	// Accounted counts events given to the ledger: Read minus Duplicate.
	Accounted int `json:"accounted"`
	// Duplicate counts repeats of an (auditID, stage) already accounted,
	// as concatenated or re-shipped logs contain.
	Duplicate int `json:"duplicate"`
	// Malformed counts lines that are not JSON and events that are not
	// usable audit events; they were skipped.
	Malformed int `json:"malformed"`
	// Oversized counts lines and events over the ingest limits; skipped.
	Oversized int `json:"oversized"`
	// NotAudit counts Azure records of another log category; skipped.
	NotAudit int `json:"notAudit"`
	// Untimed counts events without a usable stageTimestamp; they are
	// accounted at the newest time seen before them.
	Untimed int `json:"untimed"`
	// Ahead counts events stamped more than accounting.maxClockSkew ahead
	// of the log's own time (the newest plausible stageTimestamp before
	// them); they are accounted at that time, as the exporter accounts a
	// future event at its receive time.
	Ahead int `json:"ahead"`
}

// RoleTotals sums one role's instances.
type RoleTotals struct {
	Role         string `json:"role"`
	Instances    int    `json:"instances"`
	Requests     uint64 `json:"requests"`
	Relists      uint64 `json:"relists"`
	TooLarge     uint64 `json:"tooLargeResourceVersion"`
	TokenReviews uint64 `json:"tokenReviews"`
	// Requests and Errors (responses with code ≥ 400) count every request,
	// those refused with 401/403 included.
	Errors uint64 `json:"errors"`
}

// Instance identifies a node-side client process (SPEC §3.2).
type Instance struct {
	Role     string `json:"role"`
	Client   string `json:"client"`
	Identity string `json:"identity"`
	// Node is the node the instance was attributed to: the NAME of
	// system:node:NAME; for identities that name no node (service accounts
	// shared by every node), the source IP, as herd analyze cannot map IPs
	// to Nodes; else a field selector's node; else "unknown".
	Node string `json:"node"`
	// Attribution says which: username, source_ip, field_selector or unknown.
	Attribution string `json:"attribution"`
}

// RelistingSection lists instance streams (an instance and one resource)
// with at least Threshold relists in the input, most first.
type RelistingSection struct {
	Threshold int         `json:"threshold"`
	Count     int         `json:"count"` // rows before the --top cap
	Rows      []RelistRow `json:"rows"`
}

// RelistRow is one instance's relists of one resource.
type RelistRow struct {
	Instance
	Resource string `json:"resource"`
	// Shape is what the relists select (all, node, selected, object): a
	// resource relisted in two shapes has a row for each.
	Shape         string         `json:"shape"`
	Relists       uint64         `json:"relists"`
	WindowRelists int            `json:"windowRelists"`
	ByConsistency ConsistencyMix `json:"byConsistency"`
	Pages         uint64         `json:"pages"`
	LastRelist    *time.Time     `json:"lastRelist"`
	PossiblyStale bool           `json:"possiblyStale"`

	instanceTooLarge uint64 // ranks a stuck instance first among equal relists
}

// ConsistencyMix splits relists by how they are served (SPEC §3.3).
type ConsistencyMix struct {
	Cache      uint64 `json:"cache"`
	Exact      uint64 `json:"exact"`
	Consistent uint64 `json:"consistent"`
}

// TooLargeSection lists instance streams that got "Too large resource
// version" errors: a client waiting for a resourceVersion the watch cache
// will never reach, each wait a 504 that burns the error budget (incident 000).
type TooLargeSection struct {
	Errors uint64        `json:"errors"` // all rows, before the cap
	Count  int           `json:"count"`
	Rows   []TooLargeRow `json:"rows"`
}

// TooLargeRow is one instance's too-large errors on one resource.
type TooLargeRow struct {
	Instance
	SourceIPs     []string   `json:"sourceIPs"`
	Resource      string     `json:"resource"`
	Errors        uint64     `json:"errors"`
	WindowErrors  int        `json:"windowErrors"`
	LastError     *time.Time `json:"lastError"`
	PossiblyStale bool       `json:"possiblyStale"`

	instanceErrors uint64 // the instance's errors on all resources, to keep its rows together
}

// TokenReviewSection lists who creates TokenReviews. Kubelets do when a
// client (usually metrics-server) authenticates to them with a bearer
// token; at 1,000 nodes that storm filled the apiserver's mutating inflight
// limit (incident 004).
type TokenReviewSection struct {
	TokenReviews uint64           `json:"tokenReviews"`
	Nodes        int              `json:"nodes"`
	Count        int              `json:"count"`
	Rows         []TokenReviewRow `json:"rows"`
}

// TokenReviewRow is one instance's TokenReview creations.
type TokenReviewRow struct {
	Instance
	TokenReviews uint64 `json:"tokenReviews"`
}

// GhostSection lists instances that look like ghosts or stuck clients. herd
// analyze cannot see the cluster, so each is a lead to verify: Verify is
// the kubectl command that settles it.
type GhostSection struct {
	Count  int        `json:"count"`
	Rows   []GhostRow `json:"rows"`
	Verify string     `json:"verify"`
}

// GhostRow is one suspicious instance and why.
type GhostRow struct {
	Instance
	SourceIPs          []string `json:"sourceIPs"`
	SourceIPChanges    uint64   `json:"sourceIPChanges"`
	FieldSelectorNodes []string `json:"fieldSelectorNodes"`
	TooLarge           uint64   `json:"tooLargeResourceVersion"`
	Reasons            []string `json:"reasons"`
}

// ConsistencySection is the consistency mix of relists per client and
// resource: what each client asked for. Since 1.31 (ConsistentListFromCache)
// consistent relists are served from the watch cache once it has caught up
// with etcd, and reach etcd only when it cannot serve them.
type ConsistencySection struct {
	Count int              `json:"count"`
	Rows  []ConsistencyRow `json:"rows"`
}

// ConsistencyRow is one client's relists of one resource.
type ConsistencyRow struct {
	Role     string `json:"role"`
	Client   string `json:"client"`
	Resource string `json:"resource"`
	Relists  uint64 `json:"relists"`
	ConsistencyMix
	Pages uint64 `json:"pages"`
}

// ErrorSection is requests answered with 4xx or 5xx, by client, verb, code.
type ErrorSection struct {
	Count int        `json:"count"`
	Rows  []ErrorRow `json:"rows"`
}

// ErrorRow is one (client, verb, code) count.
type ErrorRow struct {
	Role     string `json:"role"`
	Client   string `json:"client"`
	Verb     string `json:"verb"`
	Code     int32  `json:"code"`
	Requests uint64 `json:"requests"`
}

// Problems is how many bad lines or events were met and how many printed.
func (a *Analyzer) Problems() (total, shown int) { return a.problems, a.printed }

// Report builds the report from what has been read so far. Events still
// waiting for the log's later events to place them in time (timeline) are
// accounted first, at the log's time.
func (a *Analyzer) Report() *Report {
	a.timeline.end(a.accountTimed)
	cfg := a.ledger.Config()
	r := &Report{
		SchemaVersion: SchemaVersion,
		Inputs:        append([]InputSummary{}, a.inputs...),
		Events:        a.counts,
		Notes:         []string{},
		top:           a.opts.Top,
		includeOther:  a.opts.IncludeOther,
	}
	var end *time.Time
	if a.first > 0 {
		first, last := time.Unix(0, min(a.first, a.timeline.now)).UTC(), time.Unix(0, a.timeline.now).UTC()
		r.Span = &Span{First: first, Last: last, Seconds: last.Sub(first).Seconds()}
		end = &last
	}
	all := a.opts.Window == WindowAll
	r.Window = Window{All: all, Seconds: time.Duration(cfg.Window).Seconds(), End: end}
	if all {
		r.Window.Seconds = 0
		if r.Span != nil {
			r.Window.Seconds = r.Span.Seconds
		}
	}

	// Windows end at the newest event. The ledger's windows index buckets
	// from the epoch and need "now" at least one window after it, which only
	// absurd timestamps (1970) would violate.
	now := max(a.timeline.now, int64(cfg.Window))
	clients := a.ledger.ClientsAt(now, accounting.ClientFilter{})
	snap := a.ledger.SnapshotAt(now)

	r.Roles = roleTotals(clients, snap)
	listed := func(role string) bool { return a.opts.IncludeOther || role != classify.RoleOther.String() }

	var (
		relists  []RelistRow
		tooLarge []TooLargeRow
		reviews  []TokenReviewRow
		ghosts   []GhostRow
	)
	reviewNodes := map[string]bool{}
	for i := range clients {
		c := &clients[i]
		if !listed(c.Role) {
			continue
		}
		inst := Instance{Role: c.Role, Client: c.Client, Identity: c.Identity, Node: nodeOrUnknown(c.Node), Attribution: c.Attribution}
		f := a.facts[instKey{c.Identity, c.Node}]
		if f == nil {
			f = &facts{}
			if c.SourceIP != "" {
				f.ips = []string{c.SourceIP}
			}
		}
		stale := a.possiblyStale(c, cfg)
		var tooLargeTotal uint64
		firstTooLarge, firstRelist := len(tooLarge), len(relists)
		for _, s := range c.Resources {
			windowRelists, windowTooLarge := s.WindowRelists, s.WindowTooLarge
			if all {
				windowRelists, windowTooLarge = int(s.Relists), int(s.TooLarge)
			}
			if s.Relists >= uint64(cfg.RelistThreshold) {
				relists = append(relists, RelistRow{
					Instance: inst, Resource: s.Resource, Shape: s.Shape, Relists: s.Relists, WindowRelists: windowRelists,
					ByConsistency: ConsistencyMix{Cache: s.ByConsistency["cache"], Exact: s.ByConsistency["exact"], Consistent: s.ByConsistency["consistent"]},
					Pages:         s.Pages, LastRelist: s.LastRelist, PossiblyStale: stale,
				})
			}
			if s.TooLarge > 0 {
				tooLargeTotal += s.TooLarge
				tooLarge = append(tooLarge, TooLargeRow{
					Instance: inst, SourceIPs: ipList(f), Resource: s.Resource, Errors: s.TooLarge,
					WindowErrors: windowTooLarge, LastError: timePtr(f.lastTooLarge[s.Resource]), PossiblyStale: stale,
				})
			}
		}
		for i := firstTooLarge; i < len(tooLarge); i++ {
			tooLarge[i].instanceErrors = tooLargeTotal
		}
		for i := firstRelist; i < len(relists); i++ {
			relists[i].instanceTooLarge = tooLargeTotal
		}
		if c.TokenReviews > 0 {
			reviews = append(reviews, TokenReviewRow{Instance: inst, TokenReviews: c.TokenReviews})
			if c.Node != "" {
				reviewNodes[c.Node] = true
			}
		}
		if g, ok := a.ghostOf(inst, c, f, tooLargeTotal, cfg); ok {
			ghosts = append(ghosts, g)
		}
	}

	slices.SortFunc(relists, func(x, y RelistRow) int {
		// Among equal relists, the instance that is also stuck (too-large
		// errors) and the one whose relists may reach etcd (consistent) first.
		return cmp.Or(cmp.Compare(y.Relists, x.Relists), cmp.Compare(y.WindowRelists, x.WindowRelists),
			cmp.Compare(y.instanceTooLarge, x.instanceTooLarge), cmp.Compare(y.ByConsistency.Consistent, x.ByConsistency.Consistent),
			compareInstance(x.Instance, y.Instance), cmp.Compare(x.Resource, y.Resource))
	})
	r.Relisting = RelistingSection{Threshold: cfg.RelistThreshold, Count: len(relists), Rows: capRows(relists, r.top)}

	slices.SortFunc(tooLarge, func(x, y TooLargeRow) int {
		return cmp.Or(cmp.Compare(y.instanceErrors, x.instanceErrors), compareInstance(x.Instance, y.Instance),
			cmp.Compare(y.Errors, x.Errors), cmp.Compare(x.Resource, y.Resource))
	})
	for _, row := range tooLarge {
		r.TooLarge.Errors += row.Errors
	}
	r.TooLarge.Count, r.TooLarge.Rows = len(tooLarge), capRows(tooLarge, r.top)

	slices.SortFunc(reviews, func(x, y TokenReviewRow) int {
		return cmp.Or(cmp.Compare(y.TokenReviews, x.TokenReviews), compareInstance(x.Instance, y.Instance))
	})
	for _, row := range reviews {
		r.TokenReviews.TokenReviews += row.TokenReviews
	}
	r.TokenReviews.Nodes, r.TokenReviews.Count, r.TokenReviews.Rows = len(reviewNodes), len(reviews), capRows(reviews, r.top)

	slices.SortFunc(ghosts, func(x, y GhostRow) int {
		return cmp.Or(cmp.Compare(len(y.Reasons), len(x.Reasons)), cmp.Compare(y.TooLarge, x.TooLarge),
			cmp.Compare(len(y.SourceIPs), len(x.SourceIPs)), compareInstance(x.Instance, y.Instance))
	})
	r.Ghosts = GhostSection{Count: len(ghosts), Rows: capRows(ghosts, r.top)}
	r.Ghosts.Verify = verifyCommand(r.Ghosts.Rows)

	r.Consistency = consistencyRows(snap, listed, r.top)
	r.Errors = errorRows(snap, listed, r.top)
	r.Forecast = a.forecastSection(snap)

	if snap.Evicted > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d instances were evicted from the ledger (accounting.maxInstances = %d): per-client totals are exact, per-instance rows miss the least recently seen",
			snap.Evicted, cfg.MaxInstances))
	}
	if a.untrackedIDs > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("source IPs were not tracked for %d events of instances past accounting.maxInstances", a.untrackedIDs))
	}
	if a.counts.Ahead > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d events were stamped more than %s ahead of the rest of the log; they were counted at the log's time", a.counts.Ahead, shortDuration(time.Duration(cfg.MaxClockSkew))))
	}
	if a.counts.Untimed > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d events had no usable stageTimestamp; they were counted at the time of the event before them", a.counts.Untimed))
	}
	return r
}

// possiblyStale applies the stale-kubelet thresholds (SPEC §3.3) within the
// window. Offline herd cannot tell whether the Node exists: if it does, the
// kubelet is stale; if not, it is a ghost.
func (a *Analyzer) possiblyStale(c *accounting.ClientView, cfg accounting.Config) bool {
	if c.Role != classify.RoleKubelet.String() {
		return false
	}
	tooLarge := 0
	for _, s := range c.Resources {
		relists, tl := s.WindowRelists, s.WindowTooLarge
		if a.opts.Window == WindowAll {
			relists, tl = int(s.Relists), int(s.TooLarge)
		}
		if s.Resource == "pods" && (s.Shape == accounting.ShapeNode.String() || s.Shape == accounting.ShapeAll.String()) && relists >= cfg.StalePodRelists {
			return true // whole-node pod relists (SPEC §3.3), not per-object reads
		}
		tooLarge += tl
	}
	return tooLarge >= cfg.StaleTooLarge
}

// kubeletQuietPeriod is how long a live node's kubelet can go without a
// request herd's audit policy logs: it re-watches every 5–10 minutes. An
// input at least this long shows every live kubelet at least once.
const kubeletQuietPeriod = 10 * time.Minute

// ghostOf decides whether an instance looks like a ghost (SPEC §3.2), from
// what an audit log alone can show:
//   - a node identity seen from more than one source IP: one of them is not
//     the node (identities that name no node, such as a CNI service account
//     shared by every node, come from many IPs by design);
//   - a kubelet asking for another node's objects by field selector;
//   - a too-large-RV loop (at the stale threshold, or any with another sign);
//   - a host-network agent (kube-proxy, CNI) from an IP no kubelet used in
//     an input long enough for every live kubelet to show up: a host that
//     is no longer a node.
func (a *Analyzer) ghostOf(inst Instance, c *accounting.ClientView, f *facts, tooLarge uint64, cfg accounting.Config) (GhostRow, bool) {
	var reasons []string
	byIP := c.Attribution == accounting.AttrSourceIP.String()
	if c.Node != "" && !byIP && (len(f.ips) > 1 || c.SourceIPChanges > 0) {
		n := fmt.Sprint(len(f.ips))
		if f.moreIPs {
			n = fmt.Sprintf("more than %d", len(f.ips))
		}
		reasons = append(reasons, fmt.Sprintf("%s source IPs (%d changes)", n, c.SourceIPChanges))
	}
	if len(f.selectorNodes) > 0 {
		reasons = append(reasons, fmt.Sprintf("field selectors name node %s", strings.Join(f.selectorNodes, ", ")))
	}
	if byIP && (c.Role == classify.RoleKubeProxy.String() || c.Role == classify.RoleCNI.String()) &&
		len(a.kubeletIPs) > 0 && !a.kubeletIPs[c.Node] && a.timeline.now-a.first >= int64(kubeletQuietPeriod) {
		reasons = append(reasons, fmt.Sprintf("no kubelet seen from %s in %s of log", c.Node, shortDuration(time.Duration(a.timeline.now-a.first))))
	}
	if tooLarge >= uint64(cfg.StaleTooLarge) || tooLarge > 0 && len(reasons) > 0 {
		reasons = append(reasons, fmt.Sprintf("%d too-large-RV errors", tooLarge))
	}
	if len(reasons) == 0 {
		return GhostRow{}, false
	}
	return GhostRow{
		Instance: inst, SourceIPs: ipList(f), SourceIPChanges: c.SourceIPChanges,
		FieldSelectorNodes: append([]string{}, f.selectorNodes...), TooLarge: tooLarge, Reasons: reasons,
	}, true
}

// verifyCommand is one kubectl command that checks every listed node at
// once: NotFound means a ghost, a Node means a stale client on a live node.
// Only valid Node names go in: a field selector is client-chosen text, and
// this line is made to be pasted into a shell.
func verifyCommand(rows []GhostRow) string {
	var nodes []string
	for _, g := range rows {
		if g.Attribution != accounting.AttrSourceIP.String() && validNodeName(g.Node) && !slices.Contains(nodes, g.Node) {
			nodes = append(nodes, g.Node)
		}
	}
	if len(nodes) == 0 {
		return ""
	}
	return "kubectl get node " + strings.Join(nodes, " ") + " -o wide"
}

// nodeName is a DNS-1123 subdomain, what a Node's name must be.
var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validNodeName(s string) bool { return len(s) <= 253 && s != "unknown" && nodeName.MatchString(s) }

// roleTotals sums each role. The counts come from the ledger's per-client
// counters, which are never evicted, so they stay exact when the instance
// table overflows (issue 16.9: summing instances showed 25,000 of 500,000
// requests); only Instances counts the instances still held.
func roleTotals(clients []accounting.ClientView, snap accounting.Snapshot) []RoleTotals {
	order := []classify.Role{classify.RoleKubelet, classify.RoleKubeProxy, classify.RoleCNI, classify.RoleMetricsServer, classify.RoleOther}
	out := make([]RoleTotals, len(order))
	idx := map[string]int{}
	for i, role := range order {
		out[i].Role = role.String()
		idx[role.String()] = i
	}
	at := func(role string) *RoleTotals {
		i, ok := idx[role]
		if !ok {
			i = idx[classify.RoleOther.String()]
		}
		return &out[i]
	}
	for _, c := range clients {
		at(c.Role).Instances++
	}
	for _, rc := range snap.Requests {
		t := at(rc.Role)
		t.Requests += rc.Value
		if rc.Code >= 400 {
			t.Errors += rc.Value
		}
	}
	for _, rc := range snap.Relists {
		at(rc.Role).Relists += rc.Value
	}
	for _, sc := range snap.TooLarge {
		at(sc.Role).TooLarge += sc.Value
	}
	for _, cc := range snap.TokenReviews {
		at(cc.Role).TokenReviews += cc.Value
	}
	return out
}

func consistencyRows(snap accounting.Snapshot, listed func(string) bool, top int) ConsistencySection {
	type key struct{ role, client, resource string }
	rows := map[key]*ConsistencyRow{}
	get := func(k key) *ConsistencyRow {
		if rows[k] == nil {
			rows[k] = &ConsistencyRow{Role: k.role, Client: k.client, Resource: k.resource}
		}
		return rows[k]
	}
	for _, rc := range snap.Relists {
		if !listed(rc.Role) {
			continue
		}
		row := get(key{rc.Role, rc.Client, rc.Resource})
		row.Relists += rc.Value
		switch rc.Consistency {
		case "cache":
			row.Cache += rc.Value
		case "exact":
			row.Exact += rc.Value
		case "consistent":
			row.Consistent += rc.Value
		}
	}
	for _, p := range snap.Pages {
		if k := (key{p.Role, p.Client, p.Resource}); listed(p.Role) && rows[k] != nil {
			rows[k].Pages += p.Value
		}
	}
	out := make([]ConsistencyRow, 0, len(rows))
	for _, row := range rows {
		out = append(out, *row)
	}
	slices.SortFunc(out, func(x, y ConsistencyRow) int {
		return cmp.Or(cmp.Compare(y.Relists, x.Relists), cmp.Compare(y.Consistent, x.Consistent),
			cmp.Compare(x.Role, y.Role), cmp.Compare(x.Client, y.Client), cmp.Compare(x.Resource, y.Resource))
	})
	return ConsistencySection{Count: len(out), Rows: capRows(out, top)}
}

func errorRows(snap accounting.Snapshot, listed func(string) bool, top int) ErrorSection {
	out := []ErrorRow{}
	for _, rq := range snap.Requests {
		if rq.Code >= 400 && listed(rq.Role) {
			out = append(out, ErrorRow{Role: rq.Role, Client: rq.Client, Verb: rq.Verb, Code: rq.Code, Requests: rq.Value})
		}
	}
	slices.SortFunc(out, func(x, y ErrorRow) int {
		return cmp.Or(cmp.Compare(y.Requests, x.Requests), cmp.Compare(x.Code, y.Code),
			cmp.Compare(x.Role, y.Role), cmp.Compare(x.Client, y.Client), cmp.Compare(x.Verb, y.Verb))
	})
	return ErrorSection{Count: len(out), Rows: capRows(out, top)}
}

func compareInstance(x, y Instance) int {
	return cmp.Or(cmp.Compare(x.Identity, y.Identity), cmp.Compare(x.Node, y.Node),
		cmp.Compare(x.Role, y.Role), cmp.Compare(x.Client, y.Client))
}

// capRows returns at most n rows, never nil, so JSON has [] for none.
func capRows[T any](rows []T, n int) []T {
	if len(rows) > n {
		rows = rows[:n]
	}
	return append(make([]T, 0, len(rows)), rows...)
}

func ipList(f *facts) []string {
	return append([]string{}, f.ips...)
}

func nodeOrUnknown(n string) string {
	if n == "" {
		return "unknown"
	}
	return n
}

func timePtr(ns int64) *time.Time {
	if ns <= 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}
