package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	cpfiles "github.com/herd-k8s/herd/manifests/control-plane"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// Drill 003 plays every simulated node's steady state, compressed in time
// as manifests/control-plane/policy_test.go does: each node's kubelet
// renews its Lease and GETs its Node every 10 s and patches its status
// once, and each of the node's 13 reflectors (kubelet 5, kube-proxy 2, a
// CNI agent 6) re-watches once in the mean client-go watch period, 450 s.
const (
	auditDrillNodes    = 5
	auditDrillCompress = 15
	auditDrillReal     = 450 * time.Second
)

// steadyBound reads the documented bound from audit-policy.yaml's header:
// "steady state   13 x 2 / 450 s = 0.058 events/s, 55 B/s per node".
var steadyBound = regexp.MustCompile(`steady state\s+(\d+) x (\d+) / (\d+) s\s+= ([0-9.]+) events/s, ([0-9.]+) B/s per node`)

// logEverythingFactor reads the header's measured ratio: "(4.5x the events,
// 4.1x the bytes)".
var logEverythingFactor = regexp.MustCompile(`\(([0-9.]+)x the events, ([0-9.]+)x the bytes\)`)

// TestDrill003AuditVolume is incident 003: an audit policy that logged
// everything filled the control-plane disk and took etcd down. The drill
// runs the same simulated node load against two real apiservers, one with
// the shipped policy (its webhook feeding a herd exporter, as deployed) and
// one logging everything at Metadata level, and measures the audit log's
// events and bytes per second per node in real time: the shipped policy
// stays within the bound its header documents, logging everything exceeds
// it several times over. (No alert is involved: herd's part in incident 003
// is not to cause it. Its own view of the volume, herd_audit_events_total,
// is checked against the log.)
func TestDrill003AuditVolume(t *testing.T) {
	policy, err := cpfiles.AuditPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := steadyBound.FindStringSubmatch(string(policy))
	f := logEverythingFactor.FindStringSubmatch(string(policy))
	if m == nil || f == nil {
		t.Fatalf("audit-policy.yaml's header no longer states the steady-state bound (%s) or the log-everything factor (%s)", steadyBound, logEverythingFactor)
	}
	boundEvents, _ := strconv.ParseFloat(m[4], 64)
	boundBytes, _ := strconv.ParseFloat(m[5], 64)
	reflectors, _ := strconv.Atoi(m[1])
	t.Logf("documented bound (audit-policy.yaml): %s x %s / %s s = %g events/s and %g B/s per node; log-everything measured at %sx the events, %sx the bytes",
		m[1], m[2], m[3], boundEvents, boundBytes, f[1], f[2])

	var shipped, everything *auditRun
	var se, sb, ee, eb float64 // events/s and bytes/s per node
	ran := herdtest.NewPrereq("both apiservers ran the load", func(t *testing.T) {
		t.Run("runs", func(t *testing.T) {
			t.Run("shipped", func(t *testing.T) {
				t.Parallel()
				shipped = runAuditLoad(t, string(policy), true)
			})
			t.Run("log-everything", func(t *testing.T) {
				t.Parallel()
				everything = runAuditLoad(t, controlplane.DefaultAuditPolicy, false)
			})
		})
		if shipped == nil || everything == nil {
			t.FailNow()
		}
		se, sb = shipped.perNode()
		ee, eb = everything.perNode()
		t.Logf("shipped policy: %d node-side events in the steady state, %.4f events/s and %.1f B/s per node in real time (%.0f bytes per event)", shipped.events, se, sb, sb/se)
		t.Logf("log-everything: %d node-side events in the steady state, %.4f events/s and %.1f B/s per node in real time (%.0f bytes per event)", everything.events, ee, eb, eb/ee)
		t.Logf("log-everything / shipped: %.2fx the events, %.2fx the bytes (audit-policy.yaml quotes %sx and %sx)", ee/se, eb/sb, f[1], f[2])
		t.Logf("log-everything / documented bound: %.2fx the events/s, %.2fx the bytes/s", ee/boundEvents, eb/boundBytes)
	})

	t.Run("every reflector re-watches once in the window", func(t *testing.T) {
		ran.Need(t)
		if shipped.rewatches != auditDrillNodes*reflectors || everything.rewatches != auditDrillNodes*reflectors {
			t.Errorf("re-watches: %d and %d, want %d per run (%d reflectors on %d nodes)", shipped.rewatches, everything.rewatches, auditDrillNodes*reflectors, reflectors, auditDrillNodes)
		}
	})
	t.Run("the shipped policy stays within its documented bound", func(t *testing.T) {
		ran.Need(t)
		// The header quotes two significant digits: compare at that precision.
		if round2(se) > boundEvents || round2(sb) > boundBytes {
			t.Errorf("the shipped policy logs %.4f events/s and %.1f B/s per node; the documented bound is %g events/s and %g B/s", se, sb, boundEvents, boundBytes)
		}
	})
	t.Run("logging everything exceeds the bound several times", func(t *testing.T) {
		ran.Need(t)
		if ee < 2*boundEvents || eb < 2*boundBytes {
			t.Errorf("log-everything logs %.4f events/s and %.1f B/s per node: want at least twice the bound (%g, %g)", ee, eb, boundEvents, boundBytes)
		}
	})
	t.Run("herd accounts every event the shipped policy sends", func(t *testing.T) {
		ran.Need(t)
		if shipped.herdEvents != float64(shipped.allEvents) {
			t.Errorf("herd accounted %v audit events from the webhook; the shipped policy's log holds %d", shipped.herdEvents, shipped.allEvents)
		}
		t.Logf("herd's own view of the shipped policy's volume: %v events, %v bytes over the webhook (%.0f bytes per event in the webhook's EventList JSON)",
			shipped.herdEvents, shipped.herdBytes, shipped.herdBytes/shipped.herdEvents)
	})
}

// round2 rounds to two significant digits.
func round2(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 2, 64), 64)
	return f
}

// auditRun is what one apiserver logged of the load.
type auditRun struct {
	// events and bytes of node-side clients received in the steady window.
	events, bytes int
	window        time.Duration
	rewatches     int
	allEvents     int // every line of the log
	herdEvents    float64
	herdBytes     float64
}

// perNode is events/s and bytes/s per node in real time.
func (r *auditRun) perNode() (events, bytes float64) {
	d := r.window.Seconds() * auditDrillNodes * auditDrillCompress
	return float64(r.events) / d, float64(r.bytes) / d
}

func runAuditLoad(t *testing.T, policy string, webhook bool) *auditRun {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.log")
	var nodes []string
	for i := 1; i <= auditDrillNodes; i++ {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	opts := controlplane.Options{Nodes: nodes, AuditPolicy: policy, AuditLogPath: logPath}
	var herd *stack.InProcessExporter
	var reserved net.Listener
	if webhook {
		var err error
		if reserved, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		opts.AuditWebhookURL = "http://" + reserved.Addr().String() + "/audit"
	}
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		if reserved != nil {
			reserved.Close()
		}
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			cp.Stop()
		}
	}()
	if webhook {
		reserved.Close()
		// Audit alone (--no-kube): the volume is what is measured.
		herd = startExporter(t, config.Default(), exporter.Options{AuditInsecure: true}, reserved.Addr().String())
	}
	admin := cp.Client(controlplane.Admin)
	type node struct {
		name, ip string
		kubelet  kubernetes.Interface
		lease    *coordinationv1.Lease
		watchers []*nodesim.Client
		res      [][]nodesim.Resource
	}
	var ns []*node
	for i, name := range nodes {
		n := &node{name: name, ip: stack.NodeIP(i + 1)}
		if err := herdtest.CreateNode(ctx, admin, herdtest.Node(name, n.ip)); err != nil {
			t.Fatal(err)
		}
		lease, err := admin.CoordinationV1().Leases("kube-node-lease").Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.name, LeaseDurationSeconds: ptr.To(int32(40))},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.lease = lease
		kcfg := nodesim.WithSourceIP(cp.Config(controlplane.KubeletIdentity(name)), n.ip)
		kcfg.UserAgent = nodesim.KubeletUserAgent
		n.kubelet = kubernetes.NewForConfigOrDie(kcfg)
		k := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubelet(cp, name, nodesim.Options{SourceIP: n.ip}) })
		p := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubeProxy(cp, nodesim.Options{SourceIP: n.ip}) })
		c := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewCiliumAgent(cp, nodesim.Options{SourceIP: n.ip}) })
		n.watchers = []*nodesim.Client{k, p, c}
		n.res = [][]nodesim.Resource{nodesim.KubeletResources(name), nodesim.KubeProxyResources(), nodesim.CiliumAgentResources()}
		ns = append(ns, n)
	}
	nodeSide := map[string]bool{cp.User(controlplane.KubeProxy): true, cp.User(controlplane.Cilium): true}

	// The steady state, compressed.
	window := auditDrillReal / auditDrillCompress
	every := 10 * time.Second / auditDrillCompress
	from := time.Now()
	deadline := from.Add(window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	run := &auditRun{}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, n := range ns {
		var rvMu sync.Mutex
		rv := n.lease.ResourceVersion
		wg.Add(2)
		go func() { // heartbeats
			defer wg.Done()
			lease, patched := n.lease.DeepCopy(), false
			tick := time.NewTicker(every)
			defer tick.Stop()
			for now := time.Now(); now.Before(deadline); now = <-tick.C {
				lease.Spec.RenewTime = &metav1.MicroTime{Time: now}
				got, err := n.kubelet.CoordinationV1().Leases("kube-node-lease").Update(ctx, lease, metav1.UpdateOptions{})
				if err != nil {
					fail(fmt.Errorf("%s renews its lease: %w", n.name, err))
					return
				}
				lease = got
				rvMu.Lock()
				rv = got.ResourceVersion
				rvMu.Unlock()
				if _, err := n.kubelet.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{ResourceVersion: "0"}); err != nil {
					fail(fmt.Errorf("%s GETs its node: %w", n.name, err))
					return
				}
				if !patched && now.Sub(from) >= window/2 {
					patched = true
					patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
						now.UTC().Format(time.RFC3339), from.UTC().Format(time.RFC3339))
					if _, err := n.kubelet.CoreV1().Nodes().Patch(ctx, n.name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
						fail(fmt.Errorf("%s patches its status: %w", n.name, err))
						return
					}
				}
			}
		}()
		go func() { // one re-watch per reflector, spread over the window
			defer wg.Done()
			type rewatch struct {
				c *nodesim.Client
				r nodesim.Resource
			}
			var all []rewatch
			for i, c := range n.watchers {
				for _, r := range n.res[i] {
					all = append(all, rewatch{c, r})
				}
			}
			for j, w := range all {
				time.Sleep(time.Until(from.Add(window * time.Duration(2*j+1) / time.Duration(2*len(all)))))
				rvMu.Lock()
				at := rv
				rvMu.Unlock()
				res, err := w.c.Watch(ctx, w.r, at, 0)
				if err == nil && res.Code != 200 {
					err = fmt.Errorf("%s", res)
				}
				if err != nil {
					fail(fmt.Errorf("%s re-watches %s: %w", w.c.User, w.r, err))
					return
				}
				mu.Lock()
				run.rewatches++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	to := time.Now()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	// Stopping the apiserver flushes its audit backends.
	cp.Stop()
	stopped = true
	run.window = to.Sub(from)

	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		run.allEvents++
		var e auditv1.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: %v", logPath, err)
		}
		ts := e.RequestReceivedTimestamp.Time
		u := e.User.Username
		if ts.Before(from) || ts.After(to) || !(nodeSide[u] || strings.HasPrefix(u, "system:node:")) {
			continue
		}
		run.events++
		run.bytes += len(sc.Bytes()) + 1
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if herd != nil {
		s := gather(t, herd.Exporter)
		run.herdEvents = sum(s, "herd_audit_events_total", "source=webhook", "result=accounted")
		run.herdBytes = sum(s, "herd_audit_bytes_total", "source=webhook")
	}
	t.Logf("%d log lines; steady state %v: %d node-side events, %d bytes, %d re-watches", run.allEvents, run.window.Round(100*time.Millisecond), run.events, run.bytes, run.rewatches)
	return run
}
