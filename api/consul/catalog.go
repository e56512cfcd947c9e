package consul

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/fsm"
)

// Consul's catalog writes: PUT /v1/catalog/register and
// /v1/catalog/deregister (docs/consul.md, "External nodes").
//
// A node named in them is either a cluster member (a Beacon agent, whose
// record the leader keeps from gossip) or an external node: a host without
// an agent, such as a database or a SaaS endpoint, that the registration
// itself creates (fsm.RoleExternal). A registration may put a service on a
// member, as before, but not change the member's record; it never creates
// an external node under a member's name.

// reservedMetaPrefix starts the node meta keys Beacon sets itself
// (beacon-role), which an external node may not carry.
const reservedMetaPrefix = "beacon-"

// memberHost returns the host of the cluster member called name, if there
// is one: the catalog's record, else gossip's (a member the leader has not
// written to the catalog yet), else this agent.
func (s *Server) memberHost(name string, rec *fsm.Node) (string, bool) {
	if rec != nil && !rec.External() {
		return hostOf(rec.Address), true
	}
	for _, m := range s.cluster.Members() {
		if m.Name == name {
			return hostOf(m.HTTPAddr), true
		}
	}
	if name == s.cfg.NodeName {
		return s.cfg.NodeAddress, true
	}
	return "", false
}

// authorizeNode checks that the request may change or remove node: write
// access to every service with an instance on it and to extra (a service
// being registered there), or the management token for a node with none.
func (s *Server) authorizeNode(r *http.Request, node, extra string) error {
	_, insts := s.store.NodeInstances(nil, node)
	services := map[string]bool{}
	if extra != "" {
		services[extra] = true
	}
	for _, inst := range insts {
		services[inst.Service] = true
	}
	if len(services) == 0 {
		return s.authorize(r, api.AccessManagement, "")
	}
	for svc := range services {
		if err := s.authorizeWrite(r, svc); err != nil {
			return err
		}
	}
	return nil
}

// writeTrue answers a catalog write as Consul does: true.
func writeTrue(w http.ResponseWriter, idx uint64) {
	w.Header().Set(HeaderIndex, fmt.Sprint(max(idx, 1)))
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("true"))
}

// handleCatalogRegister: PUT /v1/catalog/register. On an external node it
// creates or updates the node (Address, TaggedAddresses, NodeMeta) and
// registers the Service, if any, on it, in one Raft entry. On a member it
// registers the Service only, and refuses (409) to change the member's
// address or metadata.
func (s *Server) handleCatalogRegister(w http.ResponseWriter, r *http.Request, q url.Values) {
	var cr CatalogRegistration
	if err := s.decode(w, r, &cr, false); err != nil {
		writeError(w, err)
		return
	}
	if err := s.validateCatalogNode(&cr); err != nil {
		writeError(w, err)
		return
	}
	reg, err := catalogService(&cr)
	if err != nil {
		writeError(w, err)
		return
	}
	rec := s.store.Node(cr.Node)
	if host, ok := s.memberHost(cr.Node, rec); ok {
		s.registerOnMember(w, r, &cr, reg, host)
		return
	}
	if cr.Address == "" && (rec == nil || !cr.SkipNodeUpdate) {
		// As in Consul: only SkipNodeUpdate, on a node that exists, does
		// without.
		writeError(w, invalid("Address", "is required: node %s is not a Beacon agent, so the registration creates or updates it as an external node at that address (SkipNodeUpdate keeps a registered node as it is)", quote(cr.Node)))
		return
	}
	now := time.Now()
	creq := &fsm.CatalogRegisterRequest{
		Node: cr.Node, Address: cr.Address, TaggedAddresses: cr.TaggedAddresses, Meta: cr.NodeMeta,
		SkipNodeUpdate: cr.SkipNodeUpdate && rec != nil, Time: now.UnixNano(),
	}
	if creq.SkipNodeUpdate {
		creq.Address, creq.TaggedAddresses, creq.Meta = rec.Address, nil, nil
	}
	nodeChanges := rec == nil || (!creq.SkipNodeUpdate && (rec.Address != creq.Address ||
		!maps.Equal(rec.TaggedAddresses, creq.TaggedAddresses) || !maps.Equal(rec.Meta, creq.Meta)))
	service := ""
	if reg != nil {
		service = reg.Name
	}
	switch {
	case nodeChanges:
		err = s.authorizeNode(r, cr.Node, service)
	case reg != nil:
		err = s.authorizeWrite(r, service)
	default:
		err = s.authorizeNode(r, cr.Node, "")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if reg != nil {
		if reg.Address == "" {
			reg.Address = creq.Address
		}
		if creq.Service, err = s.buildRegister(r, reg, cr.Node, now); err != nil {
			writeError(w, err)
			return
		}
	}
	idx, err := s.apply(r, fsm.CatalogRegisterType, creq)
	if err != nil {
		writeError(w, err)
		return
	}
	writeTrue(w, idx)
}

// validateCatalogNode checks the node part of a catalog registration:
// the node's name (Beacon's rule of node names, fsm.ValidateName), its
// address, tagged addresses and meta (the limits of an instance's meta).
func (s *Server) validateCatalogNode(cr *CatalogRegistration) error {
	switch {
	case cr.Node == "":
		return invalid("Node", "is required")
	case cr.Namespace != "" && cr.Namespace != "default":
		return invalid("Namespace", "Beacon has one namespace, \"default\"")
	case cr.Partition != "" && cr.Partition != "default":
		return invalid("Partition", "Beacon has one partition, \"default\"")
	case cr.Datacenter != "" && cr.Datacenter != s.cfg.Datacenter:
		return api.StatusError(http.StatusBadRequest, "unknown_datacenter",
			"No path to datacenter: this cluster is datacenter "+quote(s.cfg.Datacenter)+", not "+quote(cr.Datacenter))
	}
	if err := api.ValidateID("Node", cr.Node); err != nil {
		return err
	}
	if cr.Node == externalNode {
		return invalid("Node", "%q is reserved: it is the node of the instances Beacon's own API registers without one", externalNode)
	}
	if cr.Address != "" {
		if err := api.ValidateHost("Address", cr.Address); err != nil {
			return err
		}
	}
	if err := api.ValidateMeta("TaggedAddresses", cr.TaggedAddresses); err != nil {
		return err
	}
	for k, v := range cr.TaggedAddresses {
		if err := api.ValidateHost("TaggedAddresses."+k, v); err != nil {
			return err
		}
	}
	if err := api.ValidateMeta("NodeMeta", cr.NodeMeta); err != nil {
		return err
	}
	for k := range cr.NodeMeta {
		if strings.HasPrefix(k, reservedMetaPrefix) {
			return invalid("NodeMeta", "key %q: the prefix %q is reserved for the meta Beacon sets", k, reservedMetaPrefix)
		}
	}
	return nil
}

// catalogService turns the Service and checks of a catalog registration
// into an agent registration (nil without a Service). Checks must belong
// to the Service and have an HTTP, TCP or GRPC definition: Beacon has no
// node checks (serfHealth is derived) and runs every check itself.
func catalogService(cr *CatalogRegistration) (*Registration, error) {
	checks := cr.Checks
	if cr.Check != nil {
		checks = append([]*CatalogCheck{cr.Check}, checks...)
	}
	if cr.Service == nil {
		for i, c := range checks {
			if c != nil && c.CheckID != serfCheckID {
				return nil, invalid(fmt.Sprintf("Checks[%d]", i), "a check is registered with its Service, in the same registration")
			}
		}
		return nil, nil
	}
	sv := cr.Service
	reg := &Registration{
		Kind: sv.Kind, ID: sv.ID, Name: sv.Service, Tags: sv.Tags, Port: sv.Port, Address: sv.Address,
		Meta: sv.Meta, Weights: sv.Weights, Namespace: sv.Namespace, Partition: sv.Partition,
	}
	for i, c := range checks {
		if c == nil {
			continue
		}
		field := fmt.Sprintf("Checks[%d]", i)
		if c.ServiceID == "" && c.CheckID != serfCheckID {
			return nil, invalid(field+".ServiceID", "node checks are not supported: Beacon derives a member's health from gossip (serfHealth), and an external node has no checks of its own")
		}
		if c.CheckID == serfCheckID {
			continue
		}
		d := c.Definition
		if d == nil || (d.HTTP == "" && d.TCP == "" && d.GRPC == "") {
			return nil, invalid(field+".Definition", "a check without an HTTP, TCP or GRPC definition is not supported: Beacon runs every check itself")
		}
		interval, timeout := d.Interval, d.Timeout
		if interval == 0 {
			interval = d.IntervalDuration
		}
		if timeout == 0 {
			timeout = d.TimeoutDuration
		}
		reg.Checks = append(reg.Checks, &CheckRegistration{
			CheckID: c.CheckID, Name: c.Name, Status: c.Status, HTTP: d.HTTP, Header: d.Header, Method: d.Method,
			Body: d.Body, TLSSkipVerify: d.TLSSkipVerify, TCP: d.TCP, GRPC: d.GRPC, Interval: interval, Timeout: timeout,
			DeregisterCriticalServiceAfter: d.DeregisterCriticalServiceAfter,
		})
	}
	return reg, nil
}

// registerOnMember registers a catalog registration's service on a
// cluster member, whose record gossip owns: a registration that would
// change the member's address, tagged addresses or meta is refused (409
// member_node) rather than applied to part of the record, unless it sets
// SkipNodeUpdate. Consul would update the node; a Beacon agent's address
// is what the cluster reaches it at.
func (s *Server) registerOnMember(w http.ResponseWriter, r *http.Request, cr *CatalogRegistration, reg *Registration, host string) {
	if !cr.SkipNodeUpdate {
		changes := ""
		switch {
		case cr.Address != "" && cr.Address != host:
			changes = "its address " + quote(host)
		case len(cr.NodeMeta) > 0:
			changes = "its meta"
		}
		for k, v := range cr.TaggedAddresses {
			if changes == "" && v != host {
				changes = "its tagged address " + quote(k)
			}
		}
		if changes != "" {
			writeError(w, api.StatusError(http.StatusConflict, "member_node",
				"node "+quote(cr.Node)+" is a Beacon agent: a catalog registration cannot change "+changes+
					" (gossip keeps it); register the service without Address, TaggedAddresses and NodeMeta, or with SkipNodeUpdate, or use a node name of its own"))
			return
		}
	}
	if reg == nil {
		writeTrue(w, s.store.LastIndex()) // nothing to change
		return
	}
	if err := s.authorizeWrite(r, reg.Name); err != nil {
		writeError(w, err)
		return
	}
	if reg.Address == "" {
		reg.Address = host
	}
	req, err := s.buildRegister(r, reg, cr.Node, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	idx, err := s.apply(r, fsm.RegisterType, req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeTrue(w, idx)
}

// handleCatalogDeregister: PUT /v1/catalog/deregister. As in Consul: with
// ServiceID, that instance of the node goes; else with CheckID, that check;
// else the node with everything on it, which only an external node may
// (a member leaves through gossip: leave or force-leave, 409 otherwise).
// What is not there is no error.
func (s *Server) handleCatalogDeregister(w http.ResponseWriter, r *http.Request, q url.Values) {
	var cd CatalogDeregistration
	if err := s.decode(w, r, &cd, false); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case cd.Node == "":
		writeError(w, invalid("Node", "is required"))
		return
	case cd.Namespace != "" && cd.Namespace != "default":
		writeError(w, invalid("Namespace", "Beacon has one namespace, \"default\""))
		return
	case cd.Partition != "" && cd.Partition != "default":
		writeError(w, invalid("Partition", "Beacon has one partition, \"default\""))
		return
	}
	if err := api.ValidateID("Node", cd.Node); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case cd.ServiceID != "":
		s.deregisterService(w, r, cd.Node, cd.ServiceID)
	case cd.CheckID != "":
		s.deregisterCheck(w, r, cd.Node, cd.CheckID)
	default:
		s.deregisterNode(w, r, cd.Node)
	}
}

func (s *Server) deregisterService(w http.ResponseWriter, r *http.Request, node, id string) {
	_, insts := s.store.NodeInstances(nil, node)
	var idx uint64
	for _, inst := range insts {
		if inst.ID != id {
			continue
		}
		if err := s.authorizeWrite(r, inst.Service); err != nil {
			writeError(w, err)
			return
		}
		var err error
		if idx, err = s.apply(r, fsm.DeregisterType, &fsm.DeregisterRequest{Service: inst.Service, ID: inst.ID, Time: time.Now().UnixNano()}); err != nil {
			writeError(w, err)
			return
		}
	}
	writeTrue(w, max(idx, s.store.LastIndex()))
}

// deregisterCheck removes the check with Consul ID id from the instance on
// node that has it. Synthetic checks (serfHealth, maintenance, draining)
// are not stored, so there is nothing to remove.
func (s *Server) deregisterCheck(w http.ResponseWriter, r *http.Request, node, id string) {
	_, insts := s.store.NodeInstances(nil, node)
	var idx uint64
	for _, inst := range insts {
		_, checks := s.store.CurrentInstance(inst.Service, inst.ID)
		for _, c := range checks {
			if consulCheckID(c) != id {
				continue
			}
			if err := s.authorizeWrite(r, inst.Service); err != nil {
				writeError(w, err)
				return
			}
			var err error
			if idx, err = s.apply(r, fsm.CatalogDeregisterType, &fsm.CatalogDeregisterRequest{Node: node, Check: c.ID, Time: time.Now().UnixNano()}); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	writeTrue(w, max(idx, s.store.LastIndex()))
}

func (s *Server) deregisterNode(w http.ResponseWriter, r *http.Request, node string) {
	rec := s.store.Node(node)
	if _, ok := s.memberHost(node, rec); ok {
		writeError(w, api.StatusError(http.StatusConflict, "member_node",
			"node "+quote(node)+" is a Beacon agent: it leaves the cluster through PUT /v1/agent/leave on it or /v1/agent/force-leave/"+node+
				", not through the catalog; deregister its services one by one with ServiceID"))
		return
	}
	_, insts := s.store.NodeInstances(nil, node)
	if rec == nil && len(insts) == 0 {
		writeTrue(w, s.store.LastIndex())
		return
	}
	if err := s.authorizeNode(r, node, ""); err != nil {
		writeError(w, err)
		return
	}
	idx, err := s.apply(r, fsm.CatalogDeregisterType, &fsm.CatalogDeregisterRequest{Node: node, Time: time.Now().UnixNano()})
	if err != nil {
		writeError(w, err)
		return
	}
	writeTrue(w, idx)
}
