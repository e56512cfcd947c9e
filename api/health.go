package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// TTLReporter takes TTL check reports and delivers them to the leader.
type TTLReporter interface {
	// ReportTTL records a pass, warn or fail report of TTL check id, with
	// optional output and custom metrics, and returns an index this node has
	// applied (so a read here afterwards sees the report's effect).
	ReportTTL(ctx context.Context, id string, status fsm.Health, output string, metrics map[string]float64) (uint64, error)
}

// Limits of the health routes (docs/api-health.md).
const (
	MaxReasonLen      = 256
	MaxMetrics        = 32
	MaxMetricNameLen  = 64
	MinDrainDeadline  = time.Second
	MaxDrainDeadline  = 24 * time.Hour
	maxCheckIDLen     = MaxServiceLen + 1 + MaxIDLen + 1 + MaxCheckNameLen
	checkStatusFilter = "passing, warning, critical or flapping"
)

var metricNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.:-]*$`)

// ttlStatuses maps the route's last segment to the reported status.
var ttlStatuses = map[string]fsm.Health{"pass": fsm.Passing, "warn": fsm.Warning, "fail": fsm.Critical}

// handleTTL: PUT /v1/checks/{id}/pass|warn|fail, with an optional body
// {"output": "...", "metrics": {"load": 0.4}}.
func (s *Server) handleTTL(verb string) http.HandlerFunc {
	status := ttlStatuses[verb]
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := validateCheckID("id", id); err != nil {
			writeError(w, err)
			return
		}
		var body client.TTLUpdate
		if err := s.decodeOptionalBody(w, r, &body); err != nil {
			writeError(w, err)
			return
		}
		if err := validateMetrics(body.Metrics); err != nil {
			writeError(w, err)
			return
		}
		if s.cfg.TTL == nil {
			writeError(w, &statusError{http.StatusServiceUnavailable, "unavailable", "this agent does not take TTL reports"})
			return
		}
		idx, err := s.cfg.TTL.ReportTTL(r.Context(), id, status, body.Output, body.Metrics)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set(HeaderIndex, fmt.Sprint(idx))
		writeJSON(w, client.WriteResult{Index: idx})
	}
}

// validateCheckID accepts SERVICE:INSTANCE:NAME, the form check IDs take
// (fsm.CheckID). None of the three parts may contain ':'.
func validateCheckID(field, id string) error {
	parts := strings.Split(id, ":")
	if len(parts) != 3 || len(id) > maxCheckIDLen {
		return invalid(field, "must be a check ID: SERVICE:INSTANCE:NAME")
	}
	service, inst, name := parts[0], parts[1], parts[2]
	if len(service) > MaxServiceLen || !serviceName(service) ||
		len(inst) > MaxIDLen || !validIDChars(inst) ||
		len(name) > MaxCheckNameLen || !validIDChars(name) {
		return invalid(field, "must be a check ID: SERVICE:INSTANCE:NAME, a service name, an instance ID and a check name")
	}
	return nil
}

func validateMetrics(m map[string]float64) error {
	if len(m) > MaxMetrics {
		return invalid("metrics", "more than %d metrics", MaxMetrics)
	}
	for k := range m {
		if len(k) > MaxMetricNameLen || !metricNamePattern.MatchString(k) {
			return invalid("metrics", "name %q: 1-%d letters, digits, '_', '.', ':' or '-', not starting with a digit", truncateForError(k), MaxMetricNameLen)
		}
	}
	return nil
}

// decodeOptionalBody is decodeBody for routes whose body may be absent.
func (s *Server) decodeOptionalBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeJSON(body, v)
}

// ownedBy reports whether check c matches the owner filter: the node that
// runs it, or client.OwnerLeader for a TTL check (no owner: the leader keeps
// its timer), which beacon checks shows so.
func ownedBy(c *fsm.Check, owner string) bool {
	if owner == client.OwnerLeader {
		return c.Type == fsm.CheckTTL
	}
	return c.Owner == owner
}

// handleChecks: GET /v1/checks?service=&status=&owner=&instance=.
func (s *Server) handleChecks(w http.ResponseWriter, r *http.Request) {
	q := queryOf(r)
	service, status, owner, instance := q.Get("service"), q.Get("status"), q.Get("owner"), q.Get("instance")
	if service != "" {
		if err := validateService("service", service); err != nil {
			writeError(w, err)
			return
		}
	}
	switch status {
	case "", "passing", "warning", "critical", "flapping":
	default:
		writeError(w, invalid("status", "must be %s", checkStatusFilter))
		return
	}
	pg, err := parsePage(q)
	if err != nil {
		writeError(w, err)
		return
	}
	var kept, matched []*fsm.Check
	var next string
	s.runQueryFuncs(w, r, q, func(ws memdb.WatchSet) (uint64, error) {
		idx, checks := s.store.Checks(ws, service)
		matched = nil
		for _, c := range checks {
			if (owner != "" && !ownedBy(c, owner)) || (instance != "" && c.Instance != instance) {
				continue
			}
			switch status {
			case "":
			case "flapping":
				if !c.Flapping {
					continue
				}
			default:
				// A flapping check counts as critical, as it does for its instance.
				if string(c.Effective()) != status {
					continue
				}
			}
			matched = append(matched, c)
		}
		matched, next = pageOf(pg, matched, func(c *fsm.Check) string { return c.ID })
		return idx, nil
	}, &resultMemo{
		keep: func() { kept = matched },
		// Stored checks are immutable: the same pointers are the same answer,
		// so a change to checks the filters leave out wakes nobody.
		same: func() bool { return slices.Equal(kept, matched) },
	}, func(w http.ResponseWriter) {
		if next != "" {
			w.Header().Set(HeaderNextCursor, next)
		}
		out := make([]client.Check, 0, len(matched))
		for _, c := range matched {
			out = append(out, toCheck(c))
		}
		writeJSON(w, out)
	})
}

// handleMaintenance: PUT /v1/services/{service}/instances/{id}/maintenance.
func (s *Server) handleMaintenance(w http.ResponseWriter, r *http.Request) {
	var body client.MaintenanceRequest
	if err := s.decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	req, err := buildMaintenance(r.PathValue("service"), r.PathValue("id"), &body, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	s.apply(w, r, fsm.MaintenanceType, req)
}

func buildMaintenance(service, id string, b *client.MaintenanceRequest, now time.Time) (*fsm.MaintenanceRequest, error) {
	if err := validateService("service", service); err != nil {
		return nil, err
	}
	if err := validateID("id", id); err != nil {
		return nil, err
	}
	req := &fsm.MaintenanceRequest{Service: service, ID: id, Mode: b.Mode, Reason: b.Reason, Time: now.UnixNano()}
	if !printableMax(b.Reason, MaxReasonLen) {
		return nil, invalid("reason", "must be at most %d printable characters", MaxReasonLen)
	}
	switch b.Mode {
	case fsm.ModeMaintenance:
	case fsm.ModeNone:
		if b.Reason != "" {
			return nil, invalid("reason", "is only for mode maintenance")
		}
	case fsm.ModeDrain:
		if b.Reason != "" {
			return nil, invalid("reason", "is only for mode maintenance")
		}
		d := time.Duration(b.Deadline)
		if d == 0 {
			return nil, invalid("deadline", "is required for drain: a duration between %s and %s", MinDrainDeadline, MaxDrainDeadline)
		}
		if d < MinDrainDeadline || d > MaxDrainDeadline {
			return nil, invalid("deadline", "%s is out of range: a duration between %s and %s", d, MinDrainDeadline, MaxDrainDeadline)
		}
		req.Deadline = now.Add(d).UnixNano()
		return req, nil
	default:
		return nil, invalid("mode", "must be maintenance, drain or none")
	}
	if b.Deadline != 0 {
		return nil, invalid("deadline", "is only for mode drain")
	}
	return req, nil
}
