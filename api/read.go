package api

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Response headers of every read.
const (
	HeaderIndex       = "X-Beacon-Index"
	HeaderKnownLeader = "X-Beacon-Known-Leader"
	HeaderLastContact = "X-Beacon-Last-Contact"
)

// queryOptions are the consistency and blocking parameters of a read.
type queryOptions struct {
	consistent bool
	maxStale   time.Duration // 0: not set
	minIndex   uint64        // 0: not blocking
	wait       time.Duration
}

func (s *Server) parseQuery(q url.Values) (queryOptions, error) {
	var o queryOptions
	if _, ok := q["consistent"]; ok {
		switch q.Get("consistent") {
		case "", "true", "1":
			o.consistent = true
		case "false", "0":
		default:
			return o, invalid("consistent", "must be true or false")
		}
	}
	if v := q.Get("max_stale"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, invalid("max_stale", "must be a positive duration such as 5s")
		}
		o.maxStale = d
	}
	if o.consistent && o.maxStale > 0 {
		return o, invalid("max_stale", "cannot be combined with consistent")
	}
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, invalid("index", "must be a non-negative integer")
		}
		o.minIndex = idx
	}
	o.wait = s.cfg.DefaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return o, invalid("wait", "must be a duration such as 30s")
		}
		if d > 0 {
			o.wait = min(d, s.cfg.MaxWait)
		}
	}
	return o, nil
}

// resultMemo compares the results of a blocked query's runs.
type resultMemo struct {
	// keep remembers the latest run's result as the one the client has.
	keep func()
	// same reports whether the latest run's result equals the kept one.
	same func() bool
}

// BlockingStats counts this node's blocking queries.
type BlockingStats struct {
	// Active is how many blocking queries are waiting now.
	Active int64
	// Wakeups counts watch sets that fired: each is one re-run of a blocked
	// query, whether or not its result had changed.
	Wakeups uint64
	// Rejected counts blocking queries refused (429) because MaxBlockingQueries
	// were already waiting.
	Rejected uint64
}

// blockingCounters are the live counters behind BlockingStats.
type blockingCounters struct {
	active   atomic.Int64
	wakeups  atomic.Uint64
	rejected atomic.Uint64
}

// BlockingStats returns the current blocking-query counters. It is safe for
// concurrent use.
func (s *Server) BlockingStats() BlockingStats {
	return BlockingStats{
		Active:   s.blocking.active.Load(),
		Wakeups:  s.blocking.wakeups.Load(),
		Rejected: s.blocking.rejected.Load(),
	}
}

func (s *Server) errTooManyBlocking() error {
	return &statusError{http.StatusTooManyRequests, "too_many_blocking_queries",
		fmt.Sprintf("this node already holds %d blocking queries (its limit); retry later or on another node", s.cfg.MaxBlockingQueries)}
}

// runQuery runs a read under its consistency mode and, when the request
// carries ?index=N, blocks until the result's index passes N or the wait
// ends; then it sets the read headers and calls answer to write the result
// (or writes the error).
//
// query fills in the handler's result through its closure and returns the
// result's index; it must add to ws (nil for a read that does not block)
// every channel that closes when its result may change. memo, if not nil,
// lets a blocked query that woke to a new index keep waiting while its
// result is still the one the client has (the result at the client's
// index), so a change to records the read filters out wakes nobody.
//
// A query that has to wait is parked (Park): the handler returns at once
// and query, memo and answer run later in another goroutine, with another
// ResponseWriter. They must use only what their closures hold, never the
// handler's w.
//
// A blocked query returns early when the store is replaced by a snapshot
// restore. A client index above the result's answers at once, unless this
// node has that index in its Raft log without having applied it yet: then
// the query waits for the node to catch up (and for a change past it).
func (s *Server) runQuery(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet) (uint64, error), memo *resultMemo, answer func(w http.ResponseWriter)) {
	o, err := s.parseQuery(q)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	if o.consistent || (o.maxStale > 0 && s.cluster.LastContact() > o.maxStale) {
		// Asked to be linearizable, or too stale: obtain a read index from
		// the leader (a quorum round trip) and wait to have applied it.
		if _, err := s.cluster.ConsistentIndex(ctx); err != nil {
			writeError(w, err)
			return
		}
	}
	if o.minIndex == 0 {
		idx, err := query(nil)
		s.finishQuery(w, idx, err, answer)
		return
	}

	if s.blocking.active.Add(1) > int64(s.cfg.MaxBlockingQueries) {
		s.blocking.active.Add(-1)
		s.blocking.rejected.Add(1)
		writeError(w, s.errTooManyBlocking())
		return
	}
	b := &blockedQuery{s: s, o: o, query: query, memo: memo, generation: s.store.AbandonCh()}
	ws, idx, err, ready := b.step()
	if ready {
		s.blocking.active.Add(-1)
		s.finishQuery(w, idx, err, answer)
		return
	}
	Block(w, r, time.Now().Add(o.wait+rand.N(o.wait/16+1)), ws, func(w http.ResponseWriter, err error) memdb.WatchSet {
		switch {
		case err == nil:
			// A watch fired: run the query again.
			s.blocking.wakeups.Add(1)
			var ready bool
			var next memdb.WatchSet
			if next, idx, err, ready = b.step(); !ready {
				return next
			}
			s.finishQuery(w, idx, err, answer)
		case s.base.Err() != nil:
			writeError(w, errShuttingDown)
		case errors.Is(err, context.DeadlineExceeded):
			// The wait ended: answer with the result as it is.
			s.finishQuery(w, idx, nil, answer)
		default:
			writeError(w, err) // the client went away
		}
		s.blocking.active.Add(-1)
		return nil
	})
}

// finishQuery answers a read: its headers, then answer's result or err.
func (s *Server) finishQuery(w http.ResponseWriter, idx uint64, err error, answer func(w http.ResponseWriter)) {
	s.setReadHeaders(w, max(idx, 1))
	if err != nil {
		// A read that found nothing (404) still says how fresh that is.
		writeError(w, err)
		return
	}
	answer(w)
}

// blockedQuery is a read with ?index=N between its runs.
type blockedQuery struct {
	s          *Server
	o          queryOptions
	query      func(ws memdb.WatchSet) (uint64, error)
	memo       *resultMemo
	kept       bool
	generation <-chan struct{}
}

// step runs the query once. ready says the result (or err) is the answer;
// otherwise the query waits on ws, and idx is the answer if the wait ends
// first.
func (b *blockedQuery) step() (ws memdb.WatchSet, idx uint64, err error, ready bool) {
	s, o := b.s, b.o
	ws = memdb.NewWatchSet()
	idx, err = b.query(ws)
	if err != nil {
		return nil, idx, err, true
	}
	idx = max(idx, 1)
	if b.memo != nil && idx == o.minIndex && !b.kept {
		// This is what the client has: the same records at its index.
		b.memo.keep()
		b.kept = true
	}
	changed := idx > o.minIndex && (!b.kept || !b.memo.same())
	// A result behind the client's index: if this node has not applied
	// that index yet but has it in its log, it is lagging and catches up
	// in a moment: wait for it, so the client never goes back in time.
	// Otherwise the index went back (a restore) or is not one this node
	// knows (another cluster, a made-up value): answer now.
	catchingUp := false
	if idx < o.minIndex {
		applied := s.store.AppliedIndex()
		catchingUp = applied < o.minIndex && o.minIndex <= s.cluster.LastIndex()
		if catchingUp {
			ws.Add(s.store.AppliedCh())
		}
	}
	ready = changed || (idx < o.minIndex && !catchingUp) || isClosed(b.generation)
	return ws, idx, nil, ready
}

// Watch waits until a channel of ws closes (nil) or ctx ends (its error).
// It is memdb.WatchSet.WatchCtx with a small frame for the usual few
// channels: a parked query's goroutine waits here, and go-memdb's select
// over 32 channels alone would double its stack (2 to 4 KB).
func Watch(ctx context.Context, ws memdb.WatchSet) error {
	if len(ws) > 3 {
		return ws.WatchCtx(ctx)
	}
	var ch [3]<-chan struct{}
	i := 0
	for c := range ws {
		ch[i] = c
		i++
	}
	select {
	case <-ch[0]:
	case <-ch[1]:
	case <-ch[2]:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

var (
	headerIndex       = http.CanonicalHeaderKey(HeaderIndex)
	headerKnownLeader = http.CanonicalHeaderKey(HeaderKnownLeader)
	headerLastContact = http.CanonicalHeaderKey(HeaderLastContact)
	valTrue           = []string{"true"}
	valFalse          = []string{"false"}
)

func (s *Server) setReadHeaders(w http.ResponseWriter, idx uint64) {
	h := w.Header()
	h[headerIndex] = []string{strconv.FormatUint(idx, 10)}
	// The shared slices are never modified: net/http only reads them.
	if s.cluster.KnownLeader() {
		h[headerKnownLeader] = valTrue
	} else {
		h[headerKnownLeader] = valFalse
	}
	lc := s.cluster.LastContact()
	ms := lc.Milliseconds()
	if lc == time.Duration(1<<63-1) {
		ms = -1
	}
	h[headerLastContact] = []string{strconv.FormatInt(ms, 10)}
}
