package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/proc"
)

// responderUser is the responder's service account, as the chart runs it.
const responderUser = "system:serviceaccount:herd:herd-responder"

var (
	herdBinOnce sync.Once
	herdBinPath string
	herdBinErr  error
	herdBinDir  string
)

// TestMain removes the herd binary the responder tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if herdBinDir != "" {
		os.RemoveAll(herdBinDir)
	}
	os.Exit(code)
}

// herdBinary builds cmd/herd once per test binary: the responder runs as
// separate processes, so that a test can kill the leader.
func herdBinary(t *testing.T) string {
	t.Helper()
	herdBinOnce.Do(func() {
		herdBinDir, herdBinErr = os.MkdirTemp("", "herd-e2e-bin-")
		if herdBinErr != nil {
			return
		}
		herdBinPath = filepath.Join(herdBinDir, "herd")
		out, err := exec.Command("go", "build", "-o", herdBinPath, "github.com/herd-k8s/herd/cmd/herd").CombinedOutput()
		if err != nil {
			herdBinErr = fmt.Errorf("go build cmd/herd: %v\n%s", err, out)
		}
	})
	if herdBinErr != nil {
		t.Fatal(herdBinErr)
	}
	return herdBinPath
}

// responderProc is one `herd responder` process.
type responderProc struct {
	Name  string
	URL   string
	Token string
	p     *proc.Process
}

type responderSetup struct {
	Config        string // YAML
	LeaseDuration time.Duration
}

// startResponder runs `herd responder` as the responder's service account
// with bearer-token auth, a short Lease and a fast sweep.
func startResponder(t *testing.T, cp *controlplane.ControlPlane, dir, name string, s responderSetup) *responderProc {
	t.Helper()
	bin := herdBinary(t)
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	kc, err := cp.Kubeconfig("herd-responder")
	if err != nil {
		t.Fatal(err)
	}
	token := "alertmanager-token-0123456789"
	write(t, filepath.Join(dir, "token"), token+"\n")
	cfgPath := filepath.Join(dir, name+".yaml")
	write(t, cfgPath, s.Config)
	lease := s.LeaseDuration
	if lease == 0 {
		lease = 4 * time.Second
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"responder",
		"--web.listen-address=" + addr,
		"--web.bearer-token-file=" + filepath.Join(dir, "token"),
		"--config=" + cfgPath,
		"--kubeconfig=" + kc,
		"--leader-election.namespace=herd",
		"--leader-election.identity=" + name,
		"--leader-election.lease-duration=" + lease.String(),
		"--leader-election.renew-deadline=" + (lease * 3 / 4).String(),
		"--leader-election.retry-period=500ms",
		"--sweep-interval=1s",
		"--log.level=debug",
	}
	p, err := proc.Start("herd-responder-"+name, bin, args, filepath.Join(dir, name+".log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &responderProc{Name: name, URL: "http://" + addr, Token: token, p: p}
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("responder %s log tail:\n%s", name, p.Tail(60))
		}
	})
	waitFor(t, 20*time.Second, "responder "+name+" to listen", func() bool {
		resp, err := http.Get(r.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return r
}

// ready reports whether the replica says it leads (/readyz 200).
func (r *responderProc) ready() bool {
	resp, err := http.Get(r.URL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// postAs posts body to url's /alerts with a bearer token ("" for none).
func postAs(t *testing.T, url, token string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/alerts", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s/alerts: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// post sends an Alertmanager payload to /alerts and returns the status.
func (r *responderProc) post(t *testing.T, body []byte) int {
	req, err := http.NewRequest(http.MethodPost, r.URL+"/alerts", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+r.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// responderDecision is /debug/actions' view of a decision.
type responderDecision struct {
	Time        time.Time         `json:"time"`
	Action      string            `json:"action"`
	Alert       string            `json:"alert"`
	Status      string            `json:"status"`
	Fingerprint string            `json:"fingerprint"`
	Target      string            `json:"target"`
	Result      string            `json:"result"`
	Guard       string            `json:"guard"`
	Reason      string            `json:"reason"`
	Labels      map[string]string `json:"labels"`
	DryRun      bool              `json:"dryRun"`
	Error       string            `json:"error"`
}

func (r *responderProc) decisions(t *testing.T) []responderDecision {
	t.Helper()
	resp, err := http.Get(r.URL + "/debug/actions")
	if err != nil {
		t.Logf("GET %s/debug/actions: %v", r.URL, err)
		return nil
	}
	defer resp.Body.Close()
	var page struct {
		Decisions []responderDecision `json:"decisions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Errorf("decode /debug/actions: %v", err)
	}
	return page.Decisions
}

// metric sums the samples of one metric in the replica's exposition whose
// labels contain every pair in match ("k=v").
func (r *responderProc) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Errorf("GET %s/metrics: %v", r.URL, err)
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			k, v, _ := strings.Cut(m, "=")
			ok = ok && strings.Contains(line, k+`="`+v+`"`)
		}
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += f
		}
	}
	return sum
}

func matching(ds []responderDecision, pred func(responderDecision) bool) []responderDecision {
	var out []responderDecision
	for _, d := range ds {
		if pred(d) {
			out = append(out, d)
		}
	}
	return out
}

// leaderService stands in for a Kubernetes Service in front of the
// responder replicas: it forwards to a replica whose readiness probe
// (/readyz) passes, as kube-proxy forwards only to ready endpoints. It
// records the status of every delivery it forwarded, and can hold
// deliveries back (503) to stage a scenario.
type leaderService struct {
	*httptest.Server
	mu       sync.Mutex
	replicas []*responderProc
	paused   bool
	codes    []int
}

func newLeaderService(t *testing.T) *leaderService {
	s := &leaderService{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *leaderService) set(rs ...*responderProc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas = rs
}

func (s *leaderService) pause(p bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = p
}

// codesSince returns the codes of deliveries after the first n.
func (s *leaderService) codesSince(n int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.codes) {
		return nil
	}
	return append([]int(nil), s.codes[n:]...)
}

func (s *leaderService) delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.codes)
}

func (s *leaderService) serve(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	paused, replicas := s.paused, s.replicas
	s.mu.Unlock()
	if paused {
		http.Error(w, "held back by the test", http.StatusServiceUnavailable)
		return
	}
	for _, r := range replicas {
		if !r.ready() {
			continue
		}
		u, _ := url.Parse(r.URL)
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(rec, req)
		s.mu.Lock()
		s.codes = append(s.codes, rec.code)
		s.mu.Unlock()
		return
	}
	http.Error(w, "no ready endpoint", http.StatusServiceUnavailable)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// auditRecord is what the responder tests read of an audit log line.
type auditRecord struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		APIGroup  string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// writesBy returns the mutating requests (create, update, patch, delete)
// that user made, at ResponseComplete, from the apiserver's audit log.
func writesBy(t *testing.T, logPath, user string) []auditRecord {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var e auditRecord
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Stage != "ResponseComplete" || e.User.Username != user {
			continue
		}
		switch e.Verb {
		case "create", "update", "patch", "delete", "deletecollection":
			out = append(out, e)
		}
	}
	return out
}

func (e auditRecord) String() string {
	code := 0
	if e.ResponseStatus != nil {
		code = e.ResponseStatus.Code
	}
	return fmt.Sprintf("%s %s -> %d", e.Verb, e.RequestURI, code)
}

// dryRun reports whether the request asked for a server-side dry run.
func (e auditRecord) dryRun() bool { return strings.Contains(e.RequestURI, "dryRun=All") }

// bookkeeping reports whether the write is the responder's own
// bookkeeping (its leader Lease, Events) rather than an action.
func (e auditRecord) bookkeeping() bool {
	return e.ObjectRef != nil && (e.ObjectRef.Resource == "events" || e.ObjectRef.Resource == "leases")
}

func (e auditRecord) on(resource, name string) bool {
	return e.ObjectRef != nil && e.ObjectRef.Resource == resource && e.ObjectRef.Name == name
}

// alertPayload builds an Alertmanager webhook message (version 4) with
// fixed fingerprints, as Alertmanager would send it.
func alertPayload(status string, startsAt time.Time, alerts ...map[string]string) []byte {
	type alert struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	}
	msg := map[string]any{
		"version": "4", "groupKey": `{}:{alertname="test"}`, "status": status, "receiver": "herd",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager.test", "truncatedAlerts": 0,
	}
	var as []alert
	for _, l := range alerts {
		keys := make([]string, 0, len(l))
		for k, v := range l {
			keys = append(keys, k+"="+v)
		}
		fp := fmt.Sprintf("%016x", fnv64(strings.Join(sortedStrings(keys), ",")))
		as = append(as, alert{Status: status, Labels: l, Annotations: map[string]string{}, StartsAt: startsAt, Fingerprint: fp})
	}
	msg["alerts"] = as
	b, _ := json.Marshal(msg)
	return b
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func sortedStrings(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// waitCtx is waitFor with a context deadline for long scenario steps.
func waitCtx(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
