package hollow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hollow"
	"github.com/herd-k8s/herd/test/stack"
)

// nodeAgentsPolicy audits every request of the node agents, at Metadata:
// all their verbs, so that the suite records everything they ask for and
// herd accounts all of it. Nothing else is audited.
const nodeAgentsPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [system:nodes]
- level: Metadata
  users: [system:serviceaccount:kube-system:kube-proxy]
- level: None
`

const (
	podsPerNode  = 2
	steadyPeriod = 25 * time.Second
	ghostGrace   = 5 * time.Second
	podsNS       = "hollow"
)

// startExporter runs herd's exporter in-process against the control plane,
// with a short ghost grace so that "no ghost" is judged within the test.
// Audit batches reach its handler through the tee, which authenticates them.
func startExporter(t *testing.T, cp *controlplane.ControlPlane) *exporter.Exporter {
	t.Helper()
	e, err := stack.RunExporter(exporter.Options{
		Config:        config.Default(),
		AuditInsecure: true,
		Kube:          cp.Config(controlplane.Admin),
		GhostGrace:    ghostGrace,
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	err = herdtest.Poll(t.Context(), 30*time.Second, "the exporter to be ready", func(context.Context) error {
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", rec.Code, rec.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return e.Exporter
}

// debugClients is what the suite reads of /debug/clients.
type debugClients struct {
	Clients []struct {
		Role, Identity, Node, SourceIP string
		Cluster                        *struct {
			Ghost       bool    `json:"ghost"`
			GhostReason string  `json:"ghostReason"`
			Stale       bool    `json:"stale"`
			NodeExists  *bool   `json:"nodeExists"`
			LeaseAge    float64 `json:"leaseAgeSeconds"`
		} `json:"cluster"`
	} `json:"clients"`
}

func getDebugClients(ex *exporter.Exporter) (debugClients, error) {
	rec := httptest.NewRecorder()
	ex.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/clients", nil))
	var page debugClients
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		return page, fmt.Errorf("/debug/clients: %w", err)
	}
	return page, nil
}

// herdKnowsNodes waits until herd's cluster view has every node, addresses
// included: the view records a Node's existence and its addresses in one
// step, so once /debug/clients says a kubelet's node exists, herd can place
// requests from that node's address.
func herdKnowsNodes(ctx context.Context, ex *exporter.Exporter, names []string) error {
	for {
		page, err := getDebugClients(ex)
		if err != nil {
			return err
		}
		known := map[string]bool{}
		for _, c := range page.Clients {
			if c.Role == "kubelet" && c.Cluster != nil && c.Cluster.NodeExists != nil && *c.Cluster.NodeExists {
				known[c.Node] = true
			}
		}
		missing := 0
		for _, n := range names {
			if !known[n] {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("herd's view lacks %d of %d nodes: %w", missing, len(names), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// compareWithAuditLog takes herd's counters and the events herd was
// delivered at one instant, counts those events independently from the
// audit log, and fails on any difference. It returns how many events herd
// had been delivered.
func compareWithAuditLog(t *testing.T, ex *exporter.Exporter, tee *auditcount.Tee, logPath, when string) int {
	t.Helper()
	var herd auditcount.Series
	var gatherErr error
	delivered := tee.Snapshot(func() { herd, gatherErr = auditcount.Gather(ex.Registry()) })
	if gatherErr != nil {
		t.Fatal(gatherErr)
	}
	res := countDelivered(t, logPath, delivered, when)
	configmapRelists := 0.0
	for k, v := range res.Series {
		if strings.HasPrefix(k, "herd_relists_total{client=kubelet,") && strings.Contains(k, ",resource=configmaps,") {
			configmapRelists += v
		}
	}
	if len(delivered) == 0 || configmapRelists == 0 {
		t.Fatalf("%s: nothing to compare: %d events delivered, series:\n%s", when, len(delivered), res.Series)
	}
	if diffs := auditcount.Diff(res.Series, herd); len(diffs) > 0 {
		t.Errorf("%s: herd differs from the independent count of the same %d events:\n%s\nindependent count:\n%s",
			when, len(delivered), strings.Join(diffs, "\n"), res.Series)
		return len(delivered)
	}
	t.Logf("%s: herd equals the independent count: %d events, %d series, 0 different", when, len(delivered), len(res.Series))
	return len(delivered)
}

// countDelivered counts the events herd was delivered independently, from
// the audit log, once the log holds them all: the apiserver writes the log
// before it batches the webhook, so it normally holds them already.
func countDelivered(t *testing.T, logPath string, delivered map[auditcount.Key]bool, when string) auditcount.Result {
	t.Helper()
	var res auditcount.Result
	err := herdtest.Poll(t.Context(), 10*time.Second, "every event herd was delivered in the audit log", func(context.Context) error {
		var err error
		if res, err = auditcount.Count(logPath, delivered, auditcount.NodeAgents); err != nil {
			return err
		}
		if res.Missing > 0 {
			return fmt.Errorf("%s: %d events herd was delivered are not in the audit log", when, res.Missing)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// checkAttribution: each kube-proxy instance is placed on its own node by its
// source address, and each kubelet calls from its Node's InternalIP. This
// holds with herd's attribution by sourceIPs[0] and by the last entry alike:
// the agents connect directly, so sourceIPs has one entry.
func checkAttribution(t *testing.T, ex *exporter.Exporter, agents *hollow.Cluster) {
	t.Helper()
	byAddr := map[string]string{}
	for _, n := range agents.Nodes {
		byAddr[n.Addr.String()] = n.Name
	}
	for _, n := range agents.Nodes {
		kubelets := ex.Ledger().Clients(accounting.ClientFilter{Role: "kubelet", Identity: "system:node:" + n.Name})
		if len(kubelets) != 1 {
			t.Errorf("%s: %d kubelet instances, want 1: %+v", n.Name, len(kubelets), kubelets)
		}
		for _, k := range kubelets {
			if k.Node != n.Name || k.SourceIP != n.Addr.String() || k.SourceIPChanges != 0 {
				t.Errorf("%s: kubelet instance on node %q from %s (%d address changes), want node %s from %s", n.Name, k.Node, k.SourceIP, k.SourceIPChanges, n.Name, n.Addr)
			}
		}
	}
	proxies := ex.Ledger().Clients(accounting.ClientFilter{Role: "kube-proxy"})
	placed := map[string]int{}
	for _, p := range proxies {
		if p.Attribution != accounting.AttrSourceIP.String() || byAddr[p.SourceIP] == "" || p.Node != byAddr[p.SourceIP] {
			t.Errorf("kube-proxy instance from %s placed on %q by %s; want the node whose InternalIP it is (%q) by source_ip", p.SourceIP, p.Node, p.Attribution, byAddr[p.SourceIP])
			continue
		}
		placed[p.Node]++
	}
	for _, n := range agents.Nodes {
		if placed[n.Name] != 1 {
			t.Errorf("%s: %d kube-proxy instances placed on it, want 1", n.Name, placed[n.Name])
		}
	}
}

// checkNoGhostNoStale: once herd's ghost grace has passed, no kubelet or
// kube-proxy of a live hollow node is a ghost, and no kubelet is stale — on
// /metrics and in /debug/clients' verdicts.
func checkNoGhostNoStale(t *testing.T, ex *exporter.Exporter, agents *hollow.Cluster) {
	t.Helper()
	// Every instance must be older than the grace for the verdict to count.
	for _, v := range ex.Ledger().Clients(accounting.ClientFilter{}) {
		if wait := ghostGrace - time.Since(v.FirstSeen); wait > 0 {
			time.Sleep(wait + 100*time.Millisecond)
		}
	}
	page, err := getDebugClients(ex)
	if err != nil {
		t.Fatal(err)
	}
	judged := 0
	for _, c := range page.Clients {
		if c.Role != "kubelet" && c.Role != "kube-proxy" {
			continue
		}
		judged++
		switch {
		case c.Cluster == nil:
			t.Errorf("%s %s: no verdict", c.Role, c.Identity)
		case c.Cluster.Ghost || c.Cluster.Stale || c.Cluster.NodeExists == nil || !*c.Cluster.NodeExists:
			t.Errorf("%s %s on %q from %s: ghost %v (%s), stale %v, node exists %v", c.Role, c.Identity, c.Node, c.SourceIP,
				c.Cluster.Ghost, c.Cluster.GhostReason, c.Cluster.Stale, c.Cluster.NodeExists)
		}
	}
	if judged != 2*len(agents.Nodes) {
		t.Errorf("/debug/clients judged %d node-agent instances, want %d", judged, 2*len(agents.Nodes))
	}
	mfs, err := ex.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "herd_ghost_instance", "herd_stale_kubelet":
			if len(mf.GetMetric()) > 0 {
				t.Errorf("%s has %d series, want none", mf.GetName(), len(mf.GetMetric()))
			}
		case "herd_ghost_instances":
			for _, m := range mf.GetMetric() {
				if m.GetGauge().GetValue() != 0 {
					t.Errorf("herd_ghost_instances %v = %g, want 0", m.GetLabel(), m.GetGauge().GetValue())
				}
			}
		}
	}
}

// request is the shape of one counted request of a real agent.
type request struct {
	agent, mode, verb, resource, selector, read string
}

// checkRequests reads what each real agent asked for from the audit log
// (every request once), logs the table that docs/exporter.md reproduces, and
// checks the knobs: WatchList nodes relist by WatchList only, LIST-mode nodes
// by LIST only; every kubelet runs one reflector per ConfigMap and Secret its
// pods mount; kube-proxy relists Services, EndpointSlices, ServiceCIDRs and
// its own Node; both send the real agents' user agents.
func checkRequests(t *testing.T, logPath string, agents *hollow.Cluster) {
	t.Helper()
	byAddr := map[string]*hollow.Node{}
	byName := map[string]*hollow.Node{}
	for _, n := range agents.Nodes {
		byAddr[n.Addr.String()] = n
		byName[n.Name] = n
	}
	table := map[request]int{}
	// per node: relists by WatchList and by LIST, and the objects its
	// per-object reflectors selected.
	// seen counts one agent's relists. A WatchList reflector whose
	// WatchList request fails (a 403 while the node authorizer has not yet
	// linked a new pod to its Secret) lists once in its place: client-go
	// v0.36.3 tools/cache/reflector.go ListAndWatchWithContext sets
	// fallbackToList on any watchList error. So a WatchList agent may LIST
	// a (resource, selector) only as often as its WatchList of it failed.
	type seen struct {
		watchList, list int
		failedWatchList map[string]int // resource and field selector → failed WatchLists
		lists           map[string]int // resource and field selector → LISTs
	}
	relists := map[string]*seen{}
	objects := map[string]map[string]bool{}
	proxyRelists := map[string]map[string]bool{}
	err := auditcount.Each(logPath, func(e *auditv1.Event) {
		if !auditcount.Counted(e) {
			return
		}
		var n *hollow.Node
		agent := "kubelet"
		if name, ok := strings.CutPrefix(e.User.Username, "system:node:"); ok {
			n = byName[name]
			if !strings.HasPrefix(e.UserAgent, "kubelet/v1.36.3 ") {
				t.Errorf("kubelet %s user agent %q", name, e.UserAgent)
			}
		} else {
			agent = "kube-proxy"
			if len(e.SourceIPs) > 0 {
				n = byAddr[e.SourceIPs[len(e.SourceIPs)-1]]
			}
			if !strings.HasPrefix(e.UserAgent, "kube-proxy/v1.36.3 ") {
				t.Errorf("kube-proxy user agent %q", e.UserAgent)
			}
		}
		if n == nil {
			t.Errorf("%s request from %v by %s: no hollow node", agent, e.SourceIPs, e.User.Username)
			return
		}
		mode := "WatchList"
		if n.ListMode {
			mode = "LIST mode"
		}
		q := auditcount.Query(e.RequestURI)
		resource := ""
		if e.ObjectRef != nil {
			resource = e.ObjectRef.Resource
			if e.ObjectRef.Subresource != "" {
				resource += "/" + e.ObjectRef.Subresource
			}
			if e.ObjectRef.APIGroup != "" {
				resource += "." + e.ObjectRef.APIGroup
			}
		}
		fs := q.Get("fieldSelector")
		selector := fs
		switch {
		case strings.HasPrefix(fs, "metadata.name="):
			selector = "metadata.name=<one object>"
		case strings.HasPrefix(fs, "spec.nodeName="):
			selector = "spec.nodeName=<its node>"
		}
		if ls := q.Get("labelSelector"); ls != "" {
			selector = strings.TrimPrefix(selector+" "+ls, " ")
		}
		read := ""
		key := agent + " " + n.Name
		if relists[key] == nil {
			relists[key] = &seen{failedWatchList: map[string]int{}, lists: map[string]int{}}
		}
		switch {
		case e.Verb == "watch" && q.Get("sendInitialEvents") == "true":
			read = "WatchList relist"
			relists[key].watchList++
			if e.ResponseStatus != nil && e.ResponseStatus.Code >= 400 {
				relists[key].failedWatchList[resource+" "+fs]++
			}
		case e.Verb == "watch":
			read = "watch from its resourceVersion"
		case e.Verb == "list" && q.Get("continue") != "":
			read = "page"
		case e.Verb == "list":
			read = "LIST relist, " + auditcount.Consistency(q)
			relists[key].list++
			relists[key].lists[resource+" "+fs]++
		}
		if strings.HasPrefix(read, "WatchList") || strings.HasPrefix(read, "LIST") {
			if agent == "kubelet" && (resource == "configmaps" || resource == "secrets") && strings.HasPrefix(fs, "metadata.name=") {
				if objects[n.Name] == nil {
					objects[n.Name] = map[string]bool{}
				}
				objects[n.Name][resource+"/"+strings.TrimPrefix(fs, "metadata.name=")] = true
			}
			if agent == "kube-proxy" {
				if proxyRelists[n.Name] == nil {
					proxyRelists[n.Name] = map[string]bool{}
				}
				proxyRelists[n.Name][resource+" "+fs] = true
			}
		}
		table[request{agent, mode, e.Verb, resource, selector, read + codeSuffix(e)}]++
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range agents.Nodes {
		for _, agent := range []string{"kubelet", "kube-proxy"} {
			s := relists[agent+" "+n.Name]
			switch {
			case s == nil:
				t.Errorf("%s %s: no requests", agent, n.Name)
			case n.ListMode && (s.watchList > 0 || s.list == 0):
				t.Errorf("%s %s (LIST mode): %d WatchList and %d LIST relists, want LIST only", agent, n.Name, s.watchList, s.list)
			case !n.ListMode && s.watchList == 0:
				t.Errorf("%s %s (WatchList): %d WatchList and %d LIST relists, want WatchList", agent, n.Name, s.watchList, s.list)
			case !n.ListMode:
				for what, lists := range s.lists {
					if failed := s.failedWatchList[what]; lists > failed {
						t.Errorf("%s %s (WatchList): %d LIST relists of %q after %d failed WatchLists of it: want LISTs only in place of a failed WatchList", agent, n.Name, lists, what, failed)
					}
				}
			}
		}
		for i := range podsPerNode {
			pod := fmt.Sprintf("%s-pod-%d", n.Name, i)
			for _, obj := range []string{"configmaps/" + pod, "secrets/" + pod} {
				if !objects[n.Name][obj] {
					t.Errorf("kubelet %s: no relist of %s by metadata.name (its pods' volumes: a reflector per object)", n.Name, obj)
				}
			}
		}
		for _, want := range []string{"services spec.clusterIP!=None", "endpointslices.discovery.k8s.io ", "servicecidrs.networking.k8s.io ", "nodes metadata.name=" + n.Name} {
			if !proxyRelists[n.Name][want] {
				t.Errorf("kube-proxy %s: no relist of %q (relisted %v)", n.Name, want, proxyRelists[n.Name])
			}
		}
	}
	rows := make([]request, 0, len(table))
	for r := range table {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return slices.Compare([]string{a.agent, a.mode, a.resource, a.verb, a.read, a.selector}, []string{b.agent, b.mode, b.resource, b.verb, b.read, b.selector}) < 0
	})
	var b strings.Builder
	fmt.Fprintf(&b, "requests of the real agents, %d nodes, %d pods each (counted once each, all nodes together):\n", len(agents.Nodes), podsPerNode)
	fmt.Fprintf(&b, "| agent | mode | verb | resource | selector | read | requests |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d |\n", r.agent, r.mode, r.verb, r.resource, r.selector, r.read, table[r])
	}
	t.Log(b.String())
}

func codeSuffix(e *auditv1.Event) string {
	if e.ResponseStatus == nil || e.ResponseStatus.Code < 300 {
		return ""
	}
	return fmt.Sprintf(" (%d)", e.ResponseStatus.Code)
}
