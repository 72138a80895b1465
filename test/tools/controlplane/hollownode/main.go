// Command hollow-node runs one real node agent of Kubernetes v1.36.3 the way
// kubemark does — the kubelet's code with a fake container runtime, or
// kube-proxy's code with a fake proxier — but configured for herd's tests,
// where several hollow nodes share one machine.
//
// It wraps kubemark's packages rather than its command
// (k8s.io/kubernetes/cmd/kubemark/app): that command hard-codes the kubelet's
// bind address to 0.0.0.0 (pkg/kubemark/hollow_kubelet.go,
// GetHollowKubeletConfig), leaves its state in /tmp/hollow-kubelet.*, always
// calls itself "hollow-kubelet"/"hollow-proxy", and gives its kube-proxy no
// Node informer. Here each of those is a flag:
//
//   - --address, --port, --read-only-port: where the kubelet serves, so hollow
//     nodes on one network namespace do not collide;
//   - --node-ip: the kubelet's --node-ip, so the Node's InternalIP is the
//     address the apiserver sees the node's requests come from;
//   - --root-dir: the kubelet's state directory, owned by the caller;
//   - --user-agent=real|kubemark: "real" sends what the real binaries send
//     (client-go's default user agent of a program named kubelet or
//     kube-proxy), "kubemark" what kubemark's hollow node sends;
//   - --feature-gates: the kube feature gates, e.g. WatchListClient=false for
//     the LIST-mode reflectors of client-go < 1.35. In a Kubernetes binary
//     client-go's gates are wired to this flag, not to KUBE_FEATURE_*
//     environment variables (k8s.io/kubernetes/pkg/features/kube_features.go,
//     init: clientfeatures.ReplaceFeatureGates).
//
// The kube-proxy morph also runs kube-proxy's NodeManager, the informer on its
// own Node (metadata.name=NODE) that the real kube-proxy starts in
// newProxyServer (cmd/kube-proxy/app/server.go) and kubemark leaves out.
package main

import (
	"context"
	goflag "flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace/noop"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientset "k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-base/version"
	remote "k8s.io/cri-client/pkg"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	_ "k8s.io/kubernetes/pkg/features" // registers the kube and client-go feature gates
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	"k8s.io/kubernetes/pkg/kubemark"
	"k8s.io/kubernetes/pkg/proxy"
	kubemarkproxy "k8s.io/kubernetes/pkg/proxy/kubemark"

	_ "k8s.io/component-base/metrics/prometheus/restclient" // client metrics, as kubemark registers them
)

// options are the flags.
type options struct {
	morph        string
	kubeconfig   string
	name         string
	nodeIP       string
	address      string
	port         int
	readOnlyPort int
	rootDir      string
	userAgent    string
	maxPods      int
}

func main() {
	o := options{}
	fs := pflag.NewFlagSet("hollow-node", pflag.ContinueOnError)
	fs.StringVar(&o.morph, "morph", "", "kubelet or proxy")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the agent's identity")
	fs.StringVar(&o.name, "name", "", "node name")
	fs.StringVar(&o.nodeIP, "node-ip", "", "kubelet: the Node's address (the kubelet's --node-ip); must be on a local interface; empty lets the kubelet pick")
	fs.StringVar(&o.address, "address", "127.0.0.1", "kubelet: address the kubelet API binds")
	fs.IntVar(&o.port, "port", 10250, "kubelet: port of the kubelet API")
	fs.IntVar(&o.readOnlyPort, "read-only-port", 0, "kubelet: read-only port (0: off)")
	fs.StringVar(&o.rootDir, "root-dir", "", "kubelet: state directory (required for the kubelet)")
	fs.StringVar(&o.userAgent, "user-agent", "real", "real: the user agent of the real kubelet/kube-proxy; kubemark: hollow-kubelet/hollow-proxy")
	fs.IntVar(&o.maxPods, "max-pods", 110, "kubelet: pods this node accepts")
	utilfeature.DefaultMutableFeatureGate.AddFlag(fs)
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hollow-node:", err)
		os.Exit(2)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "hollow-node:", err)
		os.Exit(2)
	}
	klog.InfoS("hollow-node", "version", version.Get().GitVersion, "morph", o.morph, "node", o.name,
		"WatchListClient", utilfeature.DefaultFeatureGate.Enabled("WatchListClient"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch o.morph {
	case "kubelet":
		err = runKubelet(ctx, o)
	case "proxy":
		err = runProxy(ctx, o)
	}
	if err != nil {
		klog.ErrorS(err, "hollow-node failed", "morph", o.morph, "node", o.name)
		klog.Flush()
		os.Exit(1)
	}
}

func (o *options) validate() error {
	switch {
	case o.morph != "kubelet" && o.morph != "proxy":
		return fmt.Errorf("--morph must be kubelet or proxy, not %q", o.morph)
	case o.kubeconfig == "":
		return fmt.Errorf("--kubeconfig is required")
	case o.name == "":
		return fmt.Errorf("--name is required")
	case o.morph == "kubelet" && o.rootDir == "":
		return fmt.Errorf("--root-dir is required for the kubelet")
	case o.userAgent != "real" && o.userAgent != "kubemark":
		return fmt.Errorf("--user-agent must be real or kubemark, not %q", o.userAgent)
	}
	return nil
}

// clientConfig loads the kubeconfig and sets the user agent. program is the
// real binary's name (kubelet, kube-proxy); kubemarkName what kubemark's hollow
// node calls itself instead (cmd/kubemark/app/hollow_node.go, run).
func (o *options) clientConfig(program, kubemarkName string) (*restclient.Config, error) {
	raw, err := clientcmd.LoadFromFile(o.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", o.kubeconfig, err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", o.kubeconfig, err)
	}
	cfg.UserAgent = kubemarkName
	if o.userAgent == "real" {
		cfg.UserAgent = realUserAgent(program)
	}
	return cfg, nil
}

// realUserAgent is what the real binary sends: neither the kubelet nor
// kube-proxy sets a user agent (cmd/kubelet/app/server.go,
// cmd/kube-proxy/app/server.go createClient), so client-go's default applies,
// "<basename of argv[0]>/<version> (<os>/<arch>) kubernetes/<commit>"
// (k8s.io/client-go/rest/config.go, DefaultKubernetesUserAgent). Only the
// program name differs from this binary's.
func realUserAgent(program string) string {
	ua := restclient.DefaultKubernetesUserAgent()
	if _, rest, ok := strings.Cut(ua, "/"); ok {
		return program + "/" + rest
	}
	return ua
}

func runKubelet(ctx context.Context, o options) error {
	clientConfig, err := o.clientConfig("kubelet", "hollow-kubelet")
	if err != nil {
		return err
	}
	f, c := kubemark.GetHollowKubeletConfig(&kubemark.HollowKubeletOptions{
		NodeName:            o.name,
		KubeletPort:         o.port,
		KubeletReadOnlyPort: o.readOnlyPort,
		MaxPods:             o.maxPods,
		NodeLabels:          map[string]string{},
	})
	// GetHollowKubeletConfig made /tmp/hollow-kubelet.*/{static-pods*,pod-logs*}
	// (k8s.io/kubernetes/test/utils/tmpdir.go MakeTempDirOrDie: "/tmp" when
	// no base is given); the caller owns the state directory instead.
	if filepath.Dir(f.RootDirectory) == "/tmp" && strings.HasPrefix(filepath.Base(f.RootDirectory), "hollow-kubelet.") {
		_ = os.RemoveAll(f.RootDirectory)
	}
	f.RootDirectory = o.rootDir
	c.StaticPodPath = filepath.Join(o.rootDir, "static-pods")
	c.PodLogsDir = filepath.Join(o.rootDir, "pod-logs")
	for _, d := range []string{c.StaticPodPath, c.PodLogsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("kubelet state: %w", err)
		}
	}
	c.Address = o.address
	f.NodeIP = o.nodeIP
	// The real kubelet's client settings (KubeletConfiguration defaults,
	// pkg/kubelet/apis/config/v1beta1/defaults.go; cmd/kubelet/app/server.go
	// buildKubeletClientConfig), not kubemark's 10 QPS.
	clientConfig.ContentType = c.ContentType
	clientConfig.QPS = float32(c.KubeAPIQPS)
	clientConfig.Burst = int(c.KubeAPIBurst)
	client, err := clientset.NewForConfig(clientConfig)
	if err != nil {
		return fmt.Errorf("kubelet client: %w", err)
	}
	// As the real kubelet: heartbeats are not rate limited and time out
	// within a lease or status period.
	hb := *clientConfig
	hb.QPS = -1
	hb.Timeout = min(c.NodeStatusUpdateFrequency.Duration, time.Duration(c.NodeLeaseDurationSeconds)*time.Second)
	heartbeat, err := clientset.NewForConfig(&hb)
	if err != nil {
		return fmt.Errorf("kubelet heartbeat client: %w", err)
	}

	// The fake CRI runtime listens on a unix socket in the state directory
	// (kubemark's fakeremote.GenerateEndpoint picks /tmp/kubelet_remote_*.sock,
	// left behind when the process is killed).
	sock := filepath.Join(o.rootDir, "cri.sock")
	_ = os.Remove(sock)
	endpoint := "unix://" + sock
	runtime := fakeremote.NewFakeRemoteRuntime()
	if err := runtime.Start(endpoint); err != nil {
		return fmt.Errorf("fake runtime: %w", err)
	}
	defer runtime.Stop()
	runtimeService, err := remote.NewRemoteRuntimeService(ctx, endpoint, 15*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return fmt.Errorf("runtime service: %w", err)
	}
	hk := kubemark.NewHollowKubelet(f, c, client, heartbeat,
		&cadvisortest.Fake{NodeName: o.name},
		runtime.ImageService, // never a host containerd
		runtimeService,
		cm.NewStubContainerManager(),
	)
	go hk.Run(ctx) // blocks for good, exits the process on error
	<-ctx.Done()
	return nil
}

func runProxy(ctx context.Context, o options) error {
	clientConfig, err := o.clientConfig("kube-proxy", "hollow-proxy")
	if err != nil {
		return err
	}
	// kube-proxy's ClientConnection defaults
	// (pkg/proxy/apis/config/v1alpha1/defaults.go).
	clientConfig.ContentType = "application/vnd.kubernetes.protobuf"
	clientConfig.QPS = 5
	clientConfig.Burst = 10
	client, err := clientset.NewForConfig(clientConfig)
	if err != nil {
		return fmt.Errorf("kube-proxy client: %w", err)
	}
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	recorder := broadcaster.NewRecorder(legacyscheme.Scheme, "kube-proxy")
	hp := kubemarkproxy.NewHollowProxy(o.name, client, client.CoreV1(), broadcaster, recorder)
	nm, err := proxy.NewNodeManager(ctx, client, hp.ProxyServer.Config.ConfigSyncPeriod.Duration, o.name, false)
	if err != nil {
		return fmt.Errorf("kube-proxy node manager: %w", err)
	}
	hp.ProxyServer.NodeManager = nm
	hp.ProxyServer.NodeName = o.name
	errc := make(chan error, 1)
	go func() { errc <- hp.Run() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}
