package audit

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/valyala/fastjson"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "public", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ts(s string) int64 {
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return tm.UnixNano()
}

// readLines decodes a log file the way the file tailer does: LineReader
// plus DecodeLine.
func readLines(t *testing.T, r io.Reader) []rec {
	t.Helper()
	var d Decoder
	var out []rec
	lr := NewLineReader(r, 0)
	for {
		line, err := lr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if err := d.DecodeLine(line, func(ev *Event) { out = append(out, own(ev)) }); err != nil {
			t.Fatalf("line %d: %v", lr.Line(), err)
		}
	}
}

func TestPublicFixtures(t *testing.T) {
	t.Run("AKS: records wrapper and unwrapped lines agree", func(t *testing.T) {
		var d Decoder
		wrapped, res, err := collect(&d, readFixture(t, "02_sysdiglabs-aks_samples-event.json"))
		if err != nil || res.Events != 22 || res.Malformed+res.Oversized+res.Skipped != 0 {
			t.Fatalf("records: %+v, %v", res, err)
		}
		lines := readFixture(t, "02b_sysdiglabs-aks_unwrapped.jsonl")
		auto, res, err := collect(&d, lines)
		if err != nil || res.Events != 22 {
			t.Fatalf("jsonl: %+v, %v", res, err)
		}
		var nd []rec
		if res, err := d.DecodeNDJSON(lines, func(ev *Event) { nd = append(nd, own(ev)) }); err != nil || res.Events != 22 {
			t.Fatalf("ndjson: %+v, %v", res, err)
		}
		tailed := readLines(t, bytes.NewReader(lines))
		for name, got := range map[string][]rec{"jsonl": auto, "ndjson": nd, "tailed": tailed} {
			if !reflect.DeepEqual(got, wrapped) {
				t.Errorf("%s differs from the records wrapper", name)
			}
		}
		byID := map[string]rec{}
		for _, r := range wrapped {
			byID[r.AuditID] = r
		}
		want := map[string]rec{
			// The kubelet (shared nodeclient identity on AKS 1.15) watching its Node.
			"a3910698-fb1b-460d-a021-a6f28ac6e8ea": {AuditID: "a3910698-fb1b-460d-a021-a6f28ac6e8ea", Verb: "watch", User: "nodeclient",
				UserAgent: "kubelet/v1.15.10 (linux/amd64) kubernetes/059c666", SourceIP: "52.141.212.165", Resource: "nodes",
				Name: "aks-agentpool-35488936-vmss000001", Stage: StageResponseComplete, Code: 200, TS: ts("2020-05-05T16:16:38.201916Z"),
				RV: "43936", FieldSelectorNode: "aks-agentpool-35488936-vmss000001", SourceIPTail: "52.141.212.165", RequestReceived: ts("2020-05-05T15:45:26.352397Z")},
			// A metadata.name selector on a ConfigMap names no node: it is the object's name.
			"3a1ffe7b-88a5-4046-a864-d3f5d912c8c8": {AuditID: "3a1ffe7b-88a5-4046-a864-d3f5d912c8c8", Verb: "watch", User: "nodeclient",
				UserAgent: "kubelet/v1.15.10 (linux/amd64) kubernetes/059c666", SourceIP: "52.141.212.165", Resource: "configmaps",
				Namespace: "kube-system", Name: "container-azm-ms-agentconfig", Stage: StageResponseComplete, Code: 200,
				TS: ts("2020-05-05T16:16:38.103267Z"), RV: "750", FieldSelectorName: "container-azm-ms-agentconfig",
				SourceIPTail: "52.141.212.165", RequestReceived: ts("2020-05-05T16:11:29.102666Z")},
			"c8a9b881-23a1-464b-8c82-dae1981b34c1": {AuditID: "c8a9b881-23a1-464b-8c82-dae1981b34c1", Verb: "create", User: "aksService",
				UserAgent: "kubectl/v1.13.2 (linux/amd64) kubernetes/cff46ab", SourceIP: "172.31.9.219", Resource: "configmaps",
				Namespace: "kube-system", Name: "coredns-custom", Stage: StageResponseComplete, Code: 409, TS: ts("2020-05-05T16:16:37.705304Z"),
				SourceIPTail: "172.31.9.219", RequestReceived: ts("2020-05-05T16:16:37.699072Z")},
			"4b163f71-240c-47af-9838-cb30201e7733": {AuditID: "4b163f71-240c-47af-9838-cb30201e7733", Verb: "get", User: "aksService",
				UserAgent: "kubectl/v1.13.2 (linux/amd64) kubernetes/cff46ab", SourceIP: "172.31.9.219",
				Stage: StageResponseComplete, Code: 304, TS: ts("2020-05-05T16:16:37.997782Z"),
				SourceIPTail: "172.31.9.219", RequestReceived: ts("2020-05-05T16:16:37.997717Z")},
		}
		for id, w := range want {
			if got := byID[id]; !reflect.DeepEqual(got, w) {
				t.Errorf("%s\n got %+v\nwant %+v", id, got, w)
			}
		}
	})

	t.Run("apisnoop: v1beta1 with stack-trace user agents", func(t *testing.T) {
		var d Decoder
		got, res, err := collect(&d, readFixture(t, "03_apisnoop_example-user-agent.log"))
		if err != nil || res.Events != 8 || len(got) != 8 {
			t.Fatalf("%+v, %v", res, err)
		}
		g := got[2]
		if g.AuditID != "f0d52beb-f9f3-426f-aa44-f9d854e9a546" || g.User != "kubecfg" || g.Verb != "list" ||
			g.Resource != "pods" || g.Namespace != "default" || g.Limit != 500 || g.SourceIP != "147.75.76.213" ||
			len(g.UserAgent) != 2208 || !strings.HasPrefix(g.UserAgent, "kubectl/v1.12.0 (linux/amd64) kubernetes/b143093 stacktrace=[") ||
			g.TS != ts("2018-06-19T03:15:27.5091Z") || g.Code != 200 {
			t.Errorf("event 2: %+v", g)
		}
		if g := got[7]; g.APIGroup != "extensions" || g.Resource != "deployments" {
			t.Errorf("event 7: %+v", g)
		}
	})

	t.Run("audit2rbac: no user agent, legacy timestamp, 403s", func(t *testing.T) {
		got := readLines(t, bytes.NewReader(readFixture(t, "04b_audit2rbac_demo-v1.log")))
		if len(got) != 37 {
			t.Fatalf("%d events", len(got))
		}
		want := rec{AuditID: "033d17af-082d-4b24-aa22-627752e83d71", Verb: "list", User: "system:admin", SourceIP: "::1",
			Resource: "pods", Namespace: "default", Stage: StageResponseComplete, Code: 403, TS: ts("2017-09-11T19:55:05Z"), SourceIPTail: "::1"}
		if !reflect.DeepEqual(got[0], want) {
			t.Errorf("event 0\n got %+v\nwant %+v", got[0], want)
		}
		for i, g := range got {
			if g.UserAgent != "" || g.TS == 0 {
				t.Errorf("event %d: %+v", i, g)
			}
		}
	})

	t.Run("OpenShift: one pretty-printed kubelet lease update", func(t *testing.T) {
		var d Decoder
		got, res, err := collect(&d, readFixture(t, "06_kbx_single-event.json"))
		if err != nil || res.Events != 1 {
			t.Fatalf("%+v, %v", res, err)
		}
		want := rec{AuditID: "532b1164-8b26-4b49-95f2-907424a80cac", Verb: "update",
			User: "system:node:ip-10-0-31-19.us-west-2.compute.internal", UserAgent: "kubelet/v1.27.4+2c83a9f (linux/amd64) kubernetes/bbf96b6",
			SourceIP: "10.0.6.159", Resource: "leases", APIGroup: "coordination.k8s.io", Namespace: "kube-node-lease",
			Name: "ip-10-0-31-19.us-west-2.compute.internal", Stage: StageResponseComplete, Code: 200, TS: ts("2023-09-01T15:37:02.757366Z"),
			SourceIPTail: "10.0.6.159", RequestReceived: ts("2023-09-01T15:37:02.744516Z")}
		if !reflect.DeepEqual(got[0], want) {
			t.Errorf("\n got %+v\nwant %+v", got[0], want)
		}
	})

	t.Run("every fixture event agrees with the fastjson oracle", func(t *testing.T) {
		for _, name := range []string{"02b_sysdiglabs-aks_unwrapped.jsonl", "03_apisnoop_example-user-agent.log", "04b_audit2rbac_demo-v1.log", "06_kbx_single-event.json"} {
			body := readFixture(t, name)
			var d Decoder
			got, _, err := collect(&d, body)
			if err != nil {
				t.Fatal(err)
			}
			var sc fastjson.Scanner
			sc.InitBytes(body)
			i := 0
			for sc.Next() {
				want, reason := oracle(sc.Value())
				if reason != "" || i >= len(got) || !reflect.DeepEqual(got[i], want) {
					t.Errorf("%s event %d: oracle %+v (%s), decoder %+v", name, i, want, reason, got[min(i, len(got)-1)])
				}
				i++
			}
			if err := sc.Error(); err != nil || i != len(got) {
				t.Errorf("%s: oracle saw %d events (%v), decoder %d", name, i, err, len(got))
			}
		}
	})
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	plain := readFixture(t, "04b_audit2rbac_demo-v1.log")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	readAll := func(path string) ([]byte, error) {
		rc, err := Open(path)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		return b, err
	}
	gz := herdtest.Gzip(t, plain)
	tests := []struct {
		name, file string
		data       []byte
		want       []byte
		err        string
	}{
		{"plain", "audit.log", plain, plain, ""},
		{"gzip", "audit.log.1.gz", gz, plain, ""},
		{"gzip without the suffix", "audit-2026-03-14T09-00-00.000.log", gz, plain, ""},
		{"concatenated gzip members", "cat.gz", append(append([]byte{}, gz...), herdtest.Gzip(t, []byte("x\n"))...), append(append([]byte{}, plain...), "x\n"...), ""},
		{"empty", "empty.log", nil, []byte{}, ""},
		{"one byte", "one.log", []byte{0x1f}, []byte{0x1f}, ""},
		{"truncated gzip", "broken.gz", gz[:len(gz)/2], nil, "read audit log " + filepath.Join(dir, "broken.gz") + ": unexpected EOF"},
		{"gzip magic only", "magic.gz", []byte{0x1f, 0x8b}, nil, "read audit log " + filepath.Join(dir, "magic.gz") + ": gzip: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(write(tt.file, tt.data))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("read %d bytes (want %d), %v", len(got), len(tt.want), err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := Open(filepath.Join(dir, "nope.log"))
		if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "open audit log: open "+dir) {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		old := os.Stdin
		os.Stdin = r
		defer func() { os.Stdin = old; r.Close() }()
		go func() { w.Write(gz); w.Close() }()
		got, err := readAll("-")
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("stdin: %d bytes, %v", len(got), err)
		}
		// Closing the reader must not have closed stdin itself.
		if _, err := r.Stat(); err != nil {
			t.Errorf("stdin closed: %v", err)
		}
	})
}
