package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/prometheus/alertmanager/template"

	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
	"github.com/herd-k8s/herd/test/promstack"
)

// Stats are the percentiles of a set of durations.
type Stats struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func stats(d []time.Duration) Stats {
	if len(d) == 0 {
		return Stats{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p int) time.Duration { return s[min(len(s)-1, (len(s)*p+99)/100-1)] } // nearest rank
	return Stats{N: len(s), P50: at(50), P90: at(90), P99: at(99), Max: s[len(s)-1]}
}

// alert is one HerdStaleKubelet alert, as Alertmanager would send it.
type alert struct {
	Node        string
	Labels      map[string]string
	Fingerprint string
	StartsAt    time.Time
}

func newAlert(node string, startsAt time.Time) alert {
	l := map[string]string{"alertname": "HerdStaleKubelet", "node": node, "reason": "relist_loop", "severity": "warning", "job": jobName}
	return alert{Node: node, Labels: l, Fingerprint: promstack.Fingerprint(l), StartsAt: startsAt}
}

// payload is an Alertmanager webhook message (version 4) for alerts, all
// of one status, as one aggregation group (group_by: [alertname]) sends.
func payload(status string, alerts []alert, endsAt time.Time) []byte {
	as := make([]template.Alert, 0, len(alerts))
	for _, a := range alerts {
		x := template.Alert{Labels: a.Labels, StartsAt: a.StartsAt, Fingerprint: a.Fingerprint,
			Annotations: template.KV{
				"summary":     "The kubelet on " + a.Node + " relists its pods in a loop.",
				"description": "herd saw the kubelet on " + a.Node + " relist its pods at least accounting.stalePodRelists times in its window.",
				"runbook_url": "https://github.com/herd-k8s/herd/blob/main/docs/runbooks.md#herdstalekubelet",
			},
			GeneratorURL: "http://prometheus.test/graph?g0.expr=herd%3Astale_kubelet%3Amax+%3D%3D+1"}
		if status == "resolved" {
			x.EndsAt = endsAt
		}
		as = append(as, x)
	}
	b, _ := json.Marshal(promstack.Notification(status, as...))
	return b
}

// Phase is one kind of delivery: its alerts, how they were sent, and what
// the responder did.
type Phase struct {
	Name    string         `json:"name"`
	Status  string         `json:"status"`
	Alerts  int            `json:"alerts"`
	Group   int            `json:"alertsPerPost"`
	Senders int            `json:"concurrentPosts"`
	Repeat  int            `json:"copiesPerPayload"`
	Posts   int            `json:"posts"`
	Codes   map[int]int    `json:"codes"`
	Results map[string]int `json:"results"` // decisions recorded during the phase, by result
	Missing int            `json:"missingDecisions"`
	Wall    time.Duration  `json:"wall"`
	PerSec  float64        `json:"deliveriesPerSecond"`
	// ActionsPerSec is decisions per second from the first action's start
	// to the last one's end.
	ActionsPerSec float64 `json:"actionsPerSecond"`
	FirstErr      string  `json:"firstError,omitempty"`
	// Latency is POST to 200 for every delivery of an alert: each alert of
	// a payload gets its POST's time.
	Latency Stats `json:"latency"`
	// Done is from the POST to the end of this alert's action
	// (decision time + durationMs): what "alert to action" means for an
	// alert that is not first in its payload.
	Done Stats `json:"done"`
	// Action is /debug/actions' durationMs: the action's own time.
	Action       Stats         `json:"action"`
	ResponderCPU time.Duration `json:"responderCPU"`
	APIServerCPU time.Duration `json:"apiserverCPU"`
	PromCPU      time.Duration `json:"prometheusCPU"`
}

type delivery struct {
	start, end time.Time
	code       int
	err        string
}

// deliver sends alerts grouped `group` per POST from `senders` concurrent
// senders; each payload is sent `repeat` times at once (an HA pair, a
// retry racing the original). It returns the phase with latencies and the
// decisions the responder recorded for these alerts since the phase began.
func (s *stack) deliver(ctx context.Context, client *http.Client, name, status string, alerts []alert, group, senders, repeat int) (*Phase, error) {
	ph := &Phase{Name: name, Status: status, Alerts: len(alerts), Group: group, Senders: senders, Repeat: repeat,
		Codes: map[int]int{}, Results: map[string]int{}}
	var bodies [][]byte
	var members [][]alert
	endsAt := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < len(alerts); i += group {
		g := alerts[i:min(i+group, len(alerts))]
		bodies = append(bodies, payload(status, g, endsAt))
		members = append(members, g)
	}
	out := make([][]delivery, len(bodies))
	cpu0 := s.cpu()
	begin := time.Now()
	err := herdtest.Parallel(ctx, len(bodies), senders, func(ctx context.Context, i int) error {
		ds := make([]delivery, repeat)
		var rw sync.WaitGroup
		for r := range ds {
			rw.Go(func() { ds[r] = s.postAlerts(ctx, client, bodies[i]) })
		}
		rw.Wait()
		out[i] = ds
		return nil
	})
	if err != nil {
		return nil, err
	}
	cpu1 := s.cpu()
	ph.ResponderCPU, ph.APIServerCPU, ph.PromCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2]

	var lat []time.Duration
	first := map[string]time.Time{} // fingerprint → when its first POST began
	last := begin
	for i, ds := range out {
		for _, d := range ds {
			ph.Posts++
			ph.Codes[d.code]++
			if d.err != "" && ph.FirstErr == "" {
				ph.FirstErr = d.err
			}
			if d.end.After(last) {
				last = d.end
			}
			for _, a := range members[i] {
				lat = append(lat, d.end.Sub(d.start))
				if t, ok := first[a.Fingerprint]; !ok || d.start.Before(t) {
					first[a.Fingerprint] = d.start
				}
			}
		}
	}
	ph.Wall = last.Sub(begin)
	ph.PerSec = float64(len(lat)) / ph.Wall.Seconds()
	ph.Latency = stats(lat)

	decs, err := s.responder.Decisions(ctx)
	if err != nil {
		return nil, err
	}
	var acted, done []time.Duration
	seen := map[string]bool{}
	for _, d := range decs {
		t0, ok := first[d.Fingerprint]
		if !ok || d.Status != status || d.Time.Before(begin) {
			continue
		}
		ph.Results[string(d.Result)]++
		if d.Error != "" && ph.FirstErr == "" {
			ph.FirstErr = d.Target + ": " + d.Error
		}
		dur := time.Duration(d.DurationMS * float64(time.Millisecond))
		acted = append(acted, dur)
		done = append(done, d.Time.Add(dur).Sub(t0))
		seen[d.Fingerprint] = true
	}
	ph.Missing = len(first) - len(seen)
	if len(acted) > 1 {
		// Actions finished per second, from the first action's start to
		// the last one's end: the responder's own pace.
		var from, to time.Time
		for _, d := range decs {
			if _, ok := first[d.Fingerprint]; !ok || d.Status != status || d.Time.Before(begin) {
				continue
			}
			end := d.Time.Add(time.Duration(d.DurationMS * float64(time.Millisecond)))
			if from.IsZero() || d.Time.Before(from) {
				from = d.Time
			}
			if end.After(to) {
				to = end
			}
		}
		ph.ActionsPerSec = float64(len(acted)) / to.Sub(from).Seconds()
	}
	ph.Action, ph.Done = stats(acted), stats(done)
	return ph, nil
}

func (s *stack) postAlerts(ctx context.Context, client *http.Client, body []byte) delivery {
	d := delivery{start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.responder.URL+"/alerts", bytes.NewReader(body))
	if err != nil {
		d.end, d.err = time.Now(), err.Error()
		return d
	}
	req.Header.Set("Authorization", "Bearer "+s.responder.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Alertmanager/0.25.0")
	resp, err := client.Do(req)
	if err != nil {
		d.end, d.err = time.Now(), err.Error()
		return d
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d.end, d.code = time.Now(), resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		d.err = fmt.Sprintf("%s: %.300s", resp.Status, bytes.TrimSpace(b))
	} else if !bytes.Contains(b, []byte(`"failed":0`)) {
		d.err = fmt.Sprintf("200 with failures: %.300s", bytes.TrimSpace(b))
	}
	return d
}

// cpu is the CPU time used so far by the responder, kube-apiserver and
// Prometheus.
func (s *stack) cpu() [3]time.Duration {
	return [3]time.Duration{hostinfo.ProcCPU(s.responder.Proc.Pid()), hostinfo.ProcCPU(s.CP.APIServerPid()), hostinfo.ProcCPU(s.Prom.Process().Pid())}
}

// herdCordoned lists the nodes that are unschedulable with herd's
// cordoned-by annotation, and all unschedulable nodes.
func (s *stack) herdCordoned(ctx context.Context) (herd, all int, err error) {
	l, err := s.Admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, err
	}
	for _, n := range l.Items {
		if n.Spec.Unschedulable {
			all++
			if n.Annotations["herd.dev/cordoned-by"] != "" {
				herd++
			}
		}
	}
	return herd, all, nil
}

// Baseline is one reference measurement of the same run.
type Baseline struct {
	Name    string        `json:"name"`
	Workers int           `json:"workers"`
	Latency Stats         `json:"latency"`
	Wall    time.Duration `json:"wall"`
	PerSec  float64       `json:"perSecond"`
}

// nodeBaseline does n GET + PATCH pairs on the given nodes with an admin
// client without client-side rate limits, from `workers` goroutines. Each
// pair cordons a node or uncordons it (whichever it is not), with a JSON
// merge patch, or with a server-side apply as herd writes (field manager
// of its own, Force, resourceVersion precondition). Every node is visited
// an even number of times, so all end schedulable.
func nodeBaseline(ctx context.Context, c kubernetes.Interface, name string, nodes []node, n, workers int, apply bool) (Baseline, error) {
	b := Baseline{Name: name, Workers: workers}
	half := max(1, min(len(nodes), n/2))
	lat := make([]time.Duration, n)
	start := time.Now()
	err := herdtest.Parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		t0 := time.Now()
		err := toggleCordon(ctx, c, nodes[i%half].name, apply)
		lat[i] = time.Since(t0)
		return err
	})
	b.Wall = time.Since(start)
	if err != nil {
		return b, err
	}
	b.Latency, b.PerSec = stats(lat), float64(n)/b.Wall.Seconds()
	return b, nil
}

func toggleCordon(ctx context.Context, c kubernetes.Interface, name string, apply bool) error {
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", name, err)
	}
	cordon := !n.Spec.Unschedulable
	if apply {
		obj := map[string]any{"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{"name": name, "resourceVersion": n.ResourceVersion}}
		if cordon {
			obj["spec"] = map[string]any{"unschedulable": true}
		}
		body, _ := json.Marshal(obj)
		_, err = c.CoreV1().Nodes().Patch(ctx, name, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "responderload", Force: ptr.To(true)})
	} else {
		body := []byte(`{"spec":{"unschedulable":null}}`)
		if cordon {
			body = []byte(`{"spec":{"unschedulable":true}}`)
		}
		_, err = c.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{})
	}
	if err != nil {
		return fmt.Errorf("patch node %s: %w", name, err)
	}
	return nil
}

// uncordonAll makes every node schedulable again (after the baselines).
func uncordonAll(ctx context.Context, c kubernetes.Interface, nodes []node) error {
	for _, nd := range nodes {
		n, err := c.CoreV1().Nodes().Get(ctx, nd.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Spec.Unschedulable {
			if err := toggleCordon(ctx, c, nd.name, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// queryBaseline runs the cordon's evidence query (evidence.StaleKubelet)
// n times in a row, through the same client code the responder uses.
func queryBaseline(ctx context.Context, promURL string, nodes []node, n int) (Baseline, error) {
	b := Baseline{Name: "Prometheus instant query " + evidence.StaleKubelet("node-N", ""), Workers: 1}
	q, err := evidence.NewPrometheus(promURL, 5*time.Second, nil)
	if err != nil {
		return b, err
	}
	lat := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		v, err := q.Query(ctx, evidence.StaleKubelet(nodes[i%len(nodes)].name, ""))
		lat[i] = time.Since(t0)
		if err != nil {
			return b, err
		}
		if len(v) != 1 || v[0].Value != 1 {
			return b, fmt.Errorf("%s = %v, want 1", evidence.StaleKubelet(nodes[i%len(nodes)].name, ""), v)
		}
	}
	b.Wall = time.Since(start)
	b.Latency, b.PerSec = stats(lat), float64(n)/b.Wall.Seconds()
	return b, nil
}

// responderMetric is Responder.Metric, -1 when it cannot be read.
func (s *stack) responderMetric(ctx context.Context, name string, match ...string) float64 {
	v, err := s.responder.Metric(ctx, name, match...)
	if err != nil {
		return -1
	}
	return v
}
