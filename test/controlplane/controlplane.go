// Package controlplane runs a real etcd and kube-apiserver on loopback for
// herd's tests, drills and demo (SPEC §8). Everything herd claims about the
// Kubernetes API (what the Node authorizer allows, what a too-large
// resourceVersion answers, what the audit webhook sends) is checked against
// the apiserver itself, not a fake.
//
// Binaries are built from Go modules by `make controlplane` and cached outside
// the work tree (see BinDir), so a fresh clone on the same machine does not
// rebuild them.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/proc"
)

// Version is the Kubernetes version of the test control plane.
const Version = "v1.36.3"

// Identity names used by Start's default token file. Kubelets are
// KubeletIdentity(node).
const (
	Admin         = "admin"
	KubeProxy     = "kube-proxy"
	CalicoNode    = "calico-node"
	Cilium        = "cilium"
	MetricsServer = "metrics-server"
	KubeScheduler = "kube-scheduler"
)

// KubeletIdentity is the identity name of node's kubelet.
func KubeletIdentity(node string) string { return "kubelet:" + node }

// Identity is one user in the apiserver's static token file.
type Identity struct {
	// User is the username the apiserver authenticates, e.g. system:node:node-1.
	User   string
	Groups []string
	token  string
}

// Options say what to start. The zero value starts a plain control plane with
// kubelet identities for node-1..node-3 and no audit backend.
type Options struct {
	// Nodes are the node names that get a kubelet identity (system:node:NAME in
	// system:nodes). No Node objects are created: tests decide which exist.
	Nodes []string
	// Identities adds users to the token file, keyed by the name Config takes.
	Identities map[string]Identity

	// AuditPolicy is the audit Policy YAML; empty means Metadata for everything
	// (omitting RequestReceived) when any audit backend is set.
	AuditPolicy string
	// AuditWebhookURL, if set, points the batch-mode audit webhook at this URL.
	AuditWebhookURL string
	// AuditWebhookToken is sent as a bearer token by the audit webhook. The
	// apiserver sends it only over https.
	AuditWebhookToken string
	// AuditWebhookCA is the PEM CA that signs an https webhook's certificate;
	// without it the apiserver skips verification.
	AuditWebhookCA []byte
	// AuditWebhookBatchMaxWait bounds how long the apiserver holds a batch (default 200ms).
	AuditWebhookBatchMaxWait time.Duration
	// AuditLogPath, if set, also writes JSON audit lines to this file.
	AuditLogPath string

	// Address is where kube-apiserver binds and what it advertises; default
	// 127.0.0.1. A bridge address (test/hollow's Network.Gateway) makes it
	// reachable from network namespaces, so that each hollow node calls from
	// its own address. The self-signed serving certificate is then for that
	// address (and not 127.0.0.1): URL and every Config use it.
	Address string

	// ExtraArgs are appended to kube-apiserver's flags (later ones win).
	ExtraArgs []string
	// InstallResponder adds herd's responder service account (identity
	// Responder) and installs the responder as manifests/rbac/responder.yaml
	// and manifests/apf/herd.yaml do, in namespace herd.
	InstallResponder bool
	// Controllers, when not empty, also runs kube-controller-manager with
	// only these controllers (--controllers), as the admin: e.g.
	// garbagecollector, which deletes objects whose owners are gone.
	Controllers []string
	// Dir holds data, certificates and logs; default: a new temp dir, removed by Stop.
	Dir string
	// Log receives progress lines; default: discarded.
	Log io.Writer
}

// ControlPlane is a running etcd + kube-apiserver pair.
type ControlPlane struct {
	// URL is the apiserver's https://ADDRESS:PORT (Options.Address, default 127.0.0.1).
	URL string
	// Dir holds data, certificates and logs.
	Dir string

	opts       Options
	ownDir     bool
	bins       Binaries
	identities map[string]Identity
	apiArgs    []string
	caData     []byte
	// frontProxyCA is the requestheader CA (see frontproxy.go).
	frontProxyCA []byte

	// etcd's addresses and data directory: a restore keeps the addresses
	// (the apiserver's --etcd-servers) and changes the directory.
	etcdClient, etcdPeer, etcdData string
	restores                       int

	mu         sync.Mutex
	etcd       *proc.Process
	apiserver  *proc.Process
	controller *proc.Process
}

// Start builds nothing: it runs the cached binaries (see FindBinaries), waits
// for /readyz and grants the test service accounts the RBAC they need.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	bins, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = []string{"node-1", "node-2", "node-3"}
	}
	if opts.Address != "" && net.ParseIP(opts.Address) == nil {
		return nil, fmt.Errorf("start control plane: Address %q is not an IP address", opts.Address)
	}
	cp = &ControlPlane{opts: opts, bins: bins, Dir: opts.Dir}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "herd-controlplane-"); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
		cp.ownDir = true
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	if err := cp.writeFiles(); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	if err := cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := cp.startAPIServer(ctx); err != nil {
		return nil, err
	}
	if err := cp.grantTestRBAC(ctx); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	if opts.InstallResponder {
		if err := cp.installResponder(ctx); err != nil {
			return nil, err
		}
	}
	if len(opts.Controllers) > 0 {
		if err := cp.startControllerManager(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(opts.Log, "control plane ready at %s (dir %s)\n", cp.URL, cp.Dir)
	return cp, nil
}

func (cp *ControlPlane) writeFiles() error {
	cp.identities = map[string]Identity{
		Admin:         {User: "herd-test-admin", Groups: []string{"system:masters"}},
		KubeProxy:     serviceAccount("kube-system", "kube-proxy"),
		CalicoNode:    serviceAccount("kube-system", "calico-node"),
		Cilium:        serviceAccount("kube-system", "cilium"),
		MetricsServer: serviceAccount("kube-system", "metrics-server"),
		KubeScheduler: {User: "system:kube-scheduler"},
	}
	for _, n := range cp.opts.Nodes {
		cp.identities[KubeletIdentity(n)] = Identity{User: "system:node:" + n, Groups: []string{"system:nodes"}}
	}
	if cp.opts.InstallResponder {
		cp.identities[Responder] = serviceAccount("herd", "herd-responder")
	}
	for name, id := range cp.opts.Identities {
		cp.identities[name] = id
	}
	var tokens strings.Builder
	for _, name := range slices.Sorted(maps.Keys(cp.identities)) {
		id := cp.identities[name]
		id.token = randomToken()
		cp.identities[name] = id
		// token,user,uid,"group1,group2"
		fmt.Fprintf(&tokens, "%s,%s,%s,%q\n", id.token, id.User, "uid-"+name, strings.Join(id.Groups, ","))
	}
	for _, sub := range []string{"certs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(cp.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(cp.path("tokens.csv"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(cp.path("sa.key"), keyPEM, 0o600); err != nil {
		return err
	}
	if err := cp.writeFrontProxyCerts(); err != nil {
		return err
	}
	if cp.opts.AuditWebhookURL != "" || cp.opts.AuditLogPath != "" {
		policy := cp.opts.AuditPolicy
		if policy == "" {
			policy = DefaultAuditPolicy
		}
		if err := os.WriteFile(cp.path("audit-policy.yaml"), []byte(policy), 0o644); err != nil {
			return err
		}
	}
	if cp.opts.AuditWebhookURL != "" {
		if err := os.WriteFile(cp.path("audit-webhook.kubeconfig"), []byte(webhookKubeconfig(cp.opts.AuditWebhookURL, cp.opts.AuditWebhookToken, cp.opts.AuditWebhookCA)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// DefaultAuditPolicy logs every request at Metadata level: what the harness
// uses when a test wants audit events but brings no policy of its own.
const DefaultAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`

func webhookKubeconfig(url, token string, ca []byte) string {
	user := "{}"
	if token != "" {
		user = fmt.Sprintf("{token: %q}", token)
	}
	tls := ""
	switch {
	case len(ca) > 0:
		tls = "\n    certificate-authority-data: " + base64Std(ca)
	case strings.HasPrefix(url, "https://"):
		tls = "\n    insecure-skip-tls-verify: true"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: herd
  cluster:
    server: %q%s
users:
- name: kube-apiserver
  user: %s
contexts:
- name: herd
  context: {cluster: herd, user: kube-apiserver}
current-context: herd
`, url, tls, user)
}

func serviceAccount(ns, name string) Identity {
	return Identity{
		User:   "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
	}
}

func randomToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

func (cp *ControlPlane) path(name string) string { return filepath.Join(cp.Dir, name) }

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	var lastErr error
	cp.etcdData = cp.path("etcd")
	for attempt := 0; attempt < 3; attempt++ {
		clientPort, err := proc.FreePort()
		if err != nil {
			return err
		}
		peerPort, err := proc.FreePort()
		if err != nil {
			return err
		}
		cp.etcdClient = "http://127.0.0.1:" + strconv.Itoa(clientPort)
		cp.etcdPeer = "http://127.0.0.1:" + strconv.Itoa(peerPort)
		if lastErr = cp.runEtcd(ctx); lastErr == nil {
			cp.apiArgs = append(cp.apiArgs, "--etcd-servers="+cp.etcdClient)
			return nil
		}
	}
	return lastErr
}

// etcdName is the single member's name, which a restore must repeat.
const etcdName = "herd-test"

// runEtcd starts etcd on its addresses and data directory and waits until
// it is healthy.
func (cp *ControlPlane) runEtcd(ctx context.Context) error {
	args := []string{
		"--name=" + etcdName,
		"--data-dir=" + cp.etcdData,
		"--listen-client-urls=" + cp.etcdClient,
		"--advertise-client-urls=" + cp.etcdClient,
		"--listen-peer-urls=" + cp.etcdPeer,
		"--initial-advertise-peer-urls=" + cp.etcdPeer,
		"--initial-cluster=" + etcdName + "=" + cp.etcdPeer,
		"--unsafe-no-fsync", // test data; fsync only slows the drills
		"--quota-backend-bytes=" + strconv.Itoa(8<<30),
		"--log-level=warn",
	}
	p, err := proc.Start("etcd", cp.bins.Etcd, args, cp.path("etcd.log"), nil)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = proc.WaitUntil(wctx, p, 100*time.Millisecond, httpOK(http.DefaultClient, cp.etcdClient+"/health", ""))
	cancel()
	if err != nil {
		_, _ = p.Stop(5 * time.Second) // the error says why
		return fmt.Errorf("start etcd: %w\n%s", err, p.Tail(30))
	}
	cp.mu.Lock()
	cp.etcd = p
	cp.mu.Unlock()
	return nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context) error {
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	addr := cp.opts.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	cp.URL = "https://" + net.JoinHostPort(addr, strconv.Itoa(port))
	args := append(cp.apiArgs,
		"--secure-port="+strconv.Itoa(port),
		"--bind-address="+addr,
		"--advertise-address="+addr,
		"--cert-dir="+cp.path("certs"),
		"--token-auth-file="+cp.path("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// No controller-manager runs here to create default service accounts.
		"--disable-admission-plugins=ServiceAccount",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+cp.path("sa.key"),
		"--service-account-signing-key-file="+cp.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		"--profiling=false",
		"--shutdown-delay-duration=0s",
		"--v=1",
	)
	args = append(args, cp.frontProxyArgs()...)
	if cp.opts.AuditWebhookURL != "" || cp.opts.AuditLogPath != "" {
		args = append(args, "--audit-policy-file="+cp.path("audit-policy.yaml"))
	}
	if cp.opts.AuditWebhookURL != "" {
		wait := cp.opts.AuditWebhookBatchMaxWait
		if wait == 0 {
			wait = 200 * time.Millisecond
		}
		args = append(args,
			"--audit-webhook-config-file="+cp.path("audit-webhook.kubeconfig"),
			"--audit-webhook-mode=batch",
			"--audit-webhook-batch-max-wait="+wait.String(),
			"--audit-webhook-initial-backoff=1s",
		)
	}
	if cp.opts.AuditLogPath != "" {
		args = append(args,
			"--audit-log-path="+cp.opts.AuditLogPath,
			"--audit-log-format=json",
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
		)
	}
	cp.apiArgs = append(args, cp.opts.ExtraArgs...)
	return cp.runAPIServer(ctx)
}

func (cp *ControlPlane) runAPIServer(ctx context.Context) error {
	p, err := proc.Start("kube-apiserver", cp.bins.APIServer, cp.apiArgs, cp.path("kube-apiserver.log"), nil)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.apiserver = p
	cp.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// The serving certificate appears in cert-dir a moment after start.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}, Timeout: 5 * time.Second}
	err = proc.WaitUntil(wctx, p, 200*time.Millisecond, httpOK(insecure, cp.URL+"/readyz", cp.identities[Admin].token))
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w\n%s", err, p.Tail(40))
	}
	ca, err := os.ReadFile(cp.path("certs/apiserver.crt"))
	if err != nil {
		return fmt.Errorf("start kube-apiserver: read serving certificate: %w", err)
	}
	cp.caData = ca
	return nil
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port
// and etcd, as a control-plane upgrade or crash would: every client's watch
// breaks and must resume.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context) error {
	if err := cp.stopAPIServer(); err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	if err := cp.rerunAPIServer(ctx); err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	return nil
}

func (cp *ControlPlane) stopAPIServer() error {
	cp.mu.Lock()
	p := cp.apiserver
	cp.mu.Unlock()
	if p == nil {
		return nil
	}
	// An apiserver that outlives SIGKILL holds the port for good.
	_, err := p.Stop(15 * time.Second)
	return err
}

// rerunAPIServer starts kube-apiserver again on its port, retrying while
// the kernel still holds the port of the process just stopped.
func (cp *ControlPlane) rerunAPIServer(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = cp.runAPIServer(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// startControllerManager runs kube-controller-manager with only
// Options.Controllers, as the admin, serving nothing (--secure-port=0):
// what the tests need of it is what its controllers do.
func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	if err := executable(cp.bins.ControllerManager); err != nil {
		return err
	}
	kubeconfig, err := cp.Kubeconfig(Admin)
	if err != nil {
		return err
	}
	p, err := proc.Start("kube-controller-manager", cp.bins.ControllerManager, []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(cp.opts.Controllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--v=1",
	}, cp.path("kube-controller-manager.log"), nil)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.controller = p
	cp.mu.Unlock()
	// It has no endpoint to poll: give it a moment, and fail if it exits.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.Done():
		return fmt.Errorf("start kube-controller-manager: it exited\n%s", p.Tail(30))
	case <-time.After(2 * time.Second):
	}
	return nil
}

// ControllerManagerLog is the path of kube-controller-manager's output.
func (cp *ControlPlane) ControllerManagerLog() string { return cp.path("kube-controller-manager.log") }

// APIServerPid is the running apiserver's process id (for RSS measurements).
func (cp *ControlPlane) APIServerPid() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.apiserver == nil {
		return 0
	}
	return cp.apiserver.Pid()
}

// APIServerLog is the path of kube-apiserver's output.
func (cp *ControlPlane) APIServerLog() string { return cp.path("kube-apiserver.log") }

// Stop ends kube-controller-manager, kube-apiserver, then etcd and removes
// the directory Start created.
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	api, etcd, kcm := cp.apiserver, cp.etcd, cp.controller
	cp.mu.Unlock()
	if kcm != nil {
		_, _ = kcm.Stop(10 * time.Second)
	}
	if api != nil {
		_, _ = api.Stop(10 * time.Second)
	}
	if etcd != nil {
		_, _ = etcd.Stop(10 * time.Second)
	}
	if cp.ownDir && os.Getenv("HERD_KEEP_CONTROLPLANE_DIR") == "" {
		os.RemoveAll(cp.Dir)
	}
}

// Identities lists the identity names Config accepts.
func (cp *ControlPlane) Identities() []string {
	return slices.Sorted(maps.Keys(cp.identities))
}

// User is the username the apiserver sees for an identity name.
func (cp *ControlPlane) User(name string) string { return cp.identities[name].User }

// Config returns a rest.Config that authenticates as the named identity
// (Admin, KubeProxy, KubeletIdentity("node-1"), ...). It panics on an unknown
// name: that is a bug in the test.
func (cp *ControlPlane) Config(name string) *rest.Config {
	id, ok := cp.identities[name]
	if !ok {
		panic(fmt.Sprintf("controlplane: unknown identity %q (have %v)", name, cp.Identities()))
	}
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     id.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.caData},
		QPS:             -1, // tests and drills set their own pace
		Timeout:         60 * time.Second,
	}
}

// Client is a clientset for the named identity.
func (cp *ControlPlane) Client(name string) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(cp.Config(name))
}

// Token is the bearer token of the named identity, for raw HTTP requests.
func (cp *ControlPlane) Token(name string) string { return cp.identities[name].token }

// Kubeconfig writes a kubeconfig for the named identity and returns its path.
func (cp *ControlPlane) Kubeconfig(name string) (string, error) {
	path := cp.path("kubeconfig-" + strings.ReplaceAll(name, ":", "-"))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: herd-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user: {token: %s}
contexts:
- name: herd-test
  context: {cluster: herd-test, user: %s}
current-context: herd-test
`, cp.URL, base64Std(cp.caData), name, cp.identities[name].token, name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig: %w", err)
	}
	return path, nil
}

func httpOK(client *http.Client, url, token string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status + ": " + strings.TrimSpace(string(body)))
		}
		return nil
	}
}
