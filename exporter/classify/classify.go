// Package classify decides who made an audited request: which role
// (kubelet, kube-proxy, cni, metrics-server, other) and which concrete agent.
//
// Node-side agents identify themselves two ways: by identity (system:node:NAME,
// a service account such as kube-system:cilium) and by user agent
// (calico-node/v3.30 ...). Either is enough; identity wins because user agents
// are set by the client and are trivially wrong. The label values produced here
// come from a fixed set (the rules), never from the request, so metric
// cardinality stays bounded whatever a client sends.
package classify

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// Role is the kind of node-side client; the vocabulary is shared with the
// responder (internal/nodeclient).
type Role = nodeclient.Role

// The roles.
const (
	RoleOther         = nodeclient.RoleOther
	RoleKubelet       = nodeclient.RoleKubelet
	RoleKubeProxy     = nodeclient.RoleKubeProxy
	RoleCNI           = nodeclient.RoleCNI
	RoleMetricsServer = nodeclient.RoleMetricsServer
)

// HostAgent reports whether a role runs on the host network of a node
// (kubelet, kube-proxy, CNI agents), so that its identity and address must
// belong to a Node: the roles that can be ghosts.
func HostAgent(r Role) bool {
	return r == RoleKubelet || r == RoleKubeProxy || r == RoleCNI
}

// ParseRole is the inverse of Role.String.
func ParseRole(s string) (Role, error) { return nodeclient.ParseRole(s) }

// Result is a classification. Client is one of the rules' client names,
// "other" or "unauthenticated".
type Result struct {
	Role   Role
	Client string
	// ByUserAgent is set when only the User-Agent matched (the rule has no
	// identity matcher): the client chose its classification. Such an
	// instance is measured, but its identity proves nothing about a node,
	// so it is never judged a ghost, and the responder acts on its identity
	// only on that identity's own evidence (SPEC §3.1 "What herd trusts").
	ByUserAgent bool
}

// Other is the classification of anything no rule matches.
var Other = Result{Role: RoleOther, Client: "other"}

// Unauthenticated is the classification of every unauthenticated or
// anonymous request (audit.Event.Unauthenticated), whatever its user agent:
// a caller without credentials never joins a node-side role.
var Unauthenticated = Result{Role: RoleOther, Client: "unauthenticated"}

// Rule maps an identity or user agent to a role and client. At least one
// matcher must be set; all that are set must match. Rules from the user's
// config are tried before the defaults, in order; the first match wins.
type Rule struct {
	Role   string `json:"role"`
	Client string `json:"client"`
	// Username matches user.username exactly.
	Username string `json:"username,omitempty"`
	// UsernamePrefix matches the start of user.username (system:node:).
	UsernamePrefix string `json:"usernamePrefix,omitempty"`
	// ServiceAccount is NAMESPACE:NAME; NAMESPACE may be * for any namespace.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// UserAgentPrefix matches the start of the User-Agent header (calico-node/).
	UserAgentPrefix string `json:"userAgentPrefix,omitempty"`
}

// DefaultRules know the common node-side agents (internal/nodeclient's
// DefaultAgents, which the responder's APF measurement shares): for each,
// its fleet's username prefix, its exact usernames, its service account
// (in any namespace, or in the namespaces its installers use), then its
// user agents.
func DefaultRules() []Rule {
	var r []Rule
	for _, a := range nodeclient.DefaultAgents() {
		add := func(m Rule) {
			m.Role, m.Client = a.Role.String(), a.Client
			r = append(r, m)
		}
		if a.UsernamePrefix != "" {
			add(Rule{UsernamePrefix: a.UsernamePrefix})
		}
		for _, u := range append(append([]string(nil), a.Usernames...), a.LegacyUsernames...) {
			add(Rule{Username: u})
		}
		if a.ServiceAccount != "" {
			if a.AnyNamespace {
				add(Rule{ServiceAccount: "*:" + a.ServiceAccount})
			} else {
				for _, ns := range a.ServiceAccountNamespaces {
					add(Rule{ServiceAccount: ns + ":" + a.ServiceAccount})
				}
			}
		}
		for _, p := range a.UserAgentPrefixes {
			add(Rule{UserAgentPrefix: p})
		}
	}
	return r
}

type compiledRule struct {
	result          Result
	username        []byte
	usernamePrefix  []byte
	saNamespace     []byte // nil: any namespace
	saName          []byte
	userAgentPrefix []byte
}

// Classifier applies rules. It is safe for concurrent use.
//
// Results are cached by (username, user agent). The cache is split into
// shards by a seeded hash of the pair, each under its own lock, so that
// concurrent batches classify in parallel; an entry is keyed by the hash
// and holds the pair, which a hit compares (a collision is a miss, never a
// wrong answer).
type Classifier struct {
	rules   []compiledRule
	clients []string

	seed     maphash.Seed
	maxCache int // entries in all shards
	shards   [cacheShards]cacheShard
}

const cacheShards = 16

type cacheShard struct {
	mu sync.Mutex
	m  map[uint64]cached
	_  [64]byte // keep neighbouring shards' locks off one cache line
}

type cached struct {
	username, userAgent string
	result              Result
}

// New compiles the user's rules followed by DefaultRules. It rejects a rule
// with no matcher, an unknown role, or a client name that is not a lowercase
// DNS label, naming the rule by its position.
func New(userRules []Rule) (*Classifier, error) {
	// One (identity, user agent) pair per kubelet: the cache must hold a
	// cluster's worth (50,000, as accounting.maxInstances) or it thrashes.
	c := &Classifier{seed: maphash.MakeSeed(), maxCache: 50000}
	for i := range c.shards {
		c.shards[i].m = map[uint64]cached{}
	}
	seen := map[string]bool{Other.Client: true, Unauthenticated.Client: true}
	c.clients = []string{Other.Client, Unauthenticated.Client}
	all := append(append([]Rule{}, userRules...), DefaultRules()...)
	for i, r := range all {
		where := fmt.Sprintf("rules[%d]", i)
		if i >= len(userRules) {
			where = fmt.Sprintf("default rule %d", i-len(userRules))
		}
		role, err := ParseRole(r.Role)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if !nodeclient.ValidClientName(r.Client) {
			return nil, fmt.Errorf("%s: client %q must be a lowercase DNS label (a-z, 0-9, '-', '.')", where, r.Client)
		}
		if r.Client == Unauthenticated.Client {
			return nil, fmt.Errorf("%s: client %q is reserved for requests without credentials", where, r.Client)
		}
		if r.Username == "" && r.UsernamePrefix == "" && r.ServiceAccount == "" && r.UserAgentPrefix == "" {
			return nil, fmt.Errorf("%s: set at least one of username, usernamePrefix, serviceAccount, userAgentPrefix", where)
		}
		cr := compiledRule{
			result: Result{Role: role, Client: r.Client,
				ByUserAgent: r.Username == "" && r.UsernamePrefix == "" && r.ServiceAccount == ""},
			username:        nilIfEmpty(r.Username),
			usernamePrefix:  nilIfEmpty(r.UsernamePrefix),
			userAgentPrefix: nilIfEmpty(r.UserAgentPrefix),
		}
		if r.ServiceAccount != "" {
			ns, name, ok := strings.Cut(r.ServiceAccount, ":")
			if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
				return nil, fmt.Errorf("%s: serviceAccount %q must be NAMESPACE:NAME (NAMESPACE may be *)", where, r.ServiceAccount)
			}
			if ns != "*" {
				cr.saNamespace = []byte(ns)
			}
			cr.saName = []byte(name)
		}
		if !seen[r.Client] {
			seen[r.Client] = true
			c.clients = append(c.clients, r.Client)
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

func nilIfEmpty(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// Clients lists every client name the rules can produce, "other" and
// "unauthenticated" first. The responder validates alert labels against it.
func (c *Classifier) Clients() []string { return append([]string(nil), c.clients...) }

var saPrefix = []byte(nodeclient.ServiceAccountUserPrefix)

// Classify returns the first matching rule's result, or Other. It does not
// allocate once a (username, user agent) pair has been seen.
func (c *Classifier) Classify(username, userAgent []byte) Result {
	h := maphash.Bytes(c.seed, username)
	h = (h ^ maphash.Bytes(c.seed, userAgent)*0x9e3779b97f4a7c15) * 0xff51afd7ed558ccd
	sh := &c.shards[h>>60]
	sh.mu.Lock()
	if e, ok := sh.m[h]; ok && e.username == string(username) && e.userAgent == string(userAgent) {
		sh.mu.Unlock()
		return e.result
	}
	r := c.match(username, userAgent)
	if len(sh.m) >= max(1, c.maxCache/cacheShards) {
		// User agents carry versions and, for some clients, build hashes; a
		// reset bounds memory and costs one rule scan per pair afterwards.
		clear(sh.m)
	}
	sh.m[h] = cached{username: string(username), userAgent: string(userAgent), result: r}
	sh.mu.Unlock()
	return r
}

func (c *Classifier) match(username, userAgent []byte) Result {
	var saNS, saName []byte
	if rest, ok := bytes.CutPrefix(username, saPrefix); ok {
		saNS, saName, _ = bytes.Cut(rest, []byte(":"))
	}
	for i := range c.rules {
		r := &c.rules[i]
		if r.username != nil && !bytes.Equal(username, r.username) {
			continue
		}
		if r.usernamePrefix != nil && (!bytes.HasPrefix(username, r.usernamePrefix) || len(username) == len(r.usernamePrefix)) {
			continue
		}
		if r.saName != nil && (saName == nil || !bytes.Equal(saName, r.saName) || (r.saNamespace != nil && !bytes.Equal(saNS, r.saNamespace))) {
			continue
		}
		if r.userAgentPrefix != nil && !bytes.HasPrefix(userAgent, r.userAgentPrefix) {
			continue
		}
		return r.result
	}
	return Other
}

var nodeUserPrefix = []byte(nodeclient.NodeUserPrefix)

// NodeFromUsername returns NAME for system:node:NAME, else nil.
func NodeFromUsername(username []byte) []byte {
	if name, ok := bytes.CutPrefix(username, nodeUserPrefix); ok && len(name) > 0 {
		return name
	}
	return nil
}
