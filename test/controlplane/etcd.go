package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/herd-k8s/herd/test/proc"
)

// What an etcd restore does to a cluster is incident 000's cause: restored
// from a snapshot without --bump-revision, etcd's revision — every object's
// resourceVersion — goes back, and every client that remembers a newer one
// asks for a revision the cluster does not have. SaveEtcdSnapshot and
// RestoreEtcd do what an operator does, with etcd's own code: the client's
// snapshot (what `etcdctl snapshot save` runs) and `etcdutl snapshot
// restore`, built from Go modules by `make controlplane`.

// EtcdutlBinary is etcdutl's file name in BinDir.
const EtcdutlBinary = "etcdutl"

// FindEtcdutl locates the etcdutl `make controlplane` builds; the error
// says how to build it.
func FindEtcdutl() (string, error) {
	p := filepath.Join(BinDir(), EtcdutlBinary)
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return p, fmt.Errorf("%w: %s is missing; run `make controlplane` to build etcdutl from Go modules into %s (under a minute)",
			proc.ErrMissingBinary, p, BinDir())
	}
	return p, nil
}

func (cp *ControlPlane) etcdClientConfig() clientv3.Config {
	return clientv3.Config{Endpoints: []string{cp.etcdClient}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
}

// EtcdRevision is etcd's current revision: the cluster's newest
// resourceVersion.
func (cp *ControlPlane) EtcdRevision(ctx context.Context) (int64, error) {
	c, err := clientv3.New(cp.etcdClientConfig())
	if err != nil {
		return 0, fmt.Errorf("etcd revision: %w", err)
	}
	defer c.Close()
	resp, err := c.Get(ctx, "/", clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("etcd revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// SaveEtcdSnapshot saves etcd's current data to path, as `etcdctl snapshot
// save` does, and returns the revision the snapshot holds (`etcdutl
// snapshot status`).
func (cp *ControlPlane) SaveEtcdSnapshot(ctx context.Context, path string) (int64, error) {
	etcdutl, err := FindEtcdutl()
	if err != nil {
		return 0, err
	}
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cp.etcdClientConfig(), path); err != nil {
		return 0, fmt.Errorf("etcd snapshot save: %w", err)
	}
	out, err := exec.CommandContext(ctx, etcdutl, "snapshot", "status", path, "--write-out=json").Output()
	if err != nil {
		return 0, fmt.Errorf("etcd snapshot status: %w", err)
	}
	var status struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(out, &status); err != nil || status.Revision == 0 {
		return 0, fmt.Errorf("etcd snapshot status: no revision in %q (%v)", out, err)
	}
	return status.Revision, nil
}

// RestoreOptions say how RestoreEtcd restores.
type RestoreOptions struct {
	// BumpRevision, when > 0, is etcdutl's --bump-revision, with
	// --mark-compacted: the documented restore. The revision then moves
	// forward past every resourceVersion a client may hold, and watches
	// from older ones get 410 Gone and relist. 0 restores as incident 000
	// did: the revision goes back to the snapshot's.
	BumpRevision uint64
}

// RestoreEtcd puts the cluster back to snapshot as an operator restoring
// etcd does: kube-apiserver and etcd stop, `etcdutl snapshot restore`
// writes a new data directory, etcd starts on it at the same addresses,
// then kube-apiserver (same port, same certificates). Every client's
// connection breaks.
func (cp *ControlPlane) RestoreEtcd(ctx context.Context, snapshotPath string, o RestoreOptions) error {
	etcdutl, err := FindEtcdutl()
	if err != nil {
		return err
	}
	if err := cp.stopAPIServer(); err != nil {
		return fmt.Errorf("etcd restore: stop kube-apiserver: %w", err)
	}
	cp.mu.Lock()
	etcd := cp.etcd
	cp.mu.Unlock()
	if etcd != nil {
		if _, err := etcd.Stop(10 * time.Second); err != nil {
			return fmt.Errorf("etcd restore: stop etcd: %w", err)
		}
	}
	cp.restores++
	dir := cp.path("etcd-restored-" + strconv.Itoa(cp.restores))
	args := []string{"snapshot", "restore", snapshotPath, "--data-dir=" + dir, "--name=" + etcdName,
		"--initial-cluster=" + etcdName + "=" + cp.etcdPeer, "--initial-advertise-peer-urls=" + cp.etcdPeer}
	if o.BumpRevision > 0 {
		args = append(args, "--bump-revision="+strconv.FormatUint(o.BumpRevision, 10), "--mark-compacted")
	}
	cmd := exec.CommandContext(ctx, etcdutl, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("etcd restore: etcdutl %v: %w\n%s", args, err, out)
	}
	cp.etcdData = dir
	if err := cp.runEtcd(ctx); err != nil {
		return fmt.Errorf("etcd restore: %w", err)
	}
	if err := cp.rerunAPIServer(ctx); err != nil {
		return fmt.Errorf("etcd restore: start kube-apiserver: %w", err)
	}
	return nil
}
