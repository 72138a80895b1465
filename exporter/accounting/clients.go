package accounting

import (
	"sort"
	"time"
)

// ClientView is one instance as /debug/clients and `herd analyze` show it.
type ClientView struct {
	Role        string `json:"role"`
	Client      string `json:"client"`
	Identity    string `json:"identity"`
	Node        string `json:"node"`
	Attribution string `json:"attribution"`
	// ClassifiedBy is "identity", or "user_agent" when only the User-Agent
	// matched a rule.
	ClassifiedBy string `json:"classifiedBy"`
	// SourceIP is the last sourceIPs[0]: X-Forwarded-For's first hop when
	// the client sent one, shown, never trusted. TrustedSourceIP is the
	// address attribution and ghost verdicts use.
	SourceIP        string       `json:"sourceIP,omitempty"`
	TrustedSourceIP string       `json:"trustedSourceIP,omitempty"`
	SourceIPChanges uint64       `json:"sourceIPChanges,omitempty"`
	UserAgent       string       `json:"userAgent,omitempty"`
	FirstSeen       time.Time    `json:"firstSeen"`
	LastSeen        time.Time    `json:"lastSeen"`
	Requests        uint64       `json:"requests"`
	Errors          uint64       `json:"errors"`
	LastErrorCode   int32        `json:"lastErrorCode,omitempty"`
	TokenReviews    uint64       `json:"tokenReviews,omitempty"`
	WindowRelists   int          `json:"windowRelists"`
	WindowTooLarge  int          `json:"windowTooLargeResourceVersion"`
	Resources       []StreamView `json:"resources"`
	// Cluster is the verdict on the instance, made as the snapshot makes
	// it; nil without a cluster view (--no-kube, herd analyze).
	Cluster *Verdict `json:"cluster,omitempty"`

	window InstanceWindow
}

// StreamView is an instance's traffic on one resource, in one shape.
type StreamView struct {
	Resource string `json:"resource"`
	// Shape is what its relists select: all, node, selected or object.
	Shape          string            `json:"shape"`
	Relists        uint64            `json:"relists"`
	ByConsistency  map[string]uint64 `json:"byConsistency,omitempty"`
	Pages          uint64            `json:"pages,omitempty"`
	TooLarge       uint64            `json:"tooLargeResourceVersion,omitempty"`
	LastRelist     *time.Time        `json:"lastRelist,omitempty"`
	WindowRelists  int               `json:"windowRelists"`
	WindowTooLarge int               `json:"windowTooLargeResourceVersion,omitempty"`
}

// ClientFilter selects instances; empty fields match everything.
type ClientFilter struct {
	Role, Client, Node, Identity string
	// Limit caps the result (most window relists first); 0 means no cap.
	Limit int
}

func (f ClientFilter) match(in *Instance) bool {
	return (f.Role == "" || f.Role == in.Role.String()) && (f.Client == "" || f.Client == in.Client) &&
		(f.Node == "" || f.Node == in.Node) && (f.Identity == "" || f.Identity == in.Identity)
}

// Clients lists instances with their counters and verdicts, busiest in the
// window first.
func (l *Ledger) Clients(f ClientFilter) []ClientView {
	return l.ClientsAt(l.clock(), f)
}

// ClientsAt is Clients with windows ending at now (Unix ns).
func (l *Ledger) ClientsAt(now int64, f ClientFilter) []ClientView {
	l.mu.Lock()
	out := make([]ClientView, 0, min(len(l.instances), 1024))
	pods, havePods := l.resources.ids["pods"]
	for _, in := range l.instances {
		if !f.match(in) {
			continue
		}
		v := ClientView{
			Role: in.Role.String(), Client: in.Client, Identity: in.Identity, Node: in.Node,
			Attribution: in.Attribution.String(), ClassifiedBy: classifiedBy(in.ByUserAgent),
			SourceIP: in.source.String(), TrustedSourceIP: in.trusted.String(), SourceIPChanges: in.SourceIPChanges,
			UserAgent: in.UserAgent, FirstSeen: time.Unix(0, in.FirstSeen).UTC(), LastSeen: time.Unix(0, in.LastSeen).UTC(),
			Requests: in.Requests, Errors: in.Errors, LastErrorCode: in.LastErrorCode, TokenReviews: in.TokenReviews,
		}
		l.window(in, now, pods, havePods, &v.window)
		for _, s := range in.streams {
			sv := StreamView{
				Resource: l.resources.name(s.resource), Shape: s.shape.String(), Relists: s.Relists, Pages: s.Pages, TooLarge: s.TooLarge,
				WindowRelists: s.win.sum(now, l.width), WindowTooLarge: s.tooLargeWin.sum(now, l.width),
			}
			for c, n := range s.ByConsistency {
				if n > 0 {
					if sv.ByConsistency == nil {
						sv.ByConsistency = map[string]uint64{}
					}
					sv.ByConsistency[Consistency(c).String()] = n
				}
			}
			if s.LastRelistNanos > 0 {
				t := time.Unix(0, s.LastRelistNanos).UTC()
				sv.LastRelist = &t
			}
			v.WindowRelists += sv.WindowRelists
			v.WindowTooLarge += sv.WindowTooLarge
			v.Resources = append(v.Resources, sv)
		}
		if v.Resources == nil {
			v.Resources = []StreamView{}
		}
		sort.Slice(v.Resources, func(i, j int) bool {
			a, b := v.Resources[i], v.Resources[j]
			return a.Resource < b.Resource || a.Resource == b.Resource && a.Shape < b.Shape
		})
		out = append(out, v)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].WindowRelists != out[j].WindowRelists {
			return out[i].WindowRelists > out[j].WindowRelists
		}
		if out[i].WindowTooLarge != out[j].WindowTooLarge {
			return out[i].WindowTooLarge > out[j].WindowTooLarge
		}
		return out[i].Identity+out[i].Node < out[j].Identity+out[j].Node
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	for i := range out {
		out[i].Cluster = l.debugVerdict(&out[i].window, now)
	}
	return out
}

// TokenReviewNodes is how many nodes' kubelets created TokenReviews in the
// window ending now, as Snapshot counts them.
func (l *Ledger) TokenReviewNodes() int {
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	nodes := map[string]bool{}
	for _, in := range l.instances {
		if l.reviewsTokens(in, now) {
			nodes[in.Node] = true
		}
	}
	return len(nodes)
}

// classifiedBy is the classified_by label value and /debug/clients field.
func classifiedBy(byUserAgent bool) string {
	if byUserAgent {
		return "user_agent"
	}
	return "identity"
}
