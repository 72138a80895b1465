package stack

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	cpfiles "github.com/herd-k8s/herd/manifests/control-plane"
)

// What the responder wrote, read from the apiserver's audit log: the drills
// and the end-to-end tests check with it that herd touched only its own
// objects, and that a dry run wrote nothing.

// ResponderWritesAuditPolicy is the shipped audit policy
// (manifests/control-plane) with one rule in front that audits the
// responder's own writes, so that a drill can check from the apiserver's
// log what herd wrote and how long each write took. Everything herd's
// exporter receives is what the shipped policy sends: only writes are
// added, because the responder's reads (its informers' LISTs) would reach
// the exporter as relists of an "other" client.
func ResponderWritesAuditPolicy() (string, error) {
	p, err := cpfiles.AuditPolicy(nil)
	if err != nil {
		return "", err
	}
	const marker = "\nrules:\n"
	if n := strings.Count(string(p), marker); n != 1 {
		return "", fmt.Errorf("the shipped audit policy has %d %q lines, want 1", n, strings.TrimSpace(marker))
	}
	return strings.Replace(string(p), marker, marker+"- level: Metadata\n  verbs: [create, update, patch, delete, deletecollection]\n  users: [\""+ResponderUser+"\"]\n", 1), nil
}

// AuditWrite is one mutating request of an audit log, at ResponseComplete.
type AuditWrite struct {
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
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
	Completed       time.Time `json:"stageTimestamp"`
}

// WritesBy returns the mutating requests (create, update, patch, delete)
// that user made, at ResponseComplete, from the apiserver's audit log.
func WritesBy(logPath, user string) ([]AuditWrite, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	var out []AuditWrite
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var e AuditWrite
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Stage != "ResponseComplete" || e.User.Username != user {
			continue
		}
		switch e.Verb {
		case "create", "update", "patch", "delete", "deletecollection":
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit log %s: %w", logPath, err)
	}
	return out, nil
}

// Code is the response's status code (0 when the log has none).
func (e AuditWrite) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

// Latency is how long the apiserver took, from receiving the request to
// completing the response.
func (e AuditWrite) Latency() time.Duration { return e.Completed.Sub(e.RequestReceived) }

func (e AuditWrite) String() string {
	return fmt.Sprintf("%s %s -> %d", e.Verb, e.RequestURI, e.Code())
}

// DryRun reports whether the request asked for a server-side dry run.
func (e AuditWrite) DryRun() bool { return strings.Contains(e.RequestURI, "dryRun=All") }

// Bookkeeping reports whether the write is the responder's own
// bookkeeping (its leader Lease, Events) rather than an action.
func (e AuditWrite) Bookkeeping() bool {
	return e.ObjectRef != nil && (e.ObjectRef.Resource == "events" || e.ObjectRef.Resource == "leases")
}

// On reports whether the write is to resource/name.
func (e AuditWrite) On(resource, name string) bool {
	return e.ObjectRef != nil && e.ObjectRef.Resource == resource && e.ObjectRef.Name == name
}

// Mutated reports whether the write changed the cluster beyond the
// responder's bookkeeping: what a dry run must never do.
func (e AuditWrite) Mutated() bool { return !e.Bookkeeping() && !e.DryRun() }
