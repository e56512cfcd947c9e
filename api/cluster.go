package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// MaxJoinAddresses caps the addresses of one join request.
const MaxJoinAddresses = 64

// handleStatus: GET /v1/cluster/status.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := s.cluster.Status()
	s.setReadHeaders(w, max(st.AppliedIndex, 1))
	writeJSON(w, st)
}

// handleMembers: GET /v1/cluster/members.
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	s.setReadHeaders(w, max(s.cluster.Status().AppliedIndex, 1))
	writeJSON(w, s.cluster.Members())
}

// handleServers: GET /v1/cluster/servers, every Raft server's own view.
func (s *Server) handleServers(w http.ResponseWriter, r *http.Request) {
	out := s.cluster.Servers(r.Context())
	s.setReadHeaders(w, max(s.cluster.Status().AppliedIndex, 1))
	writeJSON(w, out)
}

// handleJoin: POST /v1/cluster/join {"addresses": [...]}.
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req client.JoinRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Addresses) == 0 || len(req.Addresses) > MaxJoinAddresses {
		writeError(w, invalid("addresses", "give 1-%d gossip addresses (host:port)", MaxJoinAddresses))
		return
	}
	for i, a := range req.Addresses {
		if err := validateHostPort(fmt.Sprintf("addresses[%d]", i), a); err != nil {
			writeError(w, err)
			return
		}
	}
	n, err := s.cluster.Join(req.Addresses)
	if errors.Is(err, fsm.ErrConflict) {
		// Reached, but members of another cluster: joining would merge
		// two catalogs (cluster/clusterid.go).
		writeError(w, err)
		return
	}
	if err != nil {
		writeError(w, &statusError{http.StatusBadGateway, "join_failed", err.Error()})
		return
	}
	s.auditJoin(r, req.Addresses, n)
	writeJSON(w, client.JoinResult{Joined: n})
}

// handleLeave: POST /v1/cluster/leave. The node leaves gracefully and then
// shuts down.
func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) {
	node := s.cluster.Status().Node // named in the answer: which node left
	if err := s.cluster.Leave(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, client.LeaveResult{Left: true, Node: node})
}

// handleRemovePeer: DELETE /v1/cluster/peers/{id}. The ID is taken as it
// is, not held to the rule of node names: a server named before the rule
// (or by an older release) must still be removable by hand. Only its length
// and its characters are checked (validatePeerRef); a server whose ID holds
// control characters is removed by its address (handleRemovePeerByAddress).
func (s *Server) handleRemovePeer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validatePeerRef("id", id); err != nil {
		writeError(w, err)
		return
	}
	// The optional body first, before anything is done: see
	// handleDeregister.
	if err := s.decodeOptionalBody(w, r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	if err := s.cluster.RemovePeer(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, client.RemovePeerResult{Removed: true, ID: id})
}

// handleRemovePeerByAddress: DELETE /v1/cluster/peers?address=ADDR removes
// the server whose cluster address is ADDR, whatever its ID, and names it in
// the answer (JSON escapes its control characters).
func (s *Server) handleRemovePeerByAddress(w http.ResponseWriter, r *http.Request) {
	q := queryOf(r)
	if _, ok := q["address"]; !ok {
		writeError(w, invalid("address", "is required (DELETE /v1/cluster/peers?address=HOST:PORT, or /v1/cluster/peers/ID)"))
		return
	}
	addr := q.Get("address")
	if err := validatePeerRef("address", addr); err != nil {
		writeError(w, err)
		return
	}
	if err := s.decodeOptionalBody(w, r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	id, err := s.cluster.RemovePeerByAddress(r.Context(), addr)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, client.RemovePeerResult{Removed: true, ID: id, Address: addr})
}

// handleHealthz: GET /healthz, liveness: the process serves HTTP.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]string{"status": "ok"})
}

// handleReadyz: GET /readyz, readiness: a leader is known and this node
// heard from it recently (or is it).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if !s.cluster.KnownLeader() {
		writeError(w, &statusError{http.StatusServiceUnavailable, "no_leader", "no leader known"})
		return
	}
	if lc := s.cluster.LastContact(); lc > s.cfg.ReadyMaxStale {
		writeError(w, &statusError{http.StatusServiceUnavailable, "stale", fmt.Sprintf("no contact with the leader for %s", lc.Round(1e6))})
		return
	}
	if sr, ok := s.cluster.(StallReporter); ok {
		if stalled, msg := sr.ReplicationStalled(); stalled {
			writeError(w, &statusError{http.StatusServiceUnavailable, "replication_stalled", msg})
			return
		}
	}
	writeJSON(w, map[string]string{"status": "ready"})
}
