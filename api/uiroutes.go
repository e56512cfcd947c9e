package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/api/ui"
	"github.com/hashicorp/go-memdb"
)

// The web UI (docs/ui.md): its files at /ui/, and three small reads it
// needs that the rest of the API does not offer.

// MaxTransitionsPage caps limit= on GET /v1/ui/transitions.
const MaxTransitionsPage = 500

// lbStatusTimeout bounds one fetch of a load balancer's /lb/status; the
// body of one is capped at maxLBStatusBytes.
const (
	lbStatusTimeout  = 2 * time.Second
	maxLBStatusBytes = 8 << 20
)

func (s *Server) uiRoutes(mux *router) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ui.SetHeaders(w.Header())
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.Handle("GET /ui/", ui.Handler())
	mux.HandleFunc("GET /v1/ui/whoami", params(s.handleWhoami))
	mux.HandleFunc("GET /v1/ui/watch", params(s.handleWatch, readParams))
	mux.HandleFunc("GET /v1/ui/summary", params(s.handleSummary, readParams))
	mux.HandleFunc("GET /v1/ui/transitions", params(s.handleTransitions, readParams, []string{"limit"}))
	mux.HandleFunc("GET /v1/ui/lbs", params(s.handleLBs, []string{"service"}))
}

// Whoami is the body of GET /v1/ui/whoami.
type Whoami struct {
	// Auth is true when the agent checks tokens.
	Auth bool `json:"auth"`
	// AnonymousRead is true when requests without a token may read.
	AnonymousRead bool `json:"anonymous_read"`
	// Accessor and Policy describe the request's token ("anonymous" and
	// "" without one; with auth off everyone is "management").
	Accessor string `json:"accessor"`
	Policy   string `json:"policy"`
	// Prefixes are the service prefixes a write token may change.
	Prefixes []string `json:"prefixes,omitempty"`
	// Error says why the token sent was refused.
	Error string `json:"error,omitempty"`
	Node  string `json:"node"`
}

// handleWhoami: GET /v1/ui/whoami, open to everyone so that the UI can tell
// a visitor that a token is needed before anything else fails.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	id := identityFrom(r.Context())
	out := Whoami{Auth: s.cfg.Auth.Enabled(), AnonymousRead: s.cfg.Auth.AnonymousRead,
		Accessor: id.accessor, Policy: id.policy, Prefixes: id.prefixes, Node: s.cluster.Status().Node}
	if !out.Auth {
		out.AnonymousRead = true
	}
	if id.err != nil {
		out.Error = id.err.Error()
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, out)
}

// handleWatch: GET /v1/ui/watch?index=N&wait=D. The result is only the
// catalog's applied index, so a blocking call returns as soon as anything
// is applied on this node: the UI then reloads what it shows.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	var idx uint64
	s.runQueryFuncs(w, r, queryOf(r), func(ws memdb.WatchSet) (uint64, error) {
		if ws != nil {
			ws.Add(s.store.AppliedCh())
		}
		idx = max(s.store.AppliedIndex(), 1)
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		writeJSON(w, client.WriteResult{Index: idx})
	})
}

// InstanceTransition is one entry of GET /v1/ui/transitions.
type InstanceTransition struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	client.Transition
}

// handleTransitions: GET /v1/ui/transitions?limit=N, the most recent health
// transitions of every instance, newest first (each instance keeps its
// last 10, so an instance deregistered takes its history with it).
func (s *Server) handleTransitions(w http.ResponseWriter, r *http.Request) {
	q := queryOf(r)
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxTransitionsPage {
			writeError(w, invalid("limit", "must be 1-%d", MaxTransitionsPage))
			return
		}
		limit = n
	}
	var out []InstanceTransition
	s.runQueryFuncs(w, r, q, func(ws memdb.WatchSet) (uint64, error) {
		idx, insts := s.store.Instances(ws)
		out = out[:0]
		for _, in := range insts {
			for _, t := range in.Transitions {
				out = append(out, InstanceTransition{Service: in.Service, Instance: in.ID, Transition: client.Transition{
					Time: unixTime(t.Time), Check: t.Check, From: string(t.From), To: string(t.To), Output: t.Output}})
			}
		}
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		slices.SortStableFunc(out, func(a, b InstanceTransition) int { return b.Time.Compare(a.Time) })
		if len(out) > limit {
			out = out[:limit]
		}
		if out == nil {
			out = []InstanceTransition{}
		}
		writeJSON(w, out)
	})
}

// LBReport is one load balancer in GET /v1/ui/lbs: the /lb/status it
// answered (docs/lb.md), or why it could not be read.
type LBReport struct {
	Addr   string          `json:"addr"`
	Status json.RawMessage `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// handleLBs: GET /v1/ui/lbs[?service=NAME], the routing tables (of one
// service) of the load balancers the agent was configured with
// (Config.UILoadBalancers). The agent fetches only GET
// http://ADDR/lb/status[?service=NAME] of those addresses, NAME a valid
// service name: no client can make it fetch anything else.
func (s *Server) handleLBs(w http.ResponseWriter, r *http.Request) {
	service := queryOf(r).Get("service")
	if service != "" {
		if err := validateService("service", service); err != nil {
			writeError(w, err)
			return
		}
	}
	var addrs []string
	if s.cfg.UILoadBalancers != nil {
		addrs = s.cfg.UILoadBalancers()
	}
	out := make([]LBReport, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.fetchLBStatus(r.Context(), addr, service)
		}()
	}
	wg.Wait()
	s.setReadHeaders(w, max(s.store.AppliedIndex(), 1))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, out)
}

func (s *Server) fetchLBStatus(ctx context.Context, addr, service string) LBReport {
	rep := LBReport{Addr: addr}
	if err := validateHostPort("addr", addr); err != nil {
		rep.Error = err.Error()
		return rep
	}
	ctx, cancel := context.WithTimeout(ctx, lbStatusTimeout)
	defer cancel()
	target := "http://" + addr + "/lb/status"
	if service != "" {
		target += "?service=" + url.QueryEscape(service)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	resp, err := s.lbClient.Do(req)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLBStatusBytes+1))
	switch {
	case err != nil:
		rep.Error = err.Error()
	case len(body) > maxLBStatusBytes:
		rep.Error = fmt.Sprintf("status larger than %d bytes", maxLBStatusBytes)
	case resp.StatusCode == http.StatusNotFound && service != "":
		// The balancer does not follow that service: nothing to show.
		rep.Status = json.RawMessage(`{"services":[]}`)
	case resp.StatusCode != http.StatusOK:
		rep.Error = fmt.Sprintf("status %d", resp.StatusCode)
	case !json.Valid(body) || len(body) == 0 || body[0] != '{':
		rep.Error = "answer is not a JSON object"
	default:
		rep.Status = body
	}
	return rep
}

// newLBClient is the client that reads load balancers' status: no
// redirects followed, no proxy from the environment.
func newLBClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second,
			ResponseHeaderTimeout: lbStatusTimeout},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       lbStatusTimeout,
	}
}

// Summary is the body of GET /v1/ui/summary: the catalog's counts.
type Summary struct {
	Services  int `json:"services"`
	Instances int `json:"instances"`
	Passing   int `json:"passing"`
	Warning   int `json:"warning"`
	Critical  int `json:"critical"`
	// Unavailable counts instances in maintenance or draining.
	Unavailable int `json:"unavailable"`
}

// handleSummary: GET /v1/ui/summary, the counts of services and of
// instances by health (blocking with index= like every read).
func (s *Server) handleSummary(w http.ResponseWriter, r *http.Request) {
	var out Summary
	s.runQueryFuncs(w, r, queryOf(r), func(ws memdb.WatchSet) (uint64, error) {
		idx, sums, _ := s.store.ServiceSummaries(ws, "", "", 0, nil)
		out = Summary{Services: len(sums)}
		for _, sum := range sums {
			out.Instances += sum.Instances
			out.Passing += sum.Passing
			out.Warning += sum.Warning
			out.Critical += sum.Critical
			out.Unavailable += sum.Unavailable
		}
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		writeJSON(w, out)
	})
}
