package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/promstack"
	herdstack "github.com/herd-k8s/herd/test/stack"
)

// The identities herd runs as, as the chart's service accounts.
const (
	exporterID   = "herd"
	responderID  = "herd-responder"
	exporterUser = "system:serviceaccount:herd:herd-exporter"
	// responderUser is the responder's service account.
	responderUser = "system:serviceaccount:herd:herd-responder"
	// jobName is the scrape job the generated mixin rules select (job="herd-exporter").
	jobName = "herd-exporter"
	// token is the bearer token the alert sender presents to the responder.
	token = "responderload-alertmanager-token-0123456789"
)

// stack is everything the run started; stop ends it in reverse order.
type stack struct {
	cfg        Config
	dir        string
	cp         *controlplane.ControlPlane
	admin      kubernetes.Interface
	exporter   *proc.Process
	prometheus *proc.Process
	responder  *proc.Process
	feeder     *feeder

	exporterWeb, exporterAudit string
	promURL, responderURL      string
	promVersion                string

	nodes   []node // every Node; the first cfg.Stale have a stale kubelet
	stopped sync.Once
}

type node struct{ name, ip string }

func (s *stack) stale() []node   { return s.nodes[:s.cfg.Stale] }
func (s *stack) healthy() []node { return s.nodes[s.cfg.Stale:] }

// findBinaries fails early, with how to get them, when a binary is missing.
func findBinaries() (prometheus string, err error) {
	if _, err := controlplane.FindBinaries(); err != nil {
		return "", err // names `make controlplane`
	}
	p, err := promstack.LookPrometheus()
	if err != nil {
		return "", fmt.Errorf("%w; `make deps` installs it", err)
	}
	return p, nil
}

// startStack brings up the control plane with the Nodes, the exporter fed
// with stale kubelets, Prometheus with the mixin's rules, and the
// responder, and waits until Prometheus holds herd:stale_kubelet:max for
// every stale node and the responder leads.
func startStack(ctx context.Context, c Config, herdBin, promBin string, log io.Writer) (s *stack, err error) {
	s = &stack{cfg: c, dir: c.Dir}
	defer func() {
		if err != nil {
			s.stop()
			s = nil
		}
	}()
	for i := 1; i <= c.Nodes; i++ {
		s.nodes = append(s.nodes, node{fmt.Sprintf("node-%d", i), fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)})
	}
	out, _ := exec.CommandContext(ctx, promBin, "--version").CombinedOutput()
	s.promVersion, _, _ = strings.Cut(string(out), "\n")

	fmt.Fprintf(log, "responder-load: control plane (kube-apiserver %s + etcd) ...\n", controlplane.Version)
	s.cp, err = controlplane.Start(ctx, controlplane.Options{
		Identities: map[string]controlplane.Identity{
			exporterID:  {User: exporterUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
			responderID: {User: responderUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
		},
		Log: log,
	})
	if err != nil {
		return s, err
	}
	s.admin = s.cp.Client(controlplane.Admin)
	for _, m := range []string{"manifests/rbac/exporter.yaml", "manifests/rbac/responder.yaml"} {
		if err := herdstack.ApplyManifest(ctx, s.admin, filepath.Join(c.Root, m)); err != nil {
			return s, err
		}
	}
	fmt.Fprintf(log, "responder-load: creating %d Nodes ...\n", len(s.nodes))
	if err := s.createNodes(ctx); err != nil {
		return s, err
	}

	if err := s.startExporter(ctx, herdBin); err != nil {
		return s, err
	}
	s.feeder = newFeeder("http://"+s.exporterAudit+"/audit", s.stale())
	// Enough pod relists for accounting.stalePodRelists at once, then one
	// per node every few seconds so that they stay stale in the window.
	if err := s.feeder.post(ctx, 8); err != nil {
		return s, err
	}
	s.feeder.start(ctx, 5*time.Second)

	if err := s.startPrometheus(ctx, promBin); err != nil {
		return s, err
	}
	fmt.Fprintf(log, "responder-load: waiting for herd:stale_kubelet:max on %d nodes in Prometheus ...\n", c.Stale)
	q, err := evidence.NewPrometheus(s.promURL, 5*time.Second, nil)
	if err != nil {
		return s, err
	}
	if err := waitUntil(ctx, 3*time.Minute, "herd:stale_kubelet:max for every stale node in Prometheus", func() error {
		if err := s.feeder.failed(); err != nil {
			return err
		}
		v, err := q.Query(ctx, "count(herd:stale_kubelet:max == 1)")
		if err != nil {
			return err
		}
		if len(v) != 1 || int(v[0].Value) != c.Stale {
			return fmt.Errorf("count(herd:stale_kubelet:max == 1) = %v, want %d", v, c.Stale)
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("%w\nexporter log:\n%s\nprometheus log:\n%s", err, s.exporter.Tail(10), s.prometheus.Tail(10))
	}

	if err := s.startResponder(ctx, herdBin); err != nil {
		return s, err
	}
	return s, nil
}

// stop ends every process the run started, newest first.
func (s *stack) stop() {
	s.stopped.Do(func() {
		if s.feeder != nil {
			s.feeder.stop()
		}
		for _, p := range []*proc.Process{s.responder, s.prometheus, s.exporter} {
			if p != nil {
				_, _ = p.Stop(10 * time.Second)
			}
		}
		if s.cp != nil {
			s.cp.Stop()
		}
	})
}

// createNodes creates every Node with an InternalIP and a Ready
// condition, as a kubelet registering would.
func (s *stack) createNodes(ctx context.Context) error {
	work := make(chan node)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := createNode(ctx, s.admin, n); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, n := range s.nodes {
		work <- n
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func createNode(ctx context.Context, c kubernetes.Interface, n node) error {
	obj, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.name, Labels: map[string]string{"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", n.name, err)
	}
	now := metav1.Now()
	obj.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}, {Type: corev1.NodeHostName, Address: n.name}}
	obj.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}}
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", n.name, err)
	}
	return nil
}

// startExporter runs `herd exporter` as its service account with a short
// accounting window, and waits for /readyz (informers synced).
func (s *stack) startExporter(ctx context.Context, bin string) error {
	kc, err := s.cp.Kubeconfig(exporterID)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(s.dir, "exporter.yaml")
	cfg := fmt.Sprintf("accounting:\n  window: 1m\n  stalePodRelists: 6\ncluster:\n  maxStaleSeries: %d\n", max(200, s.cfg.Stale))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	return retryPorts(ctx, func(ports []int) (*proc.Process, error) {
		s.exporterWeb, s.exporterAudit = loopback(ports[0]), loopback(ports[1])
		p, err := proc.Start("herd-exporter", bin, []string{"exporter",
			"--kubeconfig=" + kc, "--config=" + cfgPath, "--audit.insecure",
			"--web.listen-address=" + s.exporterWeb, "--audit.listen-address=" + s.exporterAudit,
			"--log.level=warn",
		}, filepath.Join(s.dir, "exporter.log"), nil)
		if err != nil {
			return nil, err
		}
		s.exporter = p
		return p, waitHTTP(ctx, p, "http://"+s.exporterWeb+"/readyz", 60*time.Second)
	}, 2)
}

// startPrometheus runs Prometheus with the mixin's generated recording and
// alerting rules (rules/prometheus_{rules,alerts}.yaml, rate window 5m),
// scraping the exporter as job herd-exporter.
func (s *stack) startPrometheus(ctx context.Context, bin string) error {
	dir := filepath.Join(s.dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var files []string
	for _, f := range []string{"prometheus_rules.yaml", "prometheus_alerts.yaml"} {
		b, err := os.ReadFile(filepath.Join(s.cfg.Root, "rules", f))
		if err != nil {
			return fmt.Errorf("the mixin's rules (run from the repository root, or give -root): %w", err)
		}
		dst := filepath.Join(dir, f)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		files = append(files, dst)
	}
	every := s.cfg.ScrapeInterval.String()
	return retryPorts(ctx, func(ports []int) (*proc.Process, error) {
		addr := loopback(ports[0])
		s.promURL = "http://" + addr
		conf, _ := yaml.Marshal(map[string]any{
			"global":     map[string]string{"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every},
			"rule_files": files,
			"scrape_configs": []any{map[string]any{
				"job_name": jobName, "static_configs": []any{map[string]any{"targets": []string{s.exporterWeb}}},
			}},
		})
		cfgPath := filepath.Join(dir, "prometheus.yml")
		if err := os.WriteFile(cfgPath, conf, 0o644); err != nil {
			return nil, err
		}
		p, err := proc.StartWith("prometheus", bin, []string{
			"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--web.external-url=" + s.promURL,
		}, filepath.Join(dir, "prometheus.log"), proc.Options{Dir: dir})
		if err != nil {
			return nil, err
		}
		s.prometheus = p
		return p, waitHTTP(ctx, p, s.promURL+"/-/ready", 60*time.Second)
	}, 1)
}

// startResponder runs `herd responder` as its service account, acting
// (dryRun: false), one replica, with bearer-token auth and guards that let
// every stale node be cordoned; it waits until the replica leads.
func (s *stack) startResponder(ctx context.Context, bin string) error {
	kc, err := s.cp.Kubeconfig(responderID)
	if err != nil {
		return err
	}
	tokenPath := filepath.Join(s.dir, "token")
	if err := os.WriteFile(tokenPath, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(s.dir, "responder.yaml")
	cfg := fmt.Sprintf(`dryRun: false
prometheus: {url: %q, timeout: 5s, rateWindow: 5m}
guards:
  maxUnschedulableFraction: %g
  maxActionsPerHour: {cordon: 100000}
`, s.promURL, s.cfg.Fraction)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	return retryPorts(ctx, func(ports []int) (*proc.Process, error) {
		addr := loopback(ports[0])
		s.responderURL = "http://" + addr
		p, err := proc.Start("herd-responder", bin, []string{"responder",
			"--web.listen-address=" + addr, "--web.bearer-token-file=" + tokenPath,
			"--config=" + cfgPath, "--kubeconfig=" + kc,
			"--leader-election.namespace=herd", "--leader-election.identity=responderload",
			"--log.level=info",
		}, filepath.Join(s.dir, "responder.log"), nil)
		if err != nil {
			return nil, err
		}
		s.responder = p
		return p, waitHTTP(ctx, p, s.responderURL+"/readyz", 60*time.Second)
	}, 1)
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// retryPorts starts a server on n free loopback ports, once more on other
// ports if it did not come up (another process can take a free port before
// the server binds it).
func retryPorts(ctx context.Context, start func(ports []int) (*proc.Process, error), n int) error {
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		ports := make([]int, n)
		for i := range ports {
			p, err := proc.FreePort()
			if err != nil {
				return err
			}
			ports[i] = p
		}
		p, err := start(ports)
		if err == nil {
			return nil
		}
		if p != nil {
			_, _ = p.Stop(5 * time.Second)
			err = fmt.Errorf("%w\n%s", err, p.Tail(15))
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return last
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, p *proc.Process, url string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return proc.WaitUntil(wctx, p, 100*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
		}
		return nil
	})
}

// waitUntil polls check every 500ms until it returns nil or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %v (last: %w)", what, ctx.Err(), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// feeder posts what the apiserver's audit webhook would send for kubelets
// in a pod relist loop: consistent LISTs of their node's pods, as the
// kubelet's identity from the node's address.
type feeder struct {
	url    string
	nodes  []node
	seq    atomic.Uint64
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func newFeeder(url string, nodes []node) *feeder { return &feeder{url: url, nodes: nodes} }

// post sends perNode LIST events for every node, spread over the last
// perNode seconds, in one EventList.
func (f *feeder) post(ctx context.Context, perNode int) error {
	now := time.Now().UTC()
	var b bytes.Buffer
	b.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[`)
	n := 0
	for i := perNode - 1; i >= 0; i-- {
		ts := now.Add(-time.Duration(i) * time.Second)
		for _, nd := range f.nodes {
			if n > 0 {
				b.WriteByte(',')
			}
			n++
			id := f.seq.Add(1)
			fmt.Fprintf(&b, `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"%08x-0000-4000-8000-%012x","stage":"ResponseComplete",`+
				`"requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%%3D%s","verb":"list",`+
				`"user":{"username":"system:node:%s","groups":["system:nodes","system:authenticated"]},"sourceIPs":[%q],`+
				`"userAgent":"kubelet/%s (linux/amd64) kubernetes/0000000","objectRef":{"resource":"pods","apiVersion":"v1"},`+
				`"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":%q,"stageTimestamp":%q}`,
				uint32(id>>32), id, nd.name, nd.name, nd.ip, controlplane.Version,
				ts.Add(-20*time.Millisecond).Format(time.RFC3339Nano), ts.Format(time.RFC3339Nano))
		}
	}
	b.WriteString("]}")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, &b)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("post audit events: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("post audit events: %s: %s", resp.Status, body)
	}
	if want := fmt.Sprintf(`"accounted":%d,`, n); !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("post audit events: herd answered %s, want %s", bytes.TrimSpace(body), want)
	}
	return nil
}

// start posts one event per node every interval until stop.
func (f *feeder) start(ctx context.Context, every time.Duration) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.done = make(chan struct{})
	go func() {
		defer close(f.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := f.post(ctx, 1); err != nil && ctx.Err() == nil {
				f.mu.Lock()
				f.err = err
				f.mu.Unlock()
			}
		}
	}()
}

func (f *feeder) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *feeder) stop() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
}
