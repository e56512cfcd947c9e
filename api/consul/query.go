package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/hashicorp/go-memdb"
)

// Consul's read headers; the Consul Go client requires them on every read.
const (
	HeaderIndex       = "X-Consul-Index"
	HeaderKnownLeader = "X-Consul-Knownleader"
	HeaderLastContact = "X-Consul-Lastcontact"
	HeaderConsistency = "X-Consul-Effective-Consistency"
)

// queryOptions are a read's consistency and blocking parameters.
type queryOptions struct {
	consistent bool
	stale      bool
	minIndex   uint64
	wait       time.Duration
}

// parseQuery reads ?stale, ?consistent, ?index and ?wait. wait is a Go
// duration ("30s", "120000ms"); a bare number is seconds, as Consul reads it.
func (s *Server) parseQuery(q url.Values) (queryOptions, error) {
	var o queryOptions
	o.stale = q.Has("stale")
	o.consistent = q.Has("consistent")
	if o.stale && o.consistent {
		return o, invalid("consistent", "cannot be combined with stale")
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
		d, err := parseWait(v)
		if err != nil {
			return o, invalid("wait", "must be a duration such as 30s or 120000ms")
		}
		if d > 0 {
			o.wait = min(d, s.cfg.MaxWait)
		}
	}
	return o, nil
}

func parseWait(v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, strconv.ErrSyntax
	}
	return d, nil
}

// staleLimit is how long without leader contact a default-mode read still
// answers locally; beyond it the read gets a read index from the leader.
const staleLimit = 5 * time.Second

// blockingQuery runs a read under its consistency mode and, with ?index=N,
// blocks until the result differs from the one the client has and its
// index is past N, or the wait ends. query renders the result (JSON) and
// returns its index; it must add to ws every channel that closes when the
// result may change. The response carries Consul's headers.
//
// The index of a result is derived from the records in it, so it never
// goes back for the same result; a result is compared byte for byte with
// the one at the client's index, so a change to records the read does not
// show wakes nobody.
func (s *Server) blockingQuery(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet) (uint64, []byte, error)) {
	s.blockingChunks(w, r, q, func(ws memdb.WatchSet) (uint64, [][]byte, error) {
		idx, body, err := query(ws)
		return idx, [][]byte{body}, err
	})
}

// blockingChunks is blockingQuery for a result rendered in chunks (the
// health entries' cached encodings), written one after the other rather
// than copied into one buffer.
func (s *Server) blockingChunks(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet) (uint64, [][]byte, error)) {
	o, err := s.parseQuery(q)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	mode := "leader"
	switch {
	case o.stale:
		mode = "stale"
	case o.consistent:
		mode = "consistent"
	}
	if o.consistent || (!o.stale && s.cluster.LastContact() > staleLimit) {
		if _, err := s.cluster.ConsistentIndex(ctx); err != nil {
			writeError(w, err)
			return
		}
	}
	w.Header()[HeaderConsistency] = modeVals[mode]
	if o.minIndex == 0 {
		idx, body, err := query(nil)
		s.respond(w, idx, body, err)
		return
	}
	if s.blocking.Add(1) > int64(s.cfg.MaxBlockingQueries) {
		s.blocking.Add(-1)
		writeError(w, api.StatusError(http.StatusTooManyRequests, "too_many_blocking_queries",
			fmt.Sprintf("this node already holds %d blocking queries (its limit); retry later or on another node", s.cfg.MaxBlockingQueries)))
		return
	}
	generation := s.store.AbandonCh()
	deadline := time.Now().Add(o.wait + rand.N(o.wait/16+1))
	var base [][]byte
	first := true
	// step runs the query once; ready says its result (or err) is the
	// answer, else the query waits on ws.
	step := func() (ws memdb.WatchSet, idx uint64, body [][]byte, err error, ready bool) {
		ws = memdb.NewWatchSet()
		idx, body, err = query(ws)
		if err != nil {
			return nil, idx, nil, err, true
		}
		idx = max(idx, 1)
		if first && idx == o.minIndex {
			base = body // what the client has
		}
		first = false
		changed := idx > o.minIndex && (base == nil || !equalChunks(base, body))
		catchingUp := false
		if idx < o.minIndex {
			// Behind the client: wait if this node is catching up on an
			// index it has in its log, else (a restore, a foreign index)
			// answer now so the client resets.
			catchingUp = s.store.AppliedIndex() < o.minIndex && o.minIndex <= s.cluster.LastIndex()
			if catchingUp {
				ws.Add(s.store.AppliedCh())
			}
		}
		return ws, idx, body, nil, changed || (idx < o.minIndex && !catchingUp) || isClosed(generation)
	}
	ws, idx, body, err, ready := step()
	if ready {
		s.blocking.Add(-1)
		s.respond(w, idx, body, err)
		return
	}
	// Waiting: out of net/http if the connection allows (api.Block).
	api.Block(w, r, deadline, ws, func(w http.ResponseWriter, err error) memdb.WatchSet {
		switch {
		case err == nil:
			var next memdb.WatchSet
			var ready bool
			if next, idx, body, err, ready = step(); !ready {
				return next
			}
			s.respond(w, idx, body, err)
		case errors.Is(err, context.DeadlineExceeded):
			s.respond(w, max(idx, o.minIndex), body, nil)
		default:
			writeError(w, err) // the client went away, the server shuts down
		}
		s.blocking.Add(-1)
		return nil
	})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// equalChunks reports whether two chunked results are the same bytes.
func equalChunks(a, b [][]byte) bool {
	return bytes.Equal(bytes.Join(a, nil), bytes.Join(b, nil))
}

var contentJSON = []string{"application/json"}

// respond writes a read's headers and body chunks (or error).
func (s *Server) respond(w http.ResponseWriter, idx uint64, body [][]byte, err error) {
	s.setReadHeaders(w, max(idx, 1))
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header()["Content-Type"] = contentJSON
	for _, b := range body {
		_, _ = w.Write(b)
	}
}

// simpleRead answers a read that does not block (agent and status
// endpoints) with the read headers.
func (s *Server) simpleRead(w http.ResponseWriter, idx uint64, v any) {
	body, err := encode(v)
	s.respond(w, idx, [][]byte{body}, err)
}

// Header values shared by every response (net/http only reads them).
var (
	valTrue  = []string{"true"}
	valFalse = []string{"false"}
	valZero  = []string{"0"}
	modeVals = map[string][]string{"leader": {"leader"}, "stale": {"stale"}, "consistent": {"consistent"}}
)

func (s *Server) setReadHeaders(w http.ResponseWriter, idx uint64) {
	h := w.Header()
	h[HeaderIndex] = []string{strconv.FormatUint(idx, 10)}
	if s.cluster.KnownLeader() {
		h[HeaderKnownLeader] = valTrue
	} else {
		h[HeaderKnownLeader] = valFalse
	}
	// A node that has not caught up with a leader since it started reports
	// "never" (the largest duration), as Consul does (time.Since of a zero
	// time): its largest millisecond count, 9223372036854. It must not say
	// 0, which reads as "current": clients that bound staleness
	// (consul-template's max_stale, the Consul client's LastContact) would
	// take its old catalog as fresh.
	lc := s.cluster.LastContact()
	if lc <= 0 {
		h[HeaderLastContact] = valZero // on the leader: the header is unsigned
		return
	}
	h[HeaderLastContact] = []string{strconv.FormatInt(lc.Milliseconds(), 10)}
}

// encode is the JSON of v without HTML escaping (Consul's form).
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// boolParam reports whether a flag parameter (?passing, ?enable=true) is on:
// present with no value, or a true value.
func boolParam(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	switch strings.ToLower(q.Get(name)) {
	case "", "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, invalid(name, "must be true or false")
}
