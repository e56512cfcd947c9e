package consul

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/beaconhq/beacon/fsm"
)

// handleAgentSelf: GET /v1/agent/self, what clients read to learn the
// datacenter and node name (Prometheus reads Config.Datacenter).
func (s *Server) handleAgentSelf(w http.ResponseWriter, r *http.Request, q url.Values) {
	self := s.selfMember()
	s.simpleRead(w, s.store.LastIndex(), map[string]any{
		"Config": map[string]any{
			"Datacenter": s.cfg.Datacenter, "PrimaryDatacenter": s.cfg.Datacenter,
			"NodeName": s.cfg.NodeName, "NodeID": nodeID(s.cfg.NodeName),
			"Server": true, "Revision": "beacon", "Version": s.cfg.Version,
		},
		"Member": self,
		"Meta":   map[string]string{},
		"Stats":  map[string]any{},
	})
}

// selfMember is this agent's gossip member, or a minimal one.
func (s *Server) selfMember() *AgentMember {
	for _, m := range s.members() {
		if m.Name == s.cfg.NodeName {
			return m
		}
	}
	return &AgentMember{Name: s.cfg.NodeName, Addr: s.cfg.NodeAddress, Tags: map[string]string{}, Status: memberAlive}
}

// members are the gossip members in Consul's form.
func (s *Server) members() []*AgentMember {
	ms := s.cluster.Members()
	out := make([]*AgentMember, 0, len(ms))
	for _, m := range ms {
		host, port, _ := net.SplitHostPort(m.GossipAddr)
		p, _ := strconv.ParseUint(port, 10, 16)
		status := memberAlive
		switch fsm.NodeStatus(m.Status) {
		case fsm.NodeFailed:
			status = memberFailed
		case fsm.NodeLeft:
			status = memberLeft
		}
		if m.Status == "leaving" {
			status = memberLeaving
		}
		out = append(out, &AgentMember{
			Name: m.Name, Addr: host, Port: uint16(p), Status: status,
			Tags: map[string]string{"role": "consul", "dc": s.cfg.Datacenter, "beacon-role": m.Role,
				"build": m.Version, "http": m.HTTPAddr},
			ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4,
		})
	}
	return out
}

// handleAgentMembers: GET /v1/agent/members (?wan=1 lists the same LAN).
func (s *Server) handleAgentMembers(w http.ResponseWriter, r *http.Request, q url.Values) {
	s.simpleRead(w, s.store.LastIndex(), s.members())
}

// localInstances are the instances this agent registered (its agent-local
// services: Node is this agent).
func (s *Server) localInstances() (uint64, []*fsm.Instance) {
	return s.store.NodeInstances(nil, s.cfg.NodeName)
}

// handleAgentServices: GET /v1/agent/services, by service ID.
func (s *Server) handleAgentServices(w http.ResponseWriter, r *http.Request, q url.Values) {
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	idx, insts := s.localInstances()
	svcs := make([]*AgentService, 0, len(insts))
	for _, inst := range insts {
		svcs = append(svcs, s.serviceView(inst))
	}
	if svcs, err = matching(expr, svcs); err != nil {
		writeError(w, err)
		return
	}
	out := make(map[string]*AgentService, len(svcs))
	for _, sv := range svcs {
		out[sv.ID] = sv
	}
	s.simpleRead(w, idx, out)
}

// handleAgentService: GET /v1/agent/service/:id.
func (s *Server) handleAgentService(w http.ResponseWriter, r *http.Request, q url.Values) {
	inst := s.findInstance(r.PathValue("id"))
	if inst == nil {
		writeError(w, notFound("unknown service ID: "+quote(r.PathValue("id"))))
		return
	}
	s.simpleRead(w, inst.ModifyIndex, s.serviceView(inst))
}

// handleAgentChecks: GET /v1/agent/checks, by check ID.
func (s *Server) handleAgentChecks(w http.ResponseWriter, r *http.Request, q url.Values) {
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	idx, insts := s.localInstances()
	var hcs []*HealthCheck
	for _, inst := range insts {
		_, checks := s.store.CurrentInstance(inst.Service, inst.ID)
		hcs = append(hcs, instanceChecks(inst, checks)...)
	}
	if hcs, err = matching(expr, hcs); err != nil {
		writeError(w, err)
		return
	}
	out := make(map[string]*HealthCheck, len(hcs))
	for _, hc := range hcs {
		out[hc.CheckID] = hc
	}
	s.simpleRead(w, idx, out)
}

// findInstance finds the instance a Consul service ID names: one this
// agent registered, else (a client whose requests reach another agent,
// e.g. through a load balancer) the only instance in the catalog with that
// ID.
func (s *Server) findInstance(id string) *fsm.Instance {
	if id == "" {
		return nil
	}
	_, local := s.localInstances()
	for _, inst := range local {
		if inst.ID == id {
			return inst
		}
	}
	_, all := s.store.Instances(nil)
	var found *fsm.Instance
	for _, inst := range all {
		if inst.ID == id {
			if found != nil {
				return nil // ambiguous: not ours to pick
			}
			found = inst
		}
	}
	return found
}

// findCheck finds the Beacon check a Consul check ID names: service:<id>
// and service:<id>:N on the instance <id>; a full Beacon check ID
// (SERVICE:INSTANCE:NAME); or a check of this agent's instances named id.
func (s *Server) findCheck(id string) *fsm.Check {
	if rest, ok := strings.CutPrefix(id, defaultCheckPrefix); ok {
		iid, _, _ := strings.Cut(rest, ":")
		inst := s.findInstance(iid)
		if inst == nil {
			return nil
		}
		name, ok := checkName(id, iid)
		if !ok {
			return nil
		}
		return s.store.Check(nil, fsm.CheckID(inst.Service, inst.ID, name))
	}
	if strings.Count(id, ":") == 2 {
		return s.store.Check(nil, id)
	}
	_, local := s.localInstances()
	for _, inst := range local {
		if c := s.store.Check(nil, fsm.CheckID(inst.Service, inst.ID, id)); c != nil {
			return c
		}
	}
	return nil
}

// handleStatusLeader: GET /v1/status/leader, the leader's Raft address
// ("" while there is none).
func (s *Server) handleStatusLeader(w http.ResponseWriter, r *http.Request, q url.Values) {
	st := s.cluster.Status()
	s.simpleRead(w, s.store.LastIndex(), st.LeaderAddr)
}

// handleStatusPeers: GET /v1/status/peers, the Raft servers' addresses.
func (s *Server) handleStatusPeers(w http.ResponseWriter, r *http.Request, q url.Values) {
	st := s.cluster.Status()
	out := make([]string, 0, len(st.Peers))
	for _, p := range st.Peers {
		out = append(out, p.Address)
	}
	s.simpleRead(w, s.store.LastIndex(), out)
}
