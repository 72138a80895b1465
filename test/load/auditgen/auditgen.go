// Package auditgen renders realistic kube-apiserver audit webhook batches
// for herd's hot-path benchmark (exporter/hotpath_bench_test.go) and its HTTP
// load test (test/load), so both measure the same bytes.
//
// The simulated cluster has N nodes, each running a kubelet, kube-proxy and
// cilium-agent (3·N instances), with kube-apiserver 1.36's Metadata-level
// events for what those agents do in steady state: lease renewals, node
// status patches, filtered pod LISTs and re-watches, WatchList relists,
// endpointslice and service watches, CiliumNode updates, the odd consistent
// LIST and TokenReview. Identities, user agents, source IPs, user extras and
// RBAC annotations are what a real apiserver writes; '&' in request URIs is
// escaped as \u0026, as its JSON encoder does.
//
// A Corpus is built once; every batch is then a copy of one of its templates
// with fresh auditIDs (Stamp rewrites 8 hex digits per event in place), so a
// sender can post millions of distinct events without rendering JSON.
package auditgen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Options shape a Corpus. Zero fields take the defaults.
type Options struct {
	// Nodes is the cluster size (default 5,000); instances are 3 per node.
	Nodes int
	// BatchSize is the events per batch (default 400, the webhook backend's
	// default --audit-webhook-batch-max-size).
	BatchSize int
	// Batches is how many distinct templates to render (default: enough for
	// every instance to appear twice).
	Batches int
	// Now anchors the events' timestamps (default time.Now()); they span the
	// few seconds before it.
	Now time.Time
	// Seed makes the request mix reproducible (default 1).
	Seed uint64
}

// Corpus is a set of rendered EventList templates.
type Corpus struct {
	batches   [][]byte
	idOffsets [][]int // per batch: where each event's auditID value starts
	nodes     int
	events    int
}

// Agents per node: the instance kinds.
const (
	kubelet = iota
	kubeProxy
	cilium
	agentsPerNode
)

// New renders a corpus.
func New(o Options) *Corpus {
	if o.Nodes <= 0 {
		o.Nodes = 5000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 400
	}
	if o.Batches <= 0 {
		o.Batches = (2*agentsPerNode*o.Nodes + o.BatchSize - 1) / o.BatchSize
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	c := &Corpus{nodes: o.Nodes}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6865726421))
	total := o.Batches * o.BatchSize
	base := o.Now.Add(-5 * time.Second).UTC()
	var sb strings.Builder
	for bi := 0; bi < o.Batches; bi++ {
		sb.Reset()
		sb.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[`)
		for k := 0; k < o.BatchSize; k++ {
			j := bi*o.BatchSize + k
			if k > 0 {
				sb.WriteByte(',')
			}
			inst := j % (agentsPerNode * o.Nodes)
			ts := base.Add(time.Duration(int64(j) * int64(4*time.Second) / int64(total)))
			writeEvent(&sb, rng, j, inst/agentsPerNode, inst%agentsPerNode, ts)
		}
		sb.WriteString(`]}`)
		b := []byte(sb.String())
		c.batches = append(c.batches, b)
		c.idOffsets = append(c.idOffsets, auditIDOffsets(b))
		c.events += o.BatchSize
	}
	return c
}

// Len is the number of templates.
func (c *Corpus) Len() int { return len(c.batches) }

// Events is the number of events in all templates.
func (c *Corpus) Events() int { return c.events }

// BatchEvents is the number of events in template i.
func (c *Corpus) BatchEvents(i int) int { return len(c.idOffsets[i]) }

// Instances is the number of simulated agent instances (3 per node).
func (c *Corpus) Instances() int { return agentsPerNode * c.nodes }

// Template is batch i as rendered (sequence number 0). Do not modify it.
func (c *Corpus) Template(i int) []byte { return c.batches[i] }

// Fill copies template i into dst (reusing its capacity), stamps it with seq
// and returns it.
func (c *Corpus) Fill(dst []byte, i int, seq uint32) []byte {
	dst = append(dst[:0], c.batches[i]...)
	c.Stamp(dst, i, seq)
	return dst
}

// Stamp writes seq as the first 8 hex digits of every auditID in body, which
// must be a copy of template i. Distinct (seq, template) pairs never share
// an auditID, so each stamped batch is new to herd's deduplication.
func (c *Corpus) Stamp(body []byte, i int, seq uint32) {
	const hexdigits = "0123456789abcdef"
	var h [8]byte
	for k := 7; k >= 0; k-- {
		h[k] = hexdigits[seq&0xf]
		seq >>= 4
	}
	for _, off := range c.idOffsets[i] {
		copy(body[off:off+8], h[:])
	}
}

var auditIDKey = []byte(`"auditID":"`)

func auditIDOffsets(b []byte) []int {
	var offs []int
	for i := 0; ; {
		k := bytes.Index(b[i:], auditIDKey)
		if k < 0 {
			return offs
		}
		i += k + len(auditIDKey)
		offs = append(offs, i)
	}
}

// Node is node i's name and address.
func Node(i int) (name, ip string) {
	a, b := 32+i/62500, (i/250)%250
	d := i%250 + 1
	return fmt.Sprintf("ip-10-%d-%d-%d.eu-west-1.compute.internal", a, b, d), fmt.Sprintf("10.%d.%d.%d", a, b, d)
}

const (
	kubeletUA   = "kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
	kubeProxyUA = "kube-proxy/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
	ciliumUA    = "cilium-agent/1.18.2 go/go1.24.6 (linux/amd64)"
	nodeGroups  = `["system:nodes","system:authenticated"]`
	saGroups    = `["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]`
	tsLayout    = "2006-01-02T15:04:05.000000Z"
)

// request is one audited request, before rendering.
type request struct {
	stage, verb, uri string
	resource, group  string
	namespace, name  string
	subresource      string
	code             int
	reason           string // authorization.k8s.io/reason
}

// writeEvent renders event j: agent kind of node n.
func writeEvent(sb *strings.Builder, rng *rand.Rand, j, n, kind int, ts time.Time) {
	node, ip := Node(n)
	rv := 48_000_000 + rng.IntN(5_000_000)
	var (
		r          request
		user, ua   string
		groups     string
		extra      string
		podSuffix  = fmt.Sprintf("%05x", (n*2654435761)&0xfffff)
		credential = fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
	)
	switch kind {
	case kubelet:
		user, ua, groups = "system:node:"+node, kubeletUA, nodeGroups
		extra = `{"authentication.kubernetes.io/credential-id":["X509SHA256=` + credential + credential + `"]}`
		r = kubeletRequest(rng, node, rv)
	case kubeProxy:
		user, ua, groups = "system:serviceaccount:kube-system:kube-proxy", kubeProxyUA, saGroups
		extra = saExtra(credential, node, "kube-proxy-"+podSuffix)
		r = kubeProxyRequest(rng, node, rv)
		r.reason = `RBAC: allowed by ClusterRoleBinding \"kubeadm:node-proxier\" of ClusterRole \"system:node-proxier\" to ServiceAccount \"kube-proxy/kube-system\"`
	default:
		user, ua, groups = "system:serviceaccount:kube-system:cilium", ciliumUA, saGroups
		extra = saExtra(credential, node, "cilium-"+podSuffix)
		r = ciliumRequest(rng, node, rv)
		r.reason = `RBAC: allowed by ClusterRoleBinding \"cilium\" of ClusterRole \"cilium\" to ServiceAccount \"cilium/kube-system\"`
	}
	if r.code == 0 {
		r.code = 200
	}
	received := ts.Add(-time.Duration(1+rng.IntN(40)) * time.Millisecond)
	id := fmt.Sprintf("00000000-%04x-4%03x-%x%03x-%012x", j&0xffff, j>>16&0xfff, 8+rng.IntN(4), rng.IntN(4096), rng.Uint64()&0xffffffffffff)

	fmt.Fprintf(sb, `{"level":"Metadata","auditID":"%s","stage":"%s","requestURI":"%s","verb":"%s","user":{"username":"%s","groups":%s,"extra":%s},"sourceIPs":["%s"],"userAgent":"%s","objectRef":{`,
		id, r.stage, r.uri, r.verb, user, groups, extra, ip, ua)
	sb.WriteString(`"resource":"` + r.resource + `"`)
	if r.namespace != "" {
		sb.WriteString(`,"namespace":"` + r.namespace + `"`)
	}
	if r.name != "" {
		sb.WriteString(`,"name":"` + r.name + `"`)
	}
	if r.group != "" {
		sb.WriteString(`,"apiGroup":"` + r.group + `"`)
	}
	sb.WriteString(`,"apiVersion":"` + apiVersion(r.group) + `"`)
	if r.subresource != "" {
		sb.WriteString(`,"subresource":"` + r.subresource + `"`)
	}
	sb.WriteString(`},"responseStatus":{"metadata":{},"code":` + fmt.Sprint(r.code) + `}`)
	fmt.Fprintf(sb, `,"requestReceivedTimestamp":"%s","stageTimestamp":"%s","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"%s"}}`,
		received.Format(tsLayout), ts.Format(tsLayout), r.reason)
}

func saExtra(credential, node, pod string) string {
	return `{"authentication.kubernetes.io/credential-id":["JTI=` + credential[:8] + "-" + credential[8:12] + "-" + credential[12:16] + "-" + credential[16:20] + "-" + credential[20:32] +
		`"],"authentication.kubernetes.io/node-name":["` + node + `"],"authentication.kubernetes.io/node-uid":["` + uid(node) +
		`"],"authentication.kubernetes.io/pod-name":["` + pod + `"],"authentication.kubernetes.io/pod-uid":["` + uid(pod) + `"]}`
}

func uid(s string) string {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", h>>32, h>>16&0xffff, h>>4&0xfff, h&0xfff, (h*31)&0xffffffffffff)
}

func apiVersion(group string) string {
	switch group {
	case "":
		return "v1"
	case "cilium.io":
		return "v2"
	}
	return "v1"
}

// pick chooses an index by weight.
func pick(rng *rand.Rand, weights ...int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	x := rng.IntN(total)
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}

const amp = `\u0026` // '&' as the apiserver's JSON encoder writes it

func kubeletRequest(rng *rand.Rand, node string, rv int) request {
	sel := "fieldSelector=spec.nodeName%3D" + node
	switch pick(rng, 40, 10, 8, 8, 8, 4, 8, 6, 2) {
	case 0: // lease renewal every 10 s: the bulk of kubelet traffic
		return request{stage: "ResponseComplete", verb: "update", uri: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + node + "?timeout=10s",
			resource: "leases", group: "coordination.k8s.io", namespace: "kube-node-lease", name: node}
	case 1: // node status
		return request{stage: "ResponseComplete", verb: "patch", uri: "/api/v1/nodes/" + node + "/status?timeout=10s",
			resource: "nodes", name: node, subresource: "status"}
	case 2:
		return request{stage: "ResponseComplete", verb: "get", uri: "/api/v1/nodes/" + node + "?resourceVersion=0" + amp + "timeout=10s",
			resource: "nodes", name: node}
	case 3: // pod relist from the watch cache
		return request{stage: "ResponseComplete", verb: "list", uri: "/api/v1/pods?" + sel + amp + "limit=500" + amp + "resourceVersion=0",
			resource: "pods"}
	case 4: // plain re-watch
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/api/v1/pods?allowWatchBookmarks=true%s%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true",
			amp, sel, amp, rv, amp, 300+rng.IntN(300), amp), resource: "pods"}
	case 5: // WatchList relist
		return request{stage: "ResponseStarted", verb: "watch", uri: "/api/v1/pods?allowWatchBookmarks=true" + amp + sel + amp +
			"resourceVersionMatch=NotOlderThan" + amp + "sendInitialEvents=true" + amp + fmt.Sprintf("timeoutSeconds=%d", 300+rng.IntN(300)) + amp + "watch=true",
			resource: "pods"}
	case 6: // a pod's secret or configmap
		res, name := "configmaps", "kube-root-ca.crt"
		if rng.IntN(2) == 0 {
			res, name = "secrets", fmt.Sprintf("app-%d-tls", rng.IntN(50))
		}
		ns := fmt.Sprintf("team-%d", rng.IntN(40))
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/api/v1/namespaces/%s/%s?allowWatchBookmarks=true%sfieldSelector=metadata.name%%3D%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true",
			ns, res, amp, name, amp, rv, amp, 300+rng.IntN(300), amp), resource: res, namespace: ns}
	case 7: // the watch ending
		return request{stage: "ResponseComplete", verb: "watch", uri: fmt.Sprintf("/api/v1/pods?allowWatchBookmarks=true%s%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true",
			amp, sel, amp, rv, amp, 300+rng.IntN(300), amp), resource: "pods"}
	default: // webhook authentication of a scrape
		return request{stage: "ResponseComplete", verb: "create", uri: "/apis/authentication.k8s.io/v1/tokenreviews",
			resource: "tokenreviews", group: "authentication.k8s.io", code: 201}
	}
}

func kubeProxyRequest(rng *rand.Rand, node string, rv int) request {
	const eps = "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name"
	const svcs = "/api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name"
	switch pick(rng, 30, 10, 20, 10, 20, 10) {
	case 0:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("%s%sallowWatchBookmarks=true%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", eps, amp, amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "endpointslices", group: "discovery.k8s.io"}
	case 1:
		return request{stage: "ResponseComplete", verb: "list", uri: eps + amp + "limit=500" + amp + "resourceVersion=0",
			resource: "endpointslices", group: "discovery.k8s.io"}
	case 2:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("%s%sallowWatchBookmarks=true%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", svcs, amp, amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "services"}
	case 3:
		return request{stage: "ResponseStarted", verb: "watch", uri: svcs + amp + "allowWatchBookmarks=true" + amp + "resourceVersionMatch=NotOlderThan" + amp + "sendInitialEvents=true" + amp + "watch=true",
			resource: "services"}
	case 4:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/api/v1/nodes?allowWatchBookmarks=true%sfieldSelector=metadata.name%%3D%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", amp, node, amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "nodes"}
	default:
		return request{stage: "ResponseComplete", verb: "list", uri: "/api/v1/nodes?fieldSelector=metadata.name%3D" + node + amp + "limit=500" + amp + "resourceVersion=0",
			resource: "nodes"}
	}
}

func ciliumRequest(rng *rand.Rand, node string, rv int) request {
	switch pick(rng, 20, 10, 15, 5, 15, 10, 15, 10) {
	case 0:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/apis/cilium.io/v2/ciliumnodes?allowWatchBookmarks=true%sfieldSelector=metadata.name%%3D%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", amp, node, amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "ciliumnodes", group: "cilium.io"}
	case 1:
		return request{stage: "ResponseComplete", verb: "list", uri: "/apis/cilium.io/v2/ciliumnodes?fieldSelector=metadata.name%3D" + node + amp + "limit=500",
			resource: "ciliumnodes", group: "cilium.io"}
	case 2:
		return request{stage: "ResponseComplete", verb: "update", uri: "/apis/cilium.io/v2/ciliumnodes/" + node + "/status",
			resource: "ciliumnodes", group: "cilium.io", name: node, subresource: "status"}
	case 3: // a consistent LIST: the expensive kind
		return request{stage: "ResponseComplete", verb: "list", uri: "/apis/cilium.io/v2/ciliumendpoints?limit=500",
			resource: "ciliumendpoints", group: "cilium.io"}
	case 4:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/apis/cilium.io/v2/ciliumidentities?allowWatchBookmarks=true%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "ciliumidentities", group: "cilium.io"}
	case 5:
		return request{stage: "ResponseStarted", verb: "watch", uri: "/api/v1/pods?allowWatchBookmarks=true" + amp + "fieldSelector=spec.nodeName%3D" + node + amp +
			"resourceVersionMatch=NotOlderThan" + amp + "sendInitialEvents=true" + amp + "watch=true", resource: "pods"}
	case 6:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/api/v1/pods?allowWatchBookmarks=true%sfieldSelector=spec.nodeName%%3D%s%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", amp, node, amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "pods"}
	default:
		return request{stage: "ResponseStarted", verb: "watch", uri: fmt.Sprintf("/apis/discovery.k8s.io/v1/endpointslices?allowWatchBookmarks=true%sresourceVersion=%d%stimeoutSeconds=%d%swatch=true", amp, rv, amp, 300+rng.IntN(300), amp),
			resource: "endpointslices", group: "discovery.k8s.io"}
	}
}
