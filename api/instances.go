package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// handleRegister: PUT /v1/services/{service}/instances/{id}.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var body client.Registration
	raw, err := readBody(w, r, s.cfg.MaxBodyBytes)
	if err == nil {
		err = decodeRegistration(raw, &body)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := buildRegister(r.PathValue("service"), r.PathValue("id"), &body, time.Now(), s.registerPolicy(r))
	if err != nil {
		writeError(w, err)
		return
	}
	if idx, ok := s.unchangedRegistration(r.Context(), req); ok {
		w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
		writeJSON(w, client.WriteResult{Index: idx})
		return
	}
	s.apply(w, r, fsm.RegisterType, req)
}

// registerPolicy says what the request's identity may register.
func (s *Server) registerPolicy(r *http.Request) registerPolicy {
	return s.registerPolicyOf(identityFrom(r.Context()))
}

// registerPolicyOf says what id may register.
func (s *Server) registerPolicyOf(id identity) registerPolicy {
	pol := registerPolicy{privileged: s.cfg.TrustOpenRegistrations, deny: s.cfg.CheckDenyCIDRs, allow: s.cfg.CheckAllowCIDRs,
		registered: func(name string) bool {
			_, l := s.store.ServiceList(nil, name)
			return l != nil && len(l.Instances) > 0
		}}
	if s.cfg.Auth.Enabled() {
		pol.privileged = id.policy == PolicyManagement
		if !pol.privileged {
			pol.local, pol.safeMethodsOnly = s.cfg.CheckLocalCIDRs, true
		}
	}
	return pol
}

// unchangedRegistration reports whether req would change nothing, and the
// index at which that holds. The local catalog is asked first (most
// registrations change something, and cost nothing more); when it says
// "unchanged", the node catches up with the leader (a read barrier, not a
// Raft entry) and asks again, so a stale follower never swallows a real
// change. An identical periodic re-registration so appends nothing to the
// Raft log and wakes no watcher.
func (s *Server) unchangedRegistration(ctx context.Context, req *fsm.RegisterRequest) (uint64, bool) {
	if s.cluster == nil {
		return 0, false
	}
	return UnchangedRegistration(ctx, s.store, s.cluster.ConsistentIndex, req)
}

// UnchangedRegistration is the check behind an identical re-registration
// being a no-op, for every protocol that registers (the native API and the
// Consul endpoints): it reports whether req would change nothing in store,
// asking again after confirm (a consistent read index: a read barrier, not a
// Raft entry) so that a stale follower never swallows a real change, and
// returns the index at which that holds.
func UnchangedRegistration(ctx context.Context, store *fsm.Store, confirm func(context.Context) (uint64, error), req *fsm.RegisterRequest) (uint64, bool) {
	var at uint64
	same := func() bool {
		inst, checks := store.CurrentInstance(req.Service, req.ID)
		if inst == nil || !fsm.SameRegistration(inst, checks, req) {
			return false
		}
		at = inst.ModifyIndex
		return true
	}
	if !same() {
		return 0, false
	}
	if _, err := confirm(ctx); err != nil || !same() {
		return 0, false
	}
	// The index at which the record is as asked (as the FSM answers for
	// an identical re-registration that reaches the log): a read after
	// this answer returns at least it. The read index just confirmed may
	// be higher than anything the service's reads return.
	return at, true
}

// handleDeregister: DELETE /v1/services/{service}/instances/{id}.
func (s *Server) handleDeregister(w http.ResponseWriter, r *http.Request) {
	service, id := r.PathValue("service"), r.PathValue("id")
	if err := validateService("service", service); err != nil {
		writeError(w, err)
		return
	}
	if err := validateID("id", id); err != nil {
		writeError(w, err)
		return
	}
	// Read the body before anything is applied. A client that sends "{}"
	// with "Expect: 100-continue" (api/client, with several agents) then
	// knows that an agent which never asked for the body (never answered
	// 100 Continue: a paused process) applied nothing, and tries the next
	// agent. Older clients send no body, which is still accepted.
	if err := s.decodeOptionalBody(w, r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	s.apply(w, r, fsm.DeregisterType, &fsm.DeregisterRequest{Service: service, ID: id, Time: time.Now().UnixNano()})
}

// apply encodes a command, commits it through the cluster and answers with
// its index once this node has applied it.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, t fsm.MessageType, req any) {
	cmd, err := fsm.Encode(t, req)
	if err != nil {
		writeError(w, err)
		return
	}
	idx, err := s.cluster.Apply(r.Context(), cmd)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	writeJSON(w, client.WriteResult{Index: idx})
}

// handleInstances: GET /v1/services/{service}/instances, the discovery read.
func (s *Server) handleInstances(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := validateService("service", service); err != nil {
		writeError(w, err)
		return
	}
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
	o, ok := s.readOptions(w, r, q)
	if !ok {
		return
	}
	rd := instancesRead{s: s, service: service, f: f, pg: pg}
	if o.minIndex > 0 {
		blocked := rd // a copy on the heap: the query may be parked
		s.blockingQuery(w, r, o, &blocked)
		return
	}
	// The read that does not block keeps rd on the stack: runQuery's
	// interface would move it to the heap on every read.
	idx, _ := rd.query(nil)
	s.setReadHeaders(w, max(idx, 1))
	rd.answer(w)
}

// instancesRead is the discovery read (a struct, not closures: one
// allocation per read whether it blocks or not).
type instancesRead struct {
	s       *Server
	service string
	f       instanceFilter
	pg      page
	// list is the service's shared list (nil: no instances); out is what
	// the filter and page keep of it (list.Instances itself when they keep
	// everything). Neither is modified.
	list      *fsm.List
	out, kept []*fsm.Instance
	next      string
}

func (rd *instancesRead) query(ws memdb.WatchSet) (uint64, error) {
	idx, l := rd.s.store.ServiceList(ws, rd.service)
	rd.list = l
	var insts []*fsm.Instance
	if l != nil {
		insts = l.Instances
	}
	rd.out, rd.next = pageOf(rd.pg, rd.f.filter(insts), instanceID)
	return idx, nil
}

func instanceID(i *fsm.Instance) string { return i.ID }

func (rd *instancesRead) keep() { rd.kept = rd.out }

// same: stored instances are immutable, so the same pointers in the same
// order are the same answer.
func (rd *instancesRead) same() bool { return slices.Equal(rd.kept, rd.out) }

func (rd *instancesRead) answer(w http.ResponseWriter) {
	if rd.next != "" {
		w.Header().Set(HeaderNextCursor, rd.next)
	}
	if rd.list != nil && rd.next == "" && len(rd.out) == len(rd.list.Instances) && len(rd.out) > 0 && &rd.out[0] == &rd.list.Instances[0] {
		// The whole list: its encoding is kept with it.
		writeBody(w, rd.list.Encoded(encodeList))
		return
	}
	writeInstances(w, rd.out)
}

// handleInstance: GET /v1/services/{service}/instances/{id}, one instance
// with its checks and recent transitions.
func (s *Server) handleInstance(w http.ResponseWriter, r *http.Request) {
	service, id := r.PathValue("service"), r.PathValue("id")
	if err := validateService("service", service); err != nil {
		writeError(w, err)
		return
	}
	if err := validateID("id", id); err != nil {
		writeError(w, err)
		return
	}
	var inst *fsm.Instance
	var checks []*fsm.Check
	s.runQueryFuncs(w, r, queryOf(r), func(ws memdb.WatchSet) (uint64, error) {
		var idx uint64
		idx, inst, checks = s.store.Instance(ws, service, id)
		if inst == nil {
			return idx, notFound("instance %q of service %q is not registered", id, service)
		}
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		writeJSON(w, toInstance(inst, checks, true))
	})
}
