package api

import (
	"context"
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
// ends. It sets the read headers and returns the result's index, or writes
// the error and returns false.
//
// query fills in the handler's result through its closure and returns the
// result's index; it must add to ws (nil for a read that does not block)
// every channel that closes when its result may change. memo, if not nil,
// lets a blocked query that woke to a new index keep waiting while its
// result is still the one the client has (the result at the client's
// index), so a change to records the read filters out wakes nobody.
//
// A blocked query returns early when the store is replaced by a snapshot
// restore. A client index above the result's answers at once, unless this
// node has that index in its Raft log without having applied it yet: then
// the query waits for the node to catch up (and for a change past it).
func (s *Server) runQuery(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet) (uint64, error), memo *resultMemo) (uint64, bool) {
	o, err := s.parseQuery(q)
	if err != nil {
		writeError(w, err)
		return 0, false
	}
	ctx := r.Context()
	if o.consistent || (o.maxStale > 0 && s.cluster.LastContact() > o.maxStale) {
		// Asked to be linearizable, or too stale: obtain a read index from
		// the leader (a quorum round trip) and wait to have applied it.
		if _, err := s.cluster.ConsistentIndex(ctx); err != nil {
			writeError(w, err)
			return 0, false
		}
	}
	if o.minIndex == 0 {
		idx, err := query(nil)
		if err != nil {
			// A read that found nothing (404) still says how fresh that is.
			s.setReadHeaders(w, max(idx, 1))
			writeError(w, err)
			return 0, false
		}
		idx = max(idx, 1)
		s.setReadHeaders(w, idx)
		return idx, true
	}

	if s.blocking.active.Add(1) > int64(s.cfg.MaxBlockingQueries) {
		s.blocking.active.Add(-1)
		s.blocking.rejected.Add(1)
		writeError(w, s.errTooManyBlocking())
		return 0, false
	}
	defer s.blocking.active.Add(-1)

	generation := s.store.AbandonCh()
	wctx, cancel := context.WithTimeout(ctx, o.wait+rand.N(o.wait/16+1))
	defer cancel()
	kept := false
	for {
		ws := memdb.NewWatchSet()
		idx, err := query(ws)
		if err != nil {
			s.setReadHeaders(w, max(idx, 1))
			writeError(w, err)
			return 0, false
		}
		idx = max(idx, 1)
		if memo != nil && idx == o.minIndex && !kept {
			// This is what the client has: the same records at its index.
			memo.keep()
			kept = true
		}
		changed := idx > o.minIndex && (!kept || !memo.same())
		// A result behind the client's index: if this node has not applied
		// that index yet but has it in its log, it is lagging and catches
		// up in a moment: wait for it, so the client never goes back in
		// time. Otherwise the index went back (a restore) or is not one
		// this node knows (another cluster, a made-up value): answer now.
		catchingUp := false
		if idx < o.minIndex {
			applied := s.store.AppliedIndex()
			catchingUp = applied < o.minIndex && o.minIndex <= s.cluster.LastIndex()
			if catchingUp {
				ws.Add(s.store.AppliedCh())
			}
		}
		if changed || (idx < o.minIndex && !catchingUp) || isClosed(generation) {
			s.setReadHeaders(w, idx)
			return idx, true
		}
		if err := ws.WatchCtx(wctx); err != nil {
			switch {
			case s.base.Err() != nil:
				writeError(w, errShuttingDown)
				return 0, false
			case ctx.Err() != nil:
				writeError(w, ctx.Err())
				return 0, false
			}
			// The wait ended: answer with the result as it is.
			s.setReadHeaders(w, idx)
			return idx, true
		}
		s.blocking.wakeups.Add(1)
	}
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
