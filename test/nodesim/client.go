package nodesim

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/controlplane"
)

// User agents of the simulated agents. They follow the real agents' formats
// (client-go's "<binary>/<version> (<os>/<arch>) kubernetes/<commit>" for
// kubelet and kube-proxy) because herd classifies clients by user-agent
// prefix; the commit part says the requests are simulated.
const (
	KubeletUserAgent     = "kubelet/v1.36.3 (linux/amd64) kubernetes/herdsim"
	KubeProxyUserAgent   = "kube-proxy/v1.36.3 (linux/amd64) kubernetes/herdsim"
	CalicoNodeUserAgent  = "calico-node/v3.30.0 (linux/amd64) herdsim"
	CiliumAgentUserAgent = "cilium-agent/1.18.0 (linux/amd64) herdsim"
)

// Agent names, as herd's `client` label spells them (SPEC §3.2).
const (
	AgentKubelet     = "kubelet"
	AgentKubeProxy   = "kube-proxy"
	AgentCalicoNode  = "calico-node"
	AgentCiliumAgent = "cilium-agent"
)

// ConfigSource hands out credentials for named identities.
// *controlplane.ControlPlane is one; a drill against another cluster can
// provide its own.
type ConfigSource interface {
	// Config is a rest.Config that authenticates as the identity.
	Config(identity string) *rest.Config
	// User is the username the apiserver will see for the identity.
	User(identity string) string
}

var _ ConfigSource = (*controlplane.ControlPlane)(nil)

// Options adjust how a simulated client presents itself.
type Options struct {
	// UserAgent replaces the agent's default user agent.
	UserAgent string
	// SourceIP, if set, is sent as X-Forwarded-For on every request. The
	// apiserver records it as the audit event's sourceIPs[0], so a
	// host-network client (kube-proxy, a CNI agent) on loopback can appear to
	// come from a Node's address, or from an address no Node has (a ghost).
	// It is only a header: nothing is bound to the address.
	SourceIP string
}

// Client is one simulated node-side agent's connection to the apiserver: an
// identity, a user agent and an optional forwarded source IP. It is safe for
// concurrent use. Close it when done.
type Client struct {
	// Agent is the kind of agent simulated (AgentKubelet, ...).
	Agent string
	// Identity is the ConfigSource identity name (e.g. "kubelet:node-1").
	Identity string
	// User is the username the apiserver authenticates (e.g. system:node:node-1).
	User string
	// Node is the kubelet's node name; empty for other agents.
	Node string
	// UserAgent is sent on every request.
	UserAgent string
	// SourceIP is sent as X-Forwarded-For when not empty.
	SourceIP string

	host      string
	transport *http.Transport
	http      *http.Client
	config    *rest.Config // for client-go clients sharing http
}

// NewKubelet is node's kubelet: identity controlplane.KubeletIdentity(node),
// user system:node:<node>. The identity must exist in the source (for the
// test control plane: list the node in controlplane.Options.Nodes; the Node
// object itself need not exist, which is how ghosts are made).
func NewKubelet(src ConfigSource, node string, opts Options) (*Client, error) {
	c, err := newFromSource(src, controlplane.KubeletIdentity(node), AgentKubelet, KubeletUserAgent, opts)
	if err != nil {
		return nil, err
	}
	c.Node = node
	return c, nil
}

// NewKubeProxy is kube-proxy (service account kube-system/kube-proxy).
func NewKubeProxy(src ConfigSource, opts Options) (*Client, error) {
	return newFromSource(src, controlplane.KubeProxy, AgentKubeProxy, KubeProxyUserAgent, opts)
}

// NewCalicoNode is calico-node (service account kube-system/calico-node).
func NewCalicoNode(src ConfigSource, opts Options) (*Client, error) {
	return newFromSource(src, controlplane.CalicoNode, AgentCalicoNode, CalicoNodeUserAgent, opts)
}

// NewCiliumAgent is cilium-agent (service account kube-system/cilium).
func NewCiliumAgent(src ConfigSource, opts Options) (*Client, error) {
	return newFromSource(src, controlplane.Cilium, AgentCiliumAgent, CiliumAgentUserAgent, opts)
}

func newFromSource(src ConfigSource, identity, agent, defaultUA string, opts Options) (*Client, error) {
	if opts.UserAgent == "" {
		opts.UserAgent = defaultUA
	}
	c, err := NewClient(src.Config(identity), agent, opts)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", agent, identity, err)
	}
	c.Identity = identity
	c.User = src.User(identity)
	return c, nil
}

// NewClient builds a client from a rest.Config. It owns its transport (not
// client-go's process-wide TLS cache) so that Close really drops its
// connections and a test can prove nothing leaks.
func NewClient(cfg *rest.Config, agent string, opts Options) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if opts.UserAgent != "" {
		cfg.UserAgent = opts.UserAgent
	}
	if cfg.UserAgent == "" {
		return nil, fmt.Errorf("new client: no user agent for agent %q", agent)
	}
	if opts.SourceIP != "" && !validIP(opts.SourceIP) {
		return nil, fmt.Errorf("new client: source IP %q is not an IP address", opts.SourceIP)
	}
	host, t, rt, err := Transport(cfg)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	if opts.SourceIP != "" {
		rt = forwardedFor{ip: opts.SourceIP, next: rt}
	}
	c := &Client{
		Agent:     agent,
		UserAgent: cfg.UserAgent,
		SourceIP:  opts.SourceIP,
		host:      host,
		transport: t,
		http:      &http.Client{Transport: rt},
		config:    cfg,
	}
	return c, nil
}

// Transport is an HTTP transport for cfg of its own, not client-go's
// process-wide TLS cache, so that closing it really drops its connections
// (a test can prove nothing leaks, and each simulated agent has its own
// connection as on its own node). It returns the apiserver's base URL, the
// transport and the round tripper that adds cfg's credentials and user
// agent.
func Transport(cfg *rest.Config) (host string, t *http.Transport, rt http.RoundTripper, err error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		return "", nil, nil, fmt.Errorf("bad host %q", cfg.Host)
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return "", nil, nil, fmt.Errorf("TLS config: %w", err)
	}
	t = utilnet.SetTransportDefaults(&http.Transport{TLSClientConfig: tlsCfg})
	if rt, err = rest.HTTPWrappersForConfig(cfg, t); err != nil {
		t.CloseIdleConnections()
		return "", nil, nil, fmt.Errorf("transport: %w", err)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host, "/"), t, rt, nil
}

// WithSourceIP is cfg with every request carrying X-Forwarded-For: ip, which
// the apiserver reports as the request's source IP (see Options.SourceIP),
// for client-go clients of a simulated host-network agent.
func WithSourceIP(cfg *rest.Config, ip string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return forwardedFor{ip: ip, next: rt} })
	return cfg
}

// ForTest is the client mk makes, for the test t: t fails at once if mk
// cannot make it, and the client is closed when t ends.
func ForTest(t testing.TB, mk func() (*Client, error)) *Client {
	t.Helper()
	c, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Close drops the client's idle connections. Requests still running are not
// interrupted: cancel their contexts first.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// dynamicClient is a client-go dynamic client that shares this client's
// transport, identity, user agent and source IP.
func (c *Client) dynamicClient() (*dynamic.DynamicClient, error) {
	return dynamic.NewForConfigAndClient(c.config, c.http)
}

// forwardedFor sets X-Forwarded-For, which the apiserver reports as the
// first source IP of the request.
type forwardedFor struct {
	ip   string
	next http.RoundTripper
}

func (f forwardedFor) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("X-Forwarded-For", f.ip)
	return f.next.RoundTrip(req)
}

func validIP(s string) bool { return net.ParseIP(s) != nil }
