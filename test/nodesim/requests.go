package nodesim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TooLargeResourceVersion is the resourceVersion of incident 000's 504s
// ("Too large resource version: 191700552, current: 187970861"). A test
// control plane is far behind it, so a LIST at it waits for the watch cache
// to catch up and times out.
const TooLargeResourceVersion = "191700552"

// Result is what one request did: enough for a test to predict the audit
// event it produced (URI, code) and for a drill to measure it (duration).
type Result struct {
	// Method and URI (path and query, exactly as sent; the audit event's
	// requestURI).
	Method string
	URI    string
	// Code is the HTTP status code. A non-2xx code is a result, not an error.
	Code int
	// Duration is from sending the request to the end of the response (for
	// watches: until the client closed it).
	Duration time.Duration
	// Items counts the objects returned: list items, or ADDED events of a
	// watch (for a WatchList: the initial state).
	Items int
	// Events counts every watch event received, bookmarks included.
	Events int
	// ResourceVersion is the list's resourceVersion, or the watch's last
	// bookmark or object resourceVersion.
	ResourceVersion string
	// Continue is a list page's continue token; empty on the last page.
	Continue string
	// Message is the Status message of a failed request (e.g. "Timeout: Too
	// large resource version: ...").
	Message string
}

// OK reports whether the request succeeded (2xx).
func (r Result) OK() bool { return r.Code >= 200 && r.Code < 300 }

func (r Result) String() string {
	s := fmt.Sprintf("%s %s -> %d in %v", r.Method, r.URI, r.Code, r.Duration.Round(time.Millisecond))
	if r.Message != "" {
		s += ": " + r.Message
	}
	return s
}

// ListOptions are the query parameters of a LIST. Empty fields are not sent,
// so the zero value is a consistent read of the whole collection.
type ListOptions struct {
	ResourceVersion      string
	ResourceVersionMatch string
	Limit                int64
	Continue             string
	// FieldSelector replaces the Resource's own selector when set.
	FieldSelector string
	LabelSelector string
}

func (o ListOptions) query(r Resource) url.Values {
	q := url.Values{}
	fs := r.FieldSelector
	if o.FieldSelector != "" {
		fs = o.FieldSelector
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("fieldSelector", fs)
	set("labelSelector", o.LabelSelector)
	set("resourceVersion", o.ResourceVersion)
	set("resourceVersionMatch", o.ResourceVersionMatch)
	set("continue", o.Continue)
	if o.Limit > 0 {
		q.Set("limit", strconv.FormatInt(o.Limit, 10))
	}
	return q
}

// List sends one LIST of r with o. It returns an error only when no response
// arrived; the apiserver's answer, whatever its code, is in the Result.
func (c *Client) List(ctx context.Context, r Resource, o ListOptions) (Result, error) {
	return c.list(ctx, r.Path()+encodeQuery(o.query(r)))
}

// ListCache is a LIST at resourceVersion=0: served from the watch cache, the
// cheap relist client-go's reflectors made before WatchList (consistency
// "cache").
func (c *Client) ListCache(ctx context.Context, r Resource) (Result, error) {
	return c.List(ctx, r, ListOptions{ResourceVersion: "0"})
}

// ListConsistent is a LIST with no resourceVersion: a consistent
// read, the expensive kind — straight from etcd before 1.31, from the watch
// cache after an etcd progress check since (consistency "consistent").
func (c *Client) ListConsistent(ctx context.Context, r Resource) (Result, error) {
	return c.List(ctx, r, ListOptions{})
}

// ListExact is a LIST at exactly resourceVersion rv
// (resourceVersionMatch=Exact; consistency "exact").
func (c *Client) ListExact(ctx context.Context, r Resource, rv string) (Result, error) {
	return c.List(ctx, r, ListOptions{ResourceVersion: rv, ResourceVersionMatch: "Exact"})
}

// ListTooLargeRV is a LIST at a resourceVersion the apiserver has not reached
// (TooLargeResourceVersion when rv is empty), what a kubelet that outlived
// its cluster's etcd sends: kube-apiserver 1.36 waits ~3 s for its watch cache
// and answers 504 "Too large resource version".
func (c *Client) ListTooLargeRV(ctx context.Context, r Resource, rv string) (Result, error) {
	if rv == "" {
		rv = TooLargeResourceVersion
	}
	return c.List(ctx, r, ListOptions{ResourceVersion: rv})
}

// ListPages lists r in pages of limit items, following continue tokens as
// client-go's pager does: the first request carries o (its resourceVersion
// sets the consistency), later ones only limit and continue. It returns one
// Result per page; herd counts the first as a relist and the rest as pages.
// It stops at the first failed page.
func (c *Client) ListPages(ctx context.Context, r Resource, limit int64, o ListOptions) ([]Result, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list pages of %s: limit must be positive, got %d", r, limit)
	}
	o.Limit = limit
	o.Continue = ""
	var pages []Result
	for {
		res, err := c.List(ctx, r, o)
		if err != nil {
			return pages, err
		}
		pages = append(pages, res)
		if !res.OK() || res.Continue == "" {
			return pages, nil
		}
		o = ListOptions{Limit: limit, Continue: res.Continue, FieldSelector: o.FieldSelector, LabelSelector: o.LabelSelector}
	}
}

// Get reads one object of r by name (a GET, audit verb "get").
func (c *Client) Get(ctx context.Context, r Resource, name string) (Result, error) {
	res, body, err := c.do(ctx, http.MethodGet, r.Path()+"/"+url.PathEscape(name), nil)
	if err != nil {
		return res, err
	}
	if res.OK() {
		var obj struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &obj); err != nil {
			return res, fmt.Errorf("%s %s: decode object: %w", res.Method, res.URI, err)
		}
		res.Items = 1
		res.ResourceVersion = obj.Metadata.ResourceVersion
	}
	return res, nil
}

func (c *Client) list(ctx context.Context, uri string) (Result, error) {
	res, body, err := c.do(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return res, err
	}
	if !res.OK() {
		return res, nil
	}
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
			Continue        string `json:"continue"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return res, fmt.Errorf("%s %s: decode list: %w", res.Method, res.URI, err)
	}
	res.Items = len(list.Items)
	res.ResourceVersion = list.Metadata.ResourceVersion
	res.Continue = list.Metadata.Continue
	return res, nil
}

// WatchList relists r the way client-go ≥ 1.35 does: a watch with
// sendInitialEvents=true that streams the current state as ADDED events and
// marks its end with a bookmark annotated k8s.io/initial-events-end. It
// closes the watch at that bookmark. An empty rv asks for a consistent
// snapshot; a non-empty one for state not older than rv (consistency
// "cache"). Items counts the initial objects; ResourceVersion is the
// bookmark's. A stream that ends before that bookmark (an ERROR event, a
// timeout) leaves a Message saying so.
func (c *Client) WatchList(ctx context.Context, r Resource, rv string) (Result, error) {
	q := ListOptions{ResourceVersion: rv, ResourceVersionMatch: "NotOlderThan"}.query(r)
	q.Set("watch", "true")
	q.Set("sendInitialEvents", "true")
	q.Set("allowWatchBookmarks", "true")
	q.Set("timeoutSeconds", "60")
	synced := false
	res, err := c.watch(ctx, r.Path()+encodeQuery(q), func(ev watchEvent) bool {
		synced = ev.initialEventsEnd()
		return synced
	})
	if err == nil && res.OK() && !synced && res.Message == "" {
		// Still a request the apiserver audited, so not an error; but say
		// the relist did not complete.
		res.Message = "watch ended before the initial-events-end bookmark"
	}
	return res, err
}

// Watch is a plain re-watch of r from rv — what a reflector does every 5–10
// minutes when its watch times out, and not a relist. It holds the watch
// open for hold (0: closes it as soon as the response has started, which is
// when the apiserver emits the ResponseStarted audit event) and counts the
// events received meanwhile.
func (c *Client) Watch(ctx context.Context, r Resource, rv string, hold time.Duration) (Result, error) {
	q := ListOptions{ResourceVersion: rv}.query(r)
	q.Set("watch", "true")
	q.Set("allowWatchBookmarks", "true")
	q.Set("timeoutSeconds", strconv.Itoa(int(hold/time.Second)+60))
	if hold <= 0 {
		return c.watch(ctx, r.Path()+encodeQuery(q), func(watchEvent) bool { return true })
	}
	hctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	res, err := c.watch(hctx, r.Path()+encodeQuery(q), nil)
	if err != nil && hctx.Err() != nil && ctx.Err() == nil {
		err = nil // the hold ended, as asked
	}
	return res, err
}

// CreateTokenReview asks the apiserver whether token is valid, as a kubelet
// does for every request authenticated with a bearer token (metrics-server
// scraping in token mode, incident 004). The apiserver answers 201.
func (c *Client) CreateTokenReview(ctx context.Context, token string) (Result, error) {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "TokenReview",
		"spec":       map[string]any{"token": token},
	})
	if err != nil {
		return Result{}, fmt.Errorf("create tokenreview: %w", err)
	}
	res, _, err := c.do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", body)
	return res, err
}

// Do sends any request (uri is path and query) and returns its Result: the
// escape hatch for requests the helpers above do not cover.
func (c *Client) Do(ctx context.Context, method, uri string, body []byte) (Result, error) {
	res, _, err := c.do(ctx, method, uri, body)
	return res, err
}

// maxBody bounds what a request helper reads into memory; storm drills list
// tens of megabytes.
const maxBody = 512 << 20

func (c *Client) do(ctx context.Context, method, uri string, body []byte) (Result, []byte, error) {
	res := Result{Method: method, URI: uri}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.host+uri, rd)
	if err != nil {
		return res, nil, fmt.Errorf("%s %s: %w", method, uri, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		res.Duration = time.Since(start)
		return res, nil, fmt.Errorf("%s %s as %s: %w", method, uri, c.User, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	res.Duration = time.Since(start)
	res.Code = resp.StatusCode
	if err != nil {
		return res, nil, fmt.Errorf("%s %s as %s: read response: %w", method, uri, c.User, err)
	}
	if !res.OK() {
		res.Message = statusMessage(data)
	}
	return res, data, nil
}

// watchEvent is one event of a JSON watch stream, decoded only as far as
// herd's tests need.
type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		Message  string `json:"message"` // ERROR events carry a Status
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	} `json:"object"`
}

func (e watchEvent) initialEventsEnd() bool {
	return e.Type == "BOOKMARK" && e.Object.Metadata.Annotations["k8s.io/initial-events-end"] == "true"
}

// watch opens a watch and reads events until done returns true (nil: until
// the stream or ctx ends). done is also asked once, with a zero event, right
// after the response headers arrive, so a caller can close immediately.
func (c *Client) watch(ctx context.Context, uri string, done func(watchEvent) bool) (res Result, err error) {
	res = Result{Method: http.MethodGet, URI: uri}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.host+uri, nil)
	if err != nil {
		return res, fmt.Errorf("watch %s: %w", uri, err)
	}
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	resp, err := c.http.Do(req)
	if err != nil {
		return res, fmt.Errorf("watch %s as %s: %w", uri, c.User, err)
	}
	defer resp.Body.Close()
	res.Code = resp.StatusCode
	if !res.OK() {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		res.Message = statusMessage(data)
		return res, nil
	}
	if done != nil && done(watchEvent{}) {
		return res, nil
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return res, nil // the apiserver ended the watch (timeoutSeconds)
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, fmt.Errorf("watch %s as %s: decode event: %w", uri, c.User, err)
		}
		res.Events++
		switch ev.Type {
		case "ADDED":
			res.Items++
		case "ERROR":
			res.Message = ev.Object.Message
		}
		if rv := ev.Object.Metadata.ResourceVersion; rv != "" {
			res.ResourceVersion = rv
		}
		if done != nil && done(ev) {
			return res, nil
		}
	}
}

// statusMessage extracts a metav1.Status message from an error body.
func statusMessage(body []byte) string {
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		return st.Message
	}
	return strings.TrimSpace(string(body[:min(len(body), 512)]))
}

// encodeQuery renders q the way client-go does (keys sorted, values
// escaped), with a leading "?" when not empty.
func encodeQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}
