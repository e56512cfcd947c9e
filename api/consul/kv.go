package consul

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/hashicorp/go-memdb"
)

// kvIndex is the X-Consul-Index of every answer under /v1/kv/. Beacon has
// no KV store: every key is absent and nothing there ever changes.
const kvIndex = 1

// errNoKV is the answer of a KV read: Consul's for a key (or a prefix, with
// ?recurse or ?keys) that does not exist. The Consul client and the tools
// built on it (consul-template's key, keyOrDefault, ls and tree; fabio's
// manual routes) read a 404 under /v1/kv/ as "absent", not as an error.
var errNoKV = api.StatusError(http.StatusNotFound, "not_found",
	"Beacon has no KV store: every key is absent (docs/consul.md)")

// errKVWrite refuses a KV write: there is no store to write to.
var errKVWrite = api.StatusError(http.StatusNotImplemented, "unsupported",
	"Beacon has no KV store: writes under /v1/kv/ are refused (docs/consul.md)")

// handleKVRead answers GET /v1/kv/KEY as Consul answers for an absent key:
// a 404 with the read headers, X-Consul-Index kvIndex. A blocking read at
// that index waits out its wait, as Consul's does while the key stays
// absent: without an index to block on, the clients that watch a key
// (consul-template, fabio) would ask again at once, in a loop.
func (s *Server) handleKVRead(w http.ResponseWriter, r *http.Request, q url.Values) {
	o, err := s.parseQuery(q)
	if err != nil {
		writeError(w, err)
		return
	}
	mode := "leader"
	switch {
	case o.stale:
		mode = "stale"
	case o.consistent:
		mode = "consistent"
	}
	w.Header()[HeaderConsistency] = modeVals[mode]
	if o.minIndex != kvIndex {
		// Index 0 (a first read) or one from elsewhere (a Consul cluster):
		// the client takes kvIndex and blocks on it next time.
		s.respondKV(w)
		return
	}
	if s.blocking.Add(1) > int64(s.cfg.MaxBlockingQueries) {
		s.blocking.Add(-1)
		writeError(w, api.StatusError(http.StatusTooManyRequests, "too_many_blocking_queries",
			"this node already holds its limit of blocking queries; retry later or on another node"))
		return
	}
	deadline := time.Now().Add(o.wait + rand.N(o.wait/16+1))
	// Nothing under /v1/kv/ changes; the store's abandon channel (a
	// snapshot restore) is the one event that ends the wait early, as it
	// does for every other blocking read.
	ws := memdb.NewWatchSet()
	ws.Add(s.store.AbandonCh())
	api.Block(w, r, deadline, ws, func(w http.ResponseWriter, err error) memdb.WatchSet {
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			s.respondKV(w)
		} else {
			writeError(w, err) // the client went away, the server shuts down
		}
		s.blocking.Add(-1)
		return nil
	})
}

func (s *Server) respondKV(w http.ResponseWriter) {
	s.setReadHeaders(w, kvIndex)
	writeError(w, errNoKV)
}

func (s *Server) handleKVWrite(w http.ResponseWriter, r *http.Request, q url.Values) {
	writeError(w, errKVWrite)
}
