package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Informers are agents that hold what client-go's reflector holds once it
// has started: one LIST of every pod, then a WATCH from the list's
// resourceVersion, renewed when the apiserver ends it (every 5 to 10
// minutes, as reflectors ask), and a LIST again only when the watch cannot
// resume (410 Gone). That is the steady state of a fleet of CNI agents: herd
// sees each instance list and watch, and forecasts what one synchronized
// relist of them all would cost. Restart makes one agent start over (its
// pod restarted: one LIST, then a watch), Pause stops them all (the storm
// takes over their clients), Resume starts them again from a given
// resourceVersion without listing.
type Informers struct {
	clients []*Client
	uri     string // the LIST; its watch adds watch=true
	// Lists records every LIST the informers make (their start, restarts
	// and relists after 410).
	Lists *Recorder

	ctx    context.Context
	mu     sync.Mutex
	cancel []context.CancelFunc
	wg     sync.WaitGroup
}

// StartInformers starts one informer per client: a LIST of uri, then its
// watch. They run until Pause or Stop (or ctx).
func StartInformers(ctx context.Context, clients []*Client, uri string) *Informers {
	in := &Informers{clients: clients, uri: uri, Lists: &Recorder{}, ctx: ctx, cancel: make([]context.CancelFunc, len(clients))}
	for i := range clients {
		in.start(i, "")
	}
	return in
}

func (in *Informers) start(i int, rv string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cancel[i] != nil {
		in.cancel[i]()
	}
	ctx, cancel := context.WithCancel(in.ctx)
	in.cancel[i] = cancel
	in.wg.Go(func() { in.run(ctx, in.clients[i], rv) })
}

// run is one reflector: LIST when it has no resourceVersion, else WATCH
// from it, until ctx ends.
func (in *Informers) run(ctx context.Context, c *Client, rv string) {
	for ctx.Err() == nil {
		if rv == "" {
			o, got := c.List(ctx, in.uri)
			if ctx.Err() != nil {
				return
			}
			in.Lists.Add(o)
			if !o.OK() || got == "" {
				sleep(ctx, time.Second) // a reflector backs off too
				continue
			}
			rv = got
		}
		// 5 to 10 minutes, as client-go's reflector asks (minWatchTimeout).
		timeout := 300 + rand.IntN(300)
		next, err := c.Watch(ctx, fmt.Sprintf("%s?watch=true&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d", in.uri, rv, timeout))
		switch {
		case ctx.Err() != nil:
			return
		case err == errGone:
			rv = "" // the watch cannot resume: relist
		case err != nil:
			sleep(ctx, time.Second)
		case next != "":
			rv = next
		}
	}
}

// Restart makes agent i start over: one LIST, then a watch.
func (in *Informers) Restart(i int) { in.start(i, "") }

// Pause stops every informer and waits for them.
func (in *Informers) Pause() {
	in.mu.Lock()
	for i, cancel := range in.cancel {
		if cancel != nil {
			cancel()
			in.cancel[i] = nil
		}
	}
	in.mu.Unlock()
	in.wg.Wait()
}

// Resume starts every informer again, watching from rv (no LIST).
func (in *Informers) Resume(rv string) {
	for i := range in.clients {
		in.start(i, rv)
	}
}

// Stop ends the informers for good.
func (in *Informers) Stop() { in.Pause() }

// errGone is a watch the apiserver refused with 410: too old a
// resourceVersion.
var errGone = fmt.Errorf("410 Gone")

// listRV finds a list's resourceVersion in the first bytes of its JSON
// (the apiserver writes metadata before items).
var listRV = regexp.MustCompile(`"metadata":\{[^{}]*"resourceVersion":"([0-9]+)"`)

// List sends one LIST of uri, reads it to the end and returns its
// resourceVersion, as a reflector's LIST does (but without keeping the
// items).
func (c *Client) List(ctx context.Context, uri string) (Outcome, string) {
	o := Outcome{Start: time.Now()}
	req, err := c.request(ctx, uri)
	if err != nil {
		o.Err = err
		return o, ""
	}
	resp, err := c.http.Do(req)
	if err != nil {
		o.Took, o.Err = time.Since(o.Start), err
		return o, ""
	}
	defer resp.Body.Close()
	o.Code = resp.StatusCode
	head := make([]byte, 512)
	n, _ := io.ReadFull(resp.Body, head)
	rest, err := io.Copy(io.Discard, resp.Body)
	o.Bytes, o.Err, o.Took = int64(n)+rest, err, time.Since(o.Start)
	rv := ""
	if m := listRV.FindSubmatch(head[:n]); m != nil {
		rv = string(m[1])
	}
	return o, rv
}

// Watch holds one WATCH of uri until the apiserver ends it or ctx ends,
// and returns the last resourceVersion it saw (bookmarks included).
func (c *Client) Watch(ctx context.Context, uri string) (string, error) {
	req, err := c.request(ctx, uri)
	if err != nil {
		return "", err
	}
	// No client timeout: the apiserver ends the watch (timeoutSeconds).
	resp, err := c.watchClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusGone {
		return "", errGone
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("watch %s: %d %s", uri, resp.StatusCode, bytes.TrimSpace(b))
	}
	dec := json.NewDecoder(resp.Body)
	rv := ""
	for {
		var ev struct {
			Type   string `json:"type"`
			Object struct {
				Code     int `json:"code"`
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
			} `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return rv, nil // the apiserver ended the watch (or ctx did)
		}
		if ev.Type == "ERROR" {
			if ev.Object.Code == http.StatusGone {
				return "", errGone
			}
			return rv, fmt.Errorf("watch %s: error event %d", uri, ev.Object.Code)
		}
		if v := ev.Object.Metadata.ResourceVersion; v != "" {
			rv = v
		}
	}
}

// request is a GET of uri as the client's agent.
func (c *Client) request(ctx context.Context, uri string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.host+uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if c.sourceIP != "" {
		req.Header.Set("X-Forwarded-For", c.sourceIP)
	}
	return req, nil
}

// watchClient is the client's transport without its request timeout.
func (c *Client) watchClient() *http.Client { return &http.Client{Transport: c.http.Transport} }

// CurrentRV is the apiserver's current resourceVersion of pods: where
// resumed watches start (a LIST of one pod, as the admin).
func CurrentRV(ctx context.Context, c kubernetes.Interface) (string, error) {
	l, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return "", fmt.Errorf("current resourceVersion: %w", err)
	}
	return l.ResourceVersion, nil
}
