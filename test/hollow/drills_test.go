package hollow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	nodev1 "k8s.io/api/node/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/exporter/cluster"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hollow"
)

// The scenarios below take minutes and twenty hollow nodes: they are drills
// (`make drill-agents`, figures in docs/performance.md), not part of `make
// test`, which runs TestRealAgents.

// drillEnv turns the drills on.
const drillEnv = "HERD_AGENT_DRILLS"

func needDrill(t *testing.T) {
	t.Helper()
	if os.Getenv(drillEnv) == "" {
		t.Skipf("a drill of several minutes with %d hollow nodes: run `make drill-agents` (%s=1)", drillNodes(), drillEnv)
	}
}

// drillNodes is how many hollow nodes a drill runs: HERD_AGENT_NODES, 20 by
// default (the CI machine holds 50: docs/performance.md).
func drillNodes() int {
	if n, err := strconv.Atoi(os.Getenv("HERD_AGENT_NODES")); err == nil && n >= 2 {
		return n
	}
	return 20
}

// TestEtcdRestore is incident 000 on real agents: etcd restored from a
// snapshot while half the kubelets and kube-proxies relist in LIST mode
// (client-go < 1.35) and half by WatchList (1.35+).
//
//   - bumped: restored with `etcdutl snapshot restore --bump-revision
//     --mark-compacted` (the documented way): the revision moves forward,
//     every watch from an old resourceVersion gets 410 Gone and relists once.
//     Nothing is too large, nothing stale, no rewind.
//   - not bumped: the revision goes back, as in incident 000. Every agent
//     re-watches from a resourceVersion the cluster does not have: LIST-mode
//     relists get 504s, WatchLists and re-watches 200 and nothing. herd names
//     every affected kubelet of both kinds stale (too large by status or by
//     revision, checked against the audit log and the test's own revision
//     reads), reports the rewind (HerdClusterRevisionRewound), and its own
//     view — which went blind like everyone's — recovers: every Node, every
//     Lease fresh, within a minute.
func TestEtcdRestore(t *testing.T) {
	needDrill(t)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := drillNodes()
	a := startRealAgents(ctx, t, agentsOptions{
		nodes: n, listMode: func(i int) bool { return i%2 == 0 }, podsPerNode: 1,
		window: 5 * time.Minute, dryRun: true,
	})
	t.Logf("stack and %d hollow nodes up, pods Running after %v", n, time.Since(began).Round(time.Second))
	dir := t.TempDir()

	t.Run("bumped", func(t *testing.T) {
		before := a.view(t)
		snapshot, snapRev := a.snapshotThenHistory(ctx, t, filepath.Join(dir, "bumped.db"), nil)
		const bump = 1_000_000_000
		restoredAt := a.restore(ctx, t, snapshot, bump, uint64(snapRev)+bump)
		if err := herdtest.Poll(ctx, 2*time.Minute, "every agent to call again", func(context.Context) error {
			return a.calledSince(restoredAt.Add(time.Second))
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second) // the agents' relists, herd's reads, a scrape or two
		after, _ := a.compare(t, "after the bumped restore")
		for k, v := range after.series {
			if strings.HasPrefix(k, "herd_too_large_resource_version_total{") && v > before.series[k] {
				t.Errorf("after a bumped restore: %s went from %g to %g", k, before.series[k], v)
			}
		}
		if len(after.stale) > 0 {
			t.Errorf("stale kubelets after a bumped restore: %v", after.stale)
		}
		if r, _ := a.metric("herd_cluster_revision_rewinds_total"); r != 0 {
			t.Errorf("herd saw %g rewinds after a bumped restore", r)
		}
		a.checkViewRight(ctx, t, restoredAt, time.Minute)
		if al, err := a.s.Alert(ctx, "HerdClusterRevisionRewound", nil); err != nil || al != nil {
			t.Errorf("HerdClusterRevisionRewound after a bumped restore: %+v (%v)", al, err)
		}
	})

	t.Run("not bumped", func(t *testing.T) {
		// In the history the restore loses, one Node is deleted under its
		// running kubelet (a ghost); the restore brings it back. A blind
		// view would keep it missing and its kubelet a ghost.
		victim := a.names[len(a.names)-1]
		snapshot, snapRev := a.snapshotThenHistory(ctx, t, filepath.Join(dir, "rewound.db"), func() {
			if err := a.s.Admin.CoreV1().Nodes().Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := herdtest.Poll(ctx, 30*time.Second, "herd to see the Node deleted", func(context.Context) error {
				if n, err := a.metric("herd_cluster_nodes"); err != nil || int(n) != len(a.names)-1 {
					return fmt.Errorf("herd_cluster_nodes = %g (%v)", n, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
		restoredAt := a.restore(ctx, t, snapshot, 0, uint64(snapRev))
		// herd reads the revision, sees it went back, and starts over.
		if err := herdtest.Poll(ctx, time.Minute, "herd to report the rewind", func(context.Context) error {
			if r, err := a.metric("herd_cluster_revision_rewinds_total"); err != nil || r != 1 {
				return fmt.Errorf("herd_cluster_revision_rewinds_total = %g (%v)", r, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		lost, _ := a.metric("herd_cluster_revision_last_rewind_revisions")
		t.Logf("herd reported the rewind %v after the restore: %g revisions lost", time.Since(restoredAt).Round(100*time.Millisecond), lost)
		a.checkViewRight(ctx, t, restoredAt, time.Minute)
		if err := herdtest.Poll(ctx, time.Minute, "HerdClusterRevisionRewound", func(ctx context.Context) error {
			al, err := a.s.Alert(ctx, "HerdClusterRevisionRewound", nil)
			if err != nil || al == nil || al.State != "firing" {
				return fmt.Errorf("not firing (%v)", err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}

		// Every kubelet the audit log and the revision reads prove affected
		// (at least staleTooLarge requests above the revision) is named
		// stale, of both kinds; none that could not be is.
		var v herdViewWithBounds
		err := herdtest.Poll(ctx, 3*time.Minute, "herd to name every affected kubelet", func(context.Context) error {
			v = a.staleBounds(t)
			if len(v.missing) > 0 {
				return fmt.Errorf("affected but not stale: %v", v.missing)
			}
			return nil
		})
		a.compare(t, "after the restore")
		if err != nil {
			t.Error(err)
		}
		for _, node := range v.unexpected {
			t.Errorf("kubelet on %s stale, but the audit log allows at most %d too-large requests", node, v.possible[node])
		}
		kinds := map[bool]int{}
		for _, node := range a.nodes.Nodes {
			if v.view.stale[node.Name] == "too_large_resource_version" {
				kinds[node.ListMode]++
			}
		}
		t.Logf("stale kubelets (too_large_resource_version): %d LIST-mode, %d WatchList, of %d each; certain/possible per node: %v / %v",
			kinds[true], kinds[false], n/2, v.certain, v.possible)
		if kinds[true] == 0 || kinds[false] == 0 {
			t.Errorf("herd named %d LIST-mode and %d WatchList kubelets stale: want both kinds", kinds[true], kinds[false])
		}
		for _, c := range v.view.clients {
			if c.Cluster != nil && c.Cluster.Ghost {
				t.Errorf("%s %s on %s is called a ghost after the restore (%s)", c.Role, c.Identity, c.Node, c.Cluster.GhostReason)
			}
		}
	})
}

// snapshotThenHistory saves etcd's state, then writes history the restore
// will lose: thousands of revisions, what more does, then a change to every
// object the agents watch, so that every agent's reflectors hold
// resourceVersions from that history.
func (a *realAgents) snapshotThenHistory(ctx context.Context, t *testing.T, path string, more func()) (string, int64) {
	t.Helper()
	rev, err := a.s.CP.SaveEtcdSnapshot(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	filler := a.s.Admin.CoreV1().ConfigMaps(metav1.NamespaceDefault)
	name := "history-" + strconv.FormatInt(rev, 10)
	if _, err := filler.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const writes = 3000
	err = herdtest.Parallel(ctx, writes, 8, func(ctx context.Context, i int) error {
		patch := fmt.Sprintf(`{"data":{"k%d":"%d"}}`, i%50, i)
		_, err := filler.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if more != nil {
		more()
	}
	a.touchWatched(ctx, t, rev)
	time.Sleep(3 * time.Second) // the watch events reach the agents
	now, _ := a.revs.Read(ctx, a.s.Admin)
	t.Logf("snapshot at revision %d; the cluster is at %d when it is restored", rev, now)
	return path, rev
}

// touchWatched changes an object of every kind the agents watch: their
// pods, ConfigMaps and Secrets, their Nodes, and a Service, an
// EndpointSlice, a CSIDriver and a RuntimeClass.
func (a *realAgents) touchWatched(ctx context.Context, t *testing.T, tag int64) {
	t.Helper()
	c := a.s.Admin
	label := []byte(fmt.Sprintf(`{"metadata":{"labels":{"herd.dev/touched":"%d"}}}`, tag))
	pods, err := c.CoreV1().Pods(podsNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		for _, patch := range []func() error{
			func() error {
				_, err := c.CoreV1().Pods(podsNS).Patch(ctx, p.Name, types.MergePatchType, label, metav1.PatchOptions{})
				return err
			},
			func() error {
				_, err := c.CoreV1().ConfigMaps(podsNS).Patch(ctx, p.Name, types.MergePatchType, label, metav1.PatchOptions{})
				return err
			},
			func() error {
				_, err := c.CoreV1().Secrets(podsNS).Patch(ctx, p.Name, types.MergePatchType, label, metav1.PatchOptions{})
				return err
			},
		} {
			if err := patch(); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	for _, n := range a.names {
		if _, err := c.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, label, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("touched-%d", tag)
	meta := metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault}
	if _, err := c.CoreV1().Services(metav1.NamespaceDefault).Create(ctx, &corev1.Service{ObjectMeta: meta,
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.10"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StorageV1().CSIDrivers().Create(ctx, &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: name + ".csi.herd.dev"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: "runc"}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// restore restores etcd from snapshot (bumped by bump) and records it for
// the revision bounds; it returns when the apiserver serves again.
func (a *realAgents) restore(ctx context.Context, t *testing.T, snapshot string, bump, restoredRev uint64) time.Time {
	t.Helper()
	begin := time.Now()
	if err := a.s.CP.RestoreEtcd(ctx, snapshot, controlplane.RestoreOptions{BumpRevision: bump}); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	a.revs.Restored(begin, end, restoredRev)
	now, _ := a.revs.Read(ctx, a.s.Admin)
	t.Logf("etcd restored (bump %d) in %v: the cluster is at revision %d", bump, end.Sub(begin).Round(100*time.Millisecond), now)
	return end
}

// checkViewRight waits until herd's cluster view has every Node and a
// fresh Lease for each, and fails if that takes longer than within.
func (a *realAgents) checkViewRight(ctx context.Context, t *testing.T, since time.Time, within time.Duration) {
	t.Helper()
	err := herdtest.Poll(ctx, within+30*time.Second, "herd's view: every Node, every Lease fresh", func(context.Context) error {
		if n, err := a.metric("herd_cluster_nodes"); err != nil || int(n) != len(a.names) {
			return fmt.Errorf("herd_cluster_nodes = %g, want %d (%v)", n, len(a.names), err)
		}
		page, err := getDebugClients(a.ex)
		if err != nil {
			return err
		}
		// Renewed after the restore: herd sees the renewals that happened
		// since, not what it last saw before.
		fresh := map[string]bool{}
		for _, c := range page.Clients {
			if c.Role == "kubelet" && c.Cluster != nil && c.Cluster.NodeExists != nil && *c.Cluster.NodeExists &&
				c.Cluster.LeaseAge < min(time.Since(since), cluster.DefaultLeaseFresh).Seconds() {
				fresh[c.Node] = true
			}
		}
		for _, name := range a.names {
			if !fresh[name] {
				return fmt.Errorf("herd has seen no renewal of %s's Lease since the restore", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(since)
	t.Logf("herd's view right again %v after the restore: %d Nodes, every Lease renewed since", took.Round(100*time.Millisecond), len(a.names))
	if took > within {
		t.Errorf("herd's view took %v to be right again, want within %v", took.Round(time.Second), within)
	}
}

// herdViewWithBounds is herd's stale verdicts next to what the audit log
// and the revision reads allow.
type herdViewWithBounds struct {
	view herdView
	// certain and possible are, per node, the kubelet's too-large
	// requests by status plus those certainly / possibly above the revision.
	certain, possible map[string]int
	// missing are nodes whose kubelet is certainly affected and not stale;
	// unexpected those stale that cannot be.
	missing, unexpected []string
}

func (a *realAgents) staleBounds(t *testing.T) herdViewWithBounds {
	t.Helper()
	v, fut := a.compare(t, "the kubelets' verdicts")
	out := herdViewWithBounds{view: v, certain: map[string]int{}, possible: map[string]int{}}
	status := fut.StatusByIdentity
	threshold := 3 // accounting.staleTooLarge's default
	for _, name := range a.names {
		id := "system:node:" + name
		b := fut.ByIdentity[id]
		out.certain[name] = status[id] + b.Definite
		out.possible[name] = status[id] + b.Possible
		stale := v.stale[name] == "too_large_resource_version"
		switch {
		case out.certain[name] >= threshold && !stale:
			out.missing = append(out.missing, name)
		case out.possible[name] < threshold && stale:
			out.unexpected = append(out.unexpected, name)
		}
	}
	return out
}

// TestPodChurn: twenty real kubelets in steady state while pods come and go
// every couple of seconds, each mounting a ConfigMap and a Secret of its
// own, so that every kubelet keeps starting and stopping per-object
// reflectors (a LIST or WatchList of one object each) — a deploy wave that
// never ends. No HerdRelistStorm, no HerdSynchronizedRelist, no
// HerdStaleKubelet, and the responder (acting) does nothing; yet the
// per-object relists alone would meet the storm alert's thresholds, which
// is what shapes are for.
//
// The demo's mixin windows (a 20 s rate window, 10 s `for`): they see
// every burst the shipped 5m/15m windows smooth away, with the same
// thresholds, so quiet here means quiet with the shipped rules. Twenty
// kubelets and kube-proxies starting together are a synchronized relist,
// rightly: HerdSynchronizedRelist fires for it, held for syncRelistHold
// (10m shipped, 20s here), and the churn starts once it has resolved.
func TestPodChurn(t *testing.T) {
	needDrill(t)
	began := time.Now()
	duration := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("HERD_CHURN_DURATION")); err == nil && d > 0 {
		duration = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
	defer cancel()
	n := drillNodes()
	a := startRealAgents(ctx, t, agentsOptions{nodes: n, listMode: func(i int) bool { return i%2 == 0 }, window: time.Minute,
		mixin: map[string]any{"syncRelistHold": "20s"}})
	t.Logf("stack and %d hollow nodes up after %v", n, time.Since(began).Round(time.Second))
	// The start-up's relists leave the two-minute window of
	// herd:instances_relisted:increase2m, and what they fired resolves.
	up := time.Now()
	var startup []string
	if err := herdtest.Poll(ctx, 5*time.Minute, "the start-up's synchronized relist to resolve", func(ctx context.Context) error {
		if f := a.firingActionAlerts(ctx, t); len(f) > 0 {
			startup = f
			return fmt.Errorf("firing: %v", f)
		}
		if time.Since(up) < 2*time.Minute {
			return errors.New("the start-up's relists are in the two-minute window")
		}
		if v, err := a.s.QueryValue(ctx, `max(max_over_time(herd:instances_relisted:increase2m[30s]))`); err != nil || v >= 10 {
			return fmt.Errorf("herd:instances_relisted:increase2m = %g (%v)", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("quiet %v after the start (the start-up fired: %v); churn begins", time.Since(began).Round(time.Second), startup)
	admin := a.s.Admin
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podsNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	// Every 2 s, n/10 new pods (3 a minute per kubelet), each deleted 20 s
	// after it was created, with its ConfigMap and Secret.
	const every, lifetime = 2 * time.Second, 20 * time.Second
	perTick := max(1, n/10)
	type born struct {
		name string
		at   time.Time
	}
	var alive []born
	created, deleted := 0, 0
	var peakObject, peakRate float64
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		for range perTick {
			name := fmt.Sprintf("churn-%d", created)
			if err := createChurnPod(ctx, admin, name, a.names[created%n]); err != nil {
				t.Fatal(err)
			}
			created++
			alive = append(alive, born{name, time.Now()})
		}
		for len(alive) > 0 && time.Since(alive[0].at) > lifetime {
			if err := deleteChurnPod(ctx, admin, alive[0].name); err != nil {
				t.Fatal(err)
			}
			alive = alive[1:]
			deleted++
		}
		if created%(perTick*5) == 0 {
			if v, err := a.metric("herd_relisting_instances", "client", "kubelet", "resource", "configmaps", "shape", "object"); err == nil {
				peakObject = max(peakObject, v)
			}
			if v, err := a.s.QueryValue(ctx, `sum(rate(herd_relists_total{client="kubelet",resource="configmaps"}[20s]))`); err == nil && v > peakRate {
				peakRate = v
			}
			if f := a.firingActionAlerts(ctx, t); len(f) > 0 {
				t.Errorf("alerts firing during the churn: %v", f)
			}
		}
		if err := a.nodes.Crashed(); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	t.Logf("churn: %d pods created, %d deleted in %v (%d every %v, each for %v, each with a ConfigMap and a Secret)",
		created, deleted, duration, perTick, every, lifetime)
	t.Logf("peak: %g kubelets relisting configmaps by object (≥ %d in the window; the storm alert's instance threshold is 10), "+
		"%.2f kubelet configmap relists/s (its rate floor is 0.5/s): shape object, left out of the storm rules",
		peakObject, accountingRelistThreshold, peakRate)
	v, _ := a.compare(t, "after the churn")
	if len(v.stale) > 0 {
		t.Errorf("stale kubelets after the churn: %v", v.stale)
	}
	a.checkQuiet(ctx, t)
}

// accountingRelistThreshold is accounting.relistThreshold's default: what
// herd_relisting_instances counts.
const accountingRelistThreshold = 3

// firingActionAlerts are herd's alerts that act or flag an agent, firing
// now.
func (a *realAgents) firingActionAlerts(ctx context.Context, t *testing.T) []string {
	t.Helper()
	firing, err := a.alertsFiring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range firing {
		for _, name := range actionAlerts {
			if strings.Contains(f, `alertname="`+name+`"`) {
				out = append(out, f)
			}
		}
	}
	return out
}

// createChurnPod binds a pod to node with a ConfigMap and a Secret volume of
// its own.
func createChurnPod(ctx context.Context, c kubernetes.Interface, name, node string) error {
	meta := metav1.ObjectMeta{Name: name, Namespace: podsNS, Labels: map[string]string{"app.kubernetes.io/part-of": "herd-churn"}}
	if _, err := c.CoreV1().ConfigMaps(podsNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"config": name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := c.CoreV1().Secrets(podsNS).Create(ctx, &corev1.Secret{ObjectMeta: meta, StringData: map[string]string{"token": name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := c.CoreV1().Pods(podsNS).Create(ctx, &corev1.Pod{
		ObjectMeta: meta,
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: hollow.PauseImage, VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/config"}, {Name: "secret", MountPath: "/secret"}}}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}},
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}},
			},
		},
	}, metav1.CreateOptions{})
	return err
}

// deleteChurnPod deletes a pod (gracefully: its kubelet stops it and
// confirms) and its ConfigMap and Secret.
func deleteChurnPod(ctx context.Context, c kubernetes.Interface, name string) error {
	for _, del := range []func() error{
		func() error { return c.CoreV1().Pods(podsNS).Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error { return c.CoreV1().ConfigMaps(podsNS).Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error { return c.CoreV1().Secrets(podsNS).Delete(ctx, name, metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}
