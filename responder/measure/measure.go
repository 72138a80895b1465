// Package measure keeps herd's measurement FlowSchemas: without audit logs,
// API Priority and Fairness counts node-side clients' LISTs per client and
// resource (docs/apf-measurement.md).
//
// The apiserver labels apiserver_flowcontrol_dispatched_requests_total (and
// its rejected, wait and seat metrics) with the FlowSchema that served each
// request. For each identity of each measured client and each resource, the
// leader keeps one FlowSchema for `list` that sits immediately before the
// schema serving those LISTs today and copies its priority level and
// distinguisher (plan.go): no request changes priority level, and the
// apiserver's own metrics become a per-client, per-resource LIST counter.
// It follows the schemas in force (the APFCache's informers) and rewrites
// or removes its own as they change.
//
// Each write is herd's one APF write path (action.ApplyFlowSchema,
// action.DeleteFlowSchema): one server-side apply with the cached
// resourceVersion and UID as preconditions, or one delete. The schemas take
// the slot names herd-measure-1..N that RBAC pins, carry
// app.kubernetes.io/managed-by: herd and herd.dev/measurement: "true", and
// are owned by the responder's ClusterRole, so that the garbage collector
// deletes them when herd is uninstalled. Measurement is not an action:
// dryRun does not govern it, measurement.enabled does (false removes them).
//
// herd_measurement_flowschema_info (metrics.go) maps each FlowSchema name
// back to role, client, resource and identity for the mixin's joins,
// isolate's and protect's schemas included: requests they take from a
// client still count for it.
package measure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/policy"
)

// Names herd gives what measures.
const (
	// SlotPrefix names the measurement FlowSchemas: herd-measure-1..N.
	SlotPrefix = "herd-measure"
	// ActionMeasure is their herd.dev/action annotation.
	ActionMeasure = "measure"
	// LabelMeasurement selects them:
	// kubectl get flowschemas -l herd.dev/measurement=true.
	LabelMeasurement = "herd.dev/measurement"
	// AnnotationServing names the FlowSchema whose placement a
	// measurement schema copies.
	AnnotationServing = "herd.dev/serving"
)

// Defaults of Options.
const (
	DefaultInterval = 15 * time.Second
	// debounce gathers the burst of informer events one change makes.
	debounce = time.Second
)

// Options configure a Controller.
type Options struct {
	Client kubernetes.Interface
	APF    *action.APFCache
	Config policy.Measurement
	// IsLeader gates every write: only the leader measures.
	IsLeader func() bool
	// Interval between reconciles when nothing changes (DefaultInterval).
	Interval   time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Controller keeps the measurement FlowSchemas.
type Controller struct {
	opts  Options
	kicks chan struct{}
	m     *metrics

	mu     sync.Mutex
	status Status
}

// Status is the latest reconcile, for /debug/measurement.
type Status struct {
	Enabled bool      `json:"enabled"`
	Leader  bool      `json:"leader"`
	Time    time.Time `json:"time,omitempty"`
	// Owner is the ClusterRole every schema is owned by.
	Owner      string      `json:"owner"`
	Placements []Placement `json:"placements"`
	Removed    []string    `json:"removed,omitempty"`
	Errors     []string    `json:"errors,omitempty"`
}

// New returns a Controller; Run runs it.
func New(opts Options) (*Controller, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IsLeader == nil {
		return nil, errors.New("measure: Options.IsLeader is required (only the leader writes)")
	}
	c := &Controller{opts: opts, kicks: make(chan struct{}, 1)}
	var err error
	if c.m, err = newMetrics(opts.Registerer, opts.APF); err != nil {
		return nil, err
	}
	opts.APF.OnChange(c.kick)
	return c, nil
}

// kick asks for a reconcile soon; it never blocks.
func (c *Controller) kick() {
	select {
	case c.kicks <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends: when the FlowSchemas or priority levels
// change, and every Interval.
func (c *Controller) Run(ctx context.Context) {
	if !c.opts.APF.WaitForSync(ctx) {
		return
	}
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		c.Reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kicks:
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
			select { // the events of the wait are in this reconcile
			case <-c.kicks:
			default:
			}
		}
	}
}

// Reconcile brings the measurement schemas to the plan, once: a no-op
// (and no request) when they are already there. Only the leader writes; a
// failed write is retried at the next reconcile.
func (c *Controller) Reconcile(ctx context.Context) Status {
	st := Status{Enabled: c.opts.Config.Enabled, Leader: c.opts.IsLeader(), Time: c.opts.Now(), Owner: "clusterrole/" + c.opts.Config.OwnerClusterRole}
	defer func() {
		c.mu.Lock()
		c.status = st
		c.mu.Unlock()
	}()
	all, err := c.opts.APF.FlowSchemas()
	if err != nil {
		st.Errors = append(st.Errors, err.Error())
		return st
	}
	levels, err := c.opts.APF.PriorityLevels()
	if err != nil {
		st.Errors = append(st.Errors, err.Error())
		return st
	}
	placements, remove := plan(c.opts.Config, all, levels)
	st.Placements = placements
	c.m.record(placements)
	if !st.Leader {
		return st
	}
	existing := map[string]*flowcontrolv1.FlowSchema{}
	for _, fs := range all {
		existing[fs.Name] = fs
	}
	var owner *metav1.OwnerReference
	for _, p := range placements {
		if p.Skip != "" {
			continue
		}
		cur := existing[p.Slot]
		if cur != nil && upToDate(cur, p.object(nil), c.opts.Config.OwnerClusterRole) {
			continue
		}
		if owner == nil {
			if owner, err = c.owner(ctx); err != nil {
				st.Errors = append(st.Errors, err.Error())
				c.opts.Logger.Warn("measurement FlowSchemas not applied; retried at the next reconcile", "err", err)
				break // no owner, no write: its schemas would outlive an uninstall
			}
		}
		fs := p.object(owner)
		if cur != nil {
			fs.ResourceVersion, fs.UID = cur.ResourceVersion, cur.UID
		}
		err := action.ApplyFlowSchema(ctx, c.opts.Client, c.opts.APF, fs, false)
		c.m.write("apply", err)
		if err != nil {
			st.Errors = append(st.Errors, err.Error())
			c.opts.Logger.Warn("measurement FlowSchema not applied; retried at the next reconcile", "flowschema", p.Slot, "key", p.Key.String(), "err", err)
			continue
		}
		c.opts.Logger.Info("measurement FlowSchema applied", "flowschema", p.Slot, "key", p.Key.String(), "serving", p.Serving,
			"priorityLevel", p.PriorityLevel, "precedence", p.Precedence, "namespaced", p.Namespaced, "created", cur == nil)
	}
	for _, fs := range remove {
		err := action.DeleteFlowSchema(ctx, c.opts.Client, c.opts.APF, fs, false)
		c.m.write("delete", err)
		if err != nil {
			st.Errors = append(st.Errors, err.Error())
			c.opts.Logger.Warn("measurement FlowSchema not deleted; retried at the next reconcile", "flowschema", fs.Name, "err", err)
			continue
		}
		st.Removed = append(st.Removed, fs.Name)
		c.opts.Logger.Info("measurement FlowSchema deleted", "flowschema", fs.Name, "key", keyOf(fs).String(), "enabled", c.opts.Config.Enabled)
	}
	return st
}

// owner reads the ClusterRole the schemas are owned by (one GET, only when
// a schema is to be written). Missing, it refuses every write.
func (c *Controller) owner(ctx context.Context) (*metav1.OwnerReference, error) {
	name := c.opts.Config.OwnerClusterRole
	cr, err := c.opts.Client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("the owner ClusterRole %s (measurement.ownerClusterRole) does not exist: herd writes no measurement FlowSchema that an uninstall would leave behind", name)
	case err != nil:
		return nil, fmt.Errorf("read the owner ClusterRole %s: %w", name, err)
	}
	return &metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: cr.Name, UID: cr.UID}, nil
}

// upToDate reports whether cur already is want: the same spec, herd's
// labels and annotations, and an owner reference to the owner ClusterRole
// (its UID is not compared: a recreated owner means the garbage collector
// deletes cur, and the next reconcile creates it again).
func upToDate(cur, want *flowcontrolv1.FlowSchema, owner string) bool {
	if !equality.Semantic.DeepEqual(cur.Spec, want.Spec) {
		return false
	}
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return false
		}
	}
	for k, v := range want.Annotations {
		if cur.Annotations[k] != v {
			return false
		}
	}
	for _, r := range cur.OwnerReferences {
		if r.Kind == "ClusterRole" && r.Name == owner && r.APIVersion == "rbac.authorization.k8s.io/v1" {
			return true
		}
	}
	return false
}

// Status is the latest reconcile.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
