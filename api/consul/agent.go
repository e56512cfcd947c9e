package consul

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/beaconhq/beacon/api"
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
	idx, insts := s.agentInstances()
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
	idx, insts := s.agentInstances()
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

// agentInstances are this agent's services as Consul sees them: one
// instance per service ID, the newest (newer). Consul's service IDs are
// unique per agent and a registration replaces one of the same ID under
// another name (handleAgentRegister); an agent may still hold two made
// before that rule, and every endpoint then takes the same one.
func (s *Server) agentInstances() (uint64, []*fsm.Instance) {
	idx, local := s.localInstances()
	byID := make(map[string]*fsm.Instance, len(local))
	out := make([]*fsm.Instance, 0, len(local))
	for _, inst := range local {
		if prev, ok := byID[inst.ID]; !ok || newer(inst, prev) {
			byID[inst.ID] = inst
		}
	}
	for _, inst := range local {
		if byID[inst.ID] == inst {
			out = append(out, inst)
		}
	}
	return idx, out
}

// newer reports whether a was registered after b (the same index: members
// of one group entry, ordered by service name so that the pick is stable).
func newer(a, b *fsm.Instance) bool {
	if a.CreateIndex != b.CreateIndex {
		return a.CreateIndex > b.CreateIndex
	}
	return a.Service > b.Service
}

// localWithID are this agent's instances with the service ID id.
func (s *Server) localWithID(id string) []*fsm.Instance {
	_, local := s.localInstances()
	var out []*fsm.Instance
	for _, inst := range local {
		if inst.ID == id {
			out = append(out, inst)
		}
	}
	return out
}

// findInstance finds the instance a Consul service ID names: this agent's
// (the one agentInstances lists), else (a client whose requests reach
// another agent, e.g. through a load balancer) the only instance in the
// catalog with that ID.
func (s *Server) findInstance(id string) *fsm.Instance {
	if id == "" {
		return nil
	}
	var found *fsm.Instance
	for _, inst := range s.localWithID(id) {
		if found == nil || newer(inst, found) {
			found = inst
		}
	}
	if found != nil {
		return found
	}
	_, all := s.store.Instances(nil)
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

// errAmbiguousCheck answers a check ID that names checks of several
// instances, none of them this agent's.
func errAmbiguousCheck(id string) error {
	return api.StatusError(http.StatusConflict, "ambiguous_check",
		"check ID "+quote(id)+" names checks of several instances, none registered through this agent: send the update to the agent that registered it, or use service:<service id>")
}

// findCheck finds the Beacon check a Consul check ID names: service:<id>
// and service:<id>:N on the instance <id> (findInstance); a full Beacon
// check ID (SERVICE:INSTANCE:NAME); or a check named id of this agent's
// instances, else of the one instance in the catalog that has one (a
// client behind a load balancer, as for service IDs). It returns nil, nil
// for none and errAmbiguousCheck for several.
func (s *Server) findCheck(id string) (*fsm.Check, error) {
	if rest, ok := strings.CutPrefix(id, defaultCheckPrefix); ok {
		iid, _, _ := strings.Cut(rest, ":")
		inst := s.findInstance(iid)
		if inst == nil {
			return nil, nil
		}
		name, ok := checkName(id, iid)
		if !ok {
			return nil, nil
		}
		return s.store.Check(nil, fsm.CheckID(inst.Service, inst.ID, name)), nil
	}
	if strings.Count(id, ":") == 2 {
		return s.store.Check(nil, id), nil
	}
	_, local := s.agentInstances()
	if c := s.checkNamed(local, id); c != nil {
		return c, nil
	}
	_, all := s.store.Instances(nil)
	var found *fsm.Check
	for _, inst := range all {
		if c := s.store.Check(nil, fsm.CheckID(inst.Service, inst.ID, id)); c != nil {
			if found != nil {
				return nil, errAmbiguousCheck(id)
			}
			found = c
		}
	}
	return found, nil
}

// checkNamed is the first check named name of insts.
func (s *Server) checkNamed(insts []*fsm.Instance, name string) *fsm.Check {
	for _, inst := range insts {
		if c := s.store.Check(nil, fsm.CheckID(inst.Service, inst.ID, name)); c != nil {
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
