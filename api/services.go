package api

import (
	"net/http"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// MaxPageSize caps limit= on the lists (services, instances, checks).
const MaxPageSize = 1000

// handleServices: GET /v1/services. Filters: prefix=, tag= and meta=
// (a service matches when one of its instances does). Pagination: limit=
// and cursor= (the next_cursor of the previous page); pages walk the names
// in order, so a walk sees every service that exists throughout it once.
func (s *Server) handleServices(w http.ResponseWriter, r *http.Request) {
	q := queryOf(r)
	f, err := parseInstanceFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	pg, err := parsePage(q)
	if err != nil {
		writeError(w, err)
		return
	}
	prefix, cursor, limit := q.Get("prefix"), pg.cursor, pg.limit
	var match func(*fsm.Instance) bool
	if !f.empty() {
		match = f.match
	}
	var sums []fsm.ServiceSummary
	var more bool
	s.runQueryFuncs(w, r, q, func(ws memdb.WatchSet) (uint64, error) {
		var idx uint64
		idx, sums, more = s.store.ServiceSummaries(ws, prefix, cursor, limit, match)
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		out := client.ServiceList{Services: make([]client.ServiceSummary, 0, len(sums))}
		for _, sum := range sums {
			out.Services = append(out.Services, client.ServiceSummary{
				Name: sum.Name, Tags: sum.Tags, Instances: sum.Instances,
				Passing: sum.Passing, Warning: sum.Warning, Critical: sum.Critical,
				Unavailable: sum.Unavailable, ModifyIndex: sum.ModifyIndex,
			})
		}
		if more && len(sums) > 0 {
			out.NextCursor = sums[len(sums)-1].Name
		}
		writeJSON(w, out)
	})
}
