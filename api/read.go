package api

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
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
	minIndex   uint64
	wait       time.Duration
}

func (s *Server) parseQuery(r *http.Request) (queryOptions, error) {
	q := r.URL.Query()
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
		o.wait = min(d, s.cfg.MaxWait)
	}
	return o, nil
}

// runQuery runs query under the read's consistency mode and, when the
// request carries ?index=N, blocks until the result's index passes N or the
// wait ends. query fills in its result through its closure and returns the
// result's index; it must add to ws everything its result depends on. It
// sets the read headers and returns the index, or writes the error and
// returns false.
func (s *Server) runQuery(w http.ResponseWriter, r *http.Request, query func(ws memdb.WatchSet) (uint64, error)) (uint64, bool) {
	o, err := s.parseQuery(r)
	if err != nil {
		writeError(w, err)
		return 0, false
	}
	ctx := r.Context()
	if o.consistent || (o.maxStale > 0 && s.cluster.LastContact() > o.maxStale) {
		// Too stale, or asked to be linearizable: obtain a read index from
		// the leader (a quorum round trip) and wait to have applied it.
		if _, err := s.cluster.ConsistentIndex(ctx); err != nil {
			writeError(w, err)
			return 0, false
		}
	}
	wctx := ctx
	if o.minIndex > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.wait+rand.N(o.wait/16+1))
		defer cancel()
	}
	for {
		ws := memdb.NewWatchSet()
		idx, err := query(ws)
		if err != nil {
			writeError(w, err)
			return 0, false
		}
		if idx == 0 {
			idx = 1
		}
		// Return when the result moved past the client's index, when the
		// index went backwards (a snapshot restore), or when not blocking.
		if o.minIndex == 0 || idx != o.minIndex {
			s.setReadHeaders(w, idx)
			return idx, true
		}
		if err := ws.WatchCtx(wctx); err != nil {
			if err := ctx.Err(); err != nil {
				if s.base.Err() != nil {
					// Shutdown ended the query, not the client: tell it to
					// retry, elsewhere or later.
					err = errShuttingDown
				}
				writeError(w, err)
				return 0, false
			}
			s.setReadHeaders(w, idx)
			return idx, true
		}
	}
}

func (s *Server) setReadHeaders(w http.ResponseWriter, idx uint64) {
	h := w.Header()
	h.Set(HeaderIndex, strconv.FormatUint(idx, 10))
	if s.cluster.KnownLeader() {
		h.Set(HeaderKnownLeader, "true")
	} else {
		h.Set(HeaderKnownLeader, "false")
	}
	lc := s.cluster.LastContact()
	ms := lc.Milliseconds()
	if lc == time.Duration(1<<63-1) {
		ms = -1
	}
	h.Set(HeaderLastContact, strconv.FormatInt(ms, 10))
}
