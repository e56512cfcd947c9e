package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"reflect"
	"time"
)

// WatchUpdate is one result delivered by Watch: the instances that pass the
// watch's filters, and how the agent that answered described the read.
type WatchUpdate struct {
	Instances []Instance
	Meta      QueryMeta
}

// Watch back-off between failed attempts: it starts at watchMinBackoff,
// doubles after each failure up to watchMaxBackoff, and is jittered.
const (
	watchMinBackoff = 50 * time.Millisecond
	watchMaxBackoff = 5 * time.Second
)

// Watch follows the instances of service that pass q's filters (and its
// consistency mode, and WaitTime for each blocking query; WaitIndex is
// ignored). It runs blocking queries in a goroutine and delivers the first
// result and then each result that differs from the last one delivered;
// a query that ends without a change delivers nothing.
//
// When the agent it talks to fails (cannot be reached, hangs, shuts down, is
// overloaded with blocking queries, or answers an error), the query moves to
// the next agent (the client's fail-over policy, failover.go); when no agent
// answered, Watch retries with jittered exponential back-off (50 ms up to
// 5 s), for as long as ctx lasts: a consumer keeps its last update
// while no agent answers. The channel is closed when ctx ends; it is
// unbuffered, so a slow consumer only delays the next query.
//
// Watch makes its first query before it returns, and returns that query's
// error if the agent refused it as invalid (an HTTP 4xx other than 429,
// such as a malformed version range); every other failure is retried.
func (c *Client) Watch(ctx context.Context, service string, q *QueryOptions) (<-chan WatchUpdate, error) {
	var opts QueryOptions
	if q != nil {
		opts = *q
	}
	opts.WaitIndex = 0
	w := &watch{c: c, service: service, opts: opts, out: make(chan WatchUpdate)}
	insts, meta, err := c.Instances(ctx, service, &w.opts)
	if err != nil && permanent(err) {
		return nil, err
	}
	go w.run(ctx, insts, meta, err)
	return w.out, nil
}

type watch struct {
	c       *Client
	service string
	opts    QueryOptions
	out     chan WatchUpdate

	last      []Instance
	delivered bool
	backoff   time.Duration
}

func (w *watch) run(ctx context.Context, insts []Instance, meta *QueryMeta, err error) {
	defer close(w.out)
	for {
		if err != nil {
			if ctx.Err() != nil || !w.retryAfter(ctx) {
				return
			}
		} else if !w.deliver(ctx, insts, meta) {
			return
		}
		insts, meta, err = w.c.Instances(ctx, w.service, &w.opts)
	}
}

// deliver sends insts if they differ from the last update and sets up the
// next blocking query. It returns false when ctx ended.
func (w *watch) deliver(ctx context.Context, insts []Instance, meta *QueryMeta) bool {
	w.backoff = 0
	if insts == nil {
		insts = []Instance{}
	}
	// The index never goes below 1; a lower one than we had means the
	// agent's catalog was restored from a snapshot: block from there.
	w.opts.WaitIndex = max(meta.Index, 1)
	if w.delivered && reflect.DeepEqual(w.last, insts) {
		return true
	}
	select {
	case w.out <- WatchUpdate{Instances: insts, Meta: *meta}:
		w.last, w.delivered = insts, true
		return true
	case <-ctx.Done():
		return false
	}
}

// retryAfter sleeps the back-off after a query that no agent answered (the
// client's fail-over policy already tried each of them once). It returns
// false when ctx ended.
func (w *watch) retryAfter(ctx context.Context) bool {
	w.backoff = min(max(w.backoff*2, watchMinBackoff), watchMaxBackoff)
	sleep := w.backoff/2 + rand.N(w.backoff/2+1)
	t := time.NewTimer(sleep)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// permanent reports whether err is a refusal that retrying cannot fix.
func permanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}
