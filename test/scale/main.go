// Command scale measures the exporter's cluster view at size (issue 4, SPEC
// §7): it starts the real control plane, creates N realistic Nodes (50
// images, full status, managedFields written by the apiserver) and their
// Leases, runs the real herd binary against it, and reports the exporter's RSS
// and heap, its /metrics scrape time and series count, and the apiserver's
// RSS, as a markdown table for docs/performance.md.
//
//	go run ./test/scale -nodes 5000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
	"github.com/herd-k8s/herd/test/proc"
)

func main() { os.Exit(run()) }

func run() int {
	nodes := flag.Int("nodes", 5000, "Nodes (and Leases) to create")
	workers := flag.Int("workers", 16, "concurrent creators")
	herdBin := flag.String("herd", "", "herd binary (default: go build into a temp dir)")
	flag.Parse()
	if err := measure(*nodes, *workers, *herdBin); err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		return 1
	}
	return 0
}

func measure(n, workers int, herdBin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "herd-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if herdBin == "" {
		if herdBin, err = herdtest.BuildHerd(ctx, dir); err != nil {
			return err
		}
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Identities: map[string]controlplane.Identity{"herd": {User: "system:serviceaccount:herd:herd-exporter", Groups: []string{"system:masters"}}},
		Log:        os.Stderr,
	})
	if err != nil {
		return err
	}
	defer cp.Stop()
	admin := cp.Client(controlplane.Admin)
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-node-lease"}}, metav1.CreateOptions{}); err != nil {
		fmt.Fprintf(os.Stderr, "namespace kube-node-lease: %v (continuing)\n", err)
	}

	start := time.Now()
	if err := createNodes(ctx, admin, n, workers); err != nil {
		return err
	}
	created := time.Since(start)
	apiRSSBefore := rssOf(cp.APIServerPid())
	fmt.Fprintf(os.Stderr, "created %d Nodes and Leases in %v\n", n, created.Round(time.Second))

	kubeconfig, err := cp.Kubeconfig("herd")
	if err != nil {
		return err
	}
	webPort, _ := proc.FreePort()
	auditPort, _ := proc.FreePort()
	web := "127.0.0.1:" + strconv.Itoa(webPort)
	p, err := proc.Start("herd", herdBin, []string{"exporter", "--kubeconfig=" + kubeconfig, "--audit.insecure",
		"--web.listen-address=" + web, "--audit.listen-address=127.0.0.1:" + strconv.Itoa(auditPort)},
		filepath.Join(dir, "herd.log"), nil)
	if err != nil {
		return err
	}
	defer p.Stop(10 * time.Second)
	syncStart := time.Now()
	for {
		if v, err := metric(web, "herd_cluster_nodes"); err == nil && int(v) == n {
			break
		}
		if ok, _ := p.Exited(); ok || time.Since(syncStart) > 5*time.Minute {
			return fmt.Errorf("herd never saw %d nodes:\n%s", n, p.Tail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	synced := time.Since(syncStart)
	syncedRSS := rssOf(p.Pid())
	if err := postInstances(ctx, "http://127.0.0.1:"+strconv.Itoa(auditPort)+"/audit", n); err != nil {
		return err
	}
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if v, err := metric(web, "herd_instances"); err == nil && int(v) == 3*n {
			break
		}
		if time.Since(start) > time.Minute {
			v, _ := metric(web, "herd_instances")
			return fmt.Errorf("herd_instances = %v, want %d", v, 3*n)
		}
	}
	time.Sleep(5 * time.Second) // let the first GC cycles settle
	// Median of 7 scrapes; the machine may be shared.
	var scrapes []time.Duration
	var body string
	for i := 0; i < 7; i++ {
		scrapeStart := time.Now()
		if body, err = get("http://" + web + "/metrics"); err != nil {
			return err
		}
		scrapes = append(scrapes, time.Since(scrapeStart))
	}
	sort.Slice(scrapes, func(i, j int) bool { return scrapes[i] < scrapes[j] })
	scrape := scrapes[len(scrapes)/2]
	var perCollector []string
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "herd_scrape_collector_duration_seconds{collector=\""); ok {
			name, val, _ := strings.Cut(rest, "\"} ")
			v, _ := strconv.ParseFloat(val, 64)
			perCollector = append(perCollector, fmt.Sprintf("%s %.1f ms", name, v*1000))
		}
	}
	series := 0
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series++
		}
	}
	heap, _ := metric(web, "go_memstats_heap_inuse_bytes")
	herdRSS := rssOf(p.Pid())

	fmt.Printf("| figure | value |\n|---|---|\n")
	fmt.Printf("| Nodes (50 images, full status) + Leases in the real apiserver | %d |\n", n)
	fmt.Printf("| herd exporter RSS, Nodes synced | %.1f MiB |\n", float64(syncedRSS)/(1<<20))
	fmt.Printf("| herd exporter RSS, Nodes synced + %d instances (kubelet, kube-proxy, cilium per node, attributed by source IP) | %.1f MiB |\n", 3*n, float64(herdRSS)/(1<<20))
	fmt.Printf("| herd exporter Go heap in use, same | %.1f MiB |\n", heap/(1<<20))
	fmt.Printf("| time from herd start to %d Nodes cached | %v |\n", n, synced.Round(100*time.Millisecond))
	fmt.Printf("| /metrics scrape, median of 7 (min %v, max %v) | %v, %d series |\n", scrapes[0].Round(time.Millisecond), scrapes[6].Round(time.Millisecond), scrape.Round(time.Millisecond), series)
	fmt.Printf("| collectors in the last scrape | %s |\n", strings.Join(perCollector, ", "))
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("| load average during the run | %s |\n", strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("| kube-apiserver RSS holding them | %.0f MiB |\n", float64(apiRSSBefore)/(1<<20))
	fmt.Printf("| machine | %d cores, %s, %s |\n", runtime.NumCPU(), hostinfo.CPUModel(), runtime.Version())
	return nil
}

// postInstances sends one LIST event for each of 3n instances: every node's
// kubelet (by identity), kube-proxy and cilium-agent (by source IP).
func postInstances(ctx context.Context, url string, n int) error {
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	var batch []string
	send := func() error {
		body := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + strings.Join(batch, ",") + `]}`
		if _, err := herdtest.PostAudit(ctx, url, []byte(body)); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	id := 0
	add := func(user, ua, ip, uri, resource string) error {
		id++
		batch = append(batch, fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"00000000-0000-0000-0000-%012d","stage":"ResponseComplete","requestURI":%q,"verb":"list","user":{"username":%q},"sourceIPs":[%q],"userAgent":%q,"objectRef":{"resource":%q,"apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"stageTimestamp":%q}`,
			id, uri, user, ip, ua, resource, ts))
		if len(batch) == 400 {
			return send()
		}
		return nil
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("ip-10-%d-%d-%d.ec2.internal", i/62500, i/250%250, i%250)
		ip := fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)
		if err := add("system:node:"+name, "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", ip, "/api/v1/pods?fieldSelector=spec.nodeName%3D"+name+"&resourceVersion=0", "pods"); err != nil {
			return err
		}
		if err := add("system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3 (linux/amd64) kubernetes/abc", ip, "/api/v1/services?resourceVersion=0", "services"); err != nil {
			return err
		}
		if err := add("system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.0", ip, "/api/v1/pods?resourceVersion=0", "pods"); err != nil {
			return err
		}
	}
	if len(batch) > 0 {
		return send()
	}
	return nil
}

// createNodes creates n Nodes as kubelets would (then their status) and a Lease each.
func createNodes(ctx context.Context, c kubernetes.Interface, n, workers int) error {
	return herdtest.Parallel(ctx, n, workers, func(ctx context.Context, i int) error { return createNode(ctx, c, i) })
}

func createNode(ctx context.Context, c kubernetes.Interface, i int) error {
	name := fmt.Sprintf("ip-10-%d-%d-%d.ec2.internal", i/62500, i/250%250, i%250)
	ip := fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)
	node := herdtest.Node(name, ip)
	maps.Copy(node.Labels, map[string]string{
		"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/zone": "us-east-1a",
		"topology.kubernetes.io/region": "us-east-1", "eks.amazonaws.com/nodegroup": "general-purpose",
	})
	node.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
	node.Spec = corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", i%250), ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalDNS, Address: name}},
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("7910m"), corev1.ResourceMemory: resource.MustParse("31Gi"), corev1.ResourcePods: resource.MustParse("110")},
		NodeInfo:    corev1.NodeSystemInfo{KernelVersion: "6.1.112-122.189.amzn2023.x86_64", OSImage: "Amazon Linux 2023", ContainerRuntimeVersion: "containerd://1.7.22", KubeletVersion: "v1.36.3"},
	}
	for _, t := range []corev1.NodeConditionType{"MemoryPressure", "DiskPressure", "PIDPressure", corev1.NodeReady} {
		st := corev1.ConditionFalse
		if t == corev1.NodeReady {
			st = corev1.ConditionTrue
		}
		node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{Type: t, Status: st, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now})
	}
	for j := 0; j < 50; j++ {
		node.Status.Images = append(node.Status.Images, corev1.ContainerImage{
			Names: []string{fmt.Sprintf("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/service-%d@sha256:%064d", j, j),
				fmt.Sprintf("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/service-%d:v1.%d.0", j, j)},
			SizeBytes: int64(50_000_000 + j),
		})
	}
	if err := herdtest.CreateNode(ctx, c, node); err != nil {
		return err
	}
	holder, secs := name, int32(40)
	_, err := c.CoordinationV1().Leases("kube-node-lease").Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("lease %s: %w", name, err)
	}
	return nil
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metric reads one unlabelled sample from herd's /metrics.
func metric(addr, name string) (float64, error) {
	body, err := get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("%s not found", name)
}

// rssOf is a process's resident set size in bytes (0 when unknown).
func rssOf(pid int) int64 {
	n, _ := hostinfo.RSS(pid)
	return n
}
