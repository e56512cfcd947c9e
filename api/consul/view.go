package consul

import (
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// How Beacon's catalog looks in Consul's terms (docs/consul.md, "Mapping").

// externalNode is the Consul node of instances registered without a node
// (through Beacon's own API without "node"): they run beside no agent.
const externalNode = "beacon-external"

// Synthetic check IDs.
const (
	serfCheckID        = "serfHealth"
	maintCheckPrefix   = "_service_maintenance:"
	nodeMaintCheckID   = "_node_maintenance"
	drainCheckPrefix   = "_service_drain:"
	defaultCheckPrefix = "service:"
)

// checkName is the Beacon check name a Consul check ID takes on an
// instance: Consul's default IDs service:<id> and service:<id>:N become
// "service" and "service-N"; any other ID is kept as the name (and must
// then be a valid Beacon check name).
func checkName(consulID, instance string) (string, bool) {
	rest, ok := strings.CutPrefix(consulID, defaultCheckPrefix+instance)
	switch {
	case ok && rest == "":
		return "service", true
	case ok && strings.HasPrefix(rest, ":"):
		n, err := strconv.Atoi(rest[1:])
		if err != nil || n < 1 || strconv.Itoa(n) != rest[1:] {
			return "", false
		}
		return "service-" + rest[1:], true
	}
	return consulID, !strings.Contains(consulID, ":")
}

// consulCheckID is the inverse of checkName: the Consul ID of a Beacon
// check. Checks named otherwise (registered through Consul with their own
// CheckID, or through Beacon's API) keep their name when it is theirs on
// the node, and otherwise show their full Beacon ID.
func consulCheckID(c *fsm.Check) string {
	switch {
	case c.Name == "service":
		return defaultCheckPrefix + c.Instance
	case strings.HasPrefix(c.Name, "service-"):
		if n, err := strconv.Atoi(c.Name[len("service-"):]); err == nil && n > 0 {
			return defaultCheckPrefix + c.Instance + ":" + c.Name[len("service-"):]
		}
	}
	return c.Name
}

// nodeName is the Consul node of an instance.
func nodeName(inst *fsm.Instance) string {
	if inst.Node == "" {
		return externalNode
	}
	return inst.Node
}

// nodeID is a stable UUID-shaped ID for a node name (Consul nodes have one).
func nodeID(name string) string {
	h := sha256.Sum256([]byte("beacon-node/" + name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// hostOf drops the port of an address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// nodeView is the Consul node of a Beacon node record: a member (its
// HTTP address's host, beacon-role meta) or an external node (as
// registered).
func (s *Server) nodeView(n *fsm.Node) *Node {
	if n.External() {
		tagged, meta := n.TaggedAddresses, n.Meta
		if tagged == nil {
			tagged = map[string]string{}
		}
		if meta == nil {
			meta = map[string]string{}
		}
		return &Node{
			ID: nodeID(n.Name), Node: n.Name, Address: n.Address, Datacenter: s.cfg.Datacenter,
			TaggedAddresses: tagged, Meta: meta, CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
		}
	}
	host := hostOf(n.Address)
	return &Node{
		ID: nodeID(n.Name), Node: n.Name, Address: host, Datacenter: s.cfg.Datacenter,
		TaggedAddresses: map[string]string{"lan": host, "wan": host},
		Meta:            map[string]string{"beacon-role": n.Role},
		CreateIndex:     n.CreateIndex, ModifyIndex: n.ModifyIndex,
	}
}

// nodeOf returns the Consul node an instance runs on: the catalog's record
// of its agent, or a node made from the instance (no agent, or one the
// catalog no longer knows).
func (s *Server) nodeOf(inst *fsm.Instance, n *fsm.Node) *Node {
	if n != nil {
		return s.nodeView(n)
	}
	name := nodeName(inst)
	return &Node{
		ID: nodeID(name), Node: name, Address: inst.Address, Datacenter: s.cfg.Datacenter,
		TaggedAddresses: map[string]string{"lan": inst.Address, "wan": inst.Address},
		Meta:            map[string]string{},
	}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) serviceView(inst *fsm.Instance) *AgentService {
	meta := inst.MetaMap()
	if meta == nil {
		meta = map[string]string{}
	}
	return &AgentService{
		ID: inst.ID, Service: inst.Service, Tags: orEmpty(inst.Tags), Meta: meta,
		Port: inst.Port, Address: inst.Address,
		Weights:     Weights{Passing: max(inst.Weight, 1), Warning: 1},
		CreateIndex: inst.CreateIndex, ModifyIndex: inst.ModifyIndex, Datacenter: s.cfg.Datacenter,
	}
}

func (s *Server) catalogView(inst *fsm.Instance, node *Node) *CatalogService {
	svc := s.serviceView(inst)
	return &CatalogService{
		ID: node.ID, Node: node.Node, Address: node.Address, Datacenter: s.cfg.Datacenter,
		TaggedAddresses: node.TaggedAddresses, NodeMeta: node.Meta,
		ServiceID: svc.ID, ServiceName: svc.Service, ServiceAddress: svc.Address,
		ServiceTags: svc.Tags, ServiceMeta: svc.Meta, ServicePort: svc.Port, ServiceWeights: svc.Weights,
		CreateIndex: inst.CreateIndex, ModifyIndex: inst.ModifyIndex,
	}
}

func durationString(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Duration(ns).String()
}

// checkView is a Beacon check in Consul's form.
func checkView(c *fsm.Check, inst *fsm.Instance) *HealthCheck {
	name := c.Name
	if id := consulCheckID(c); strings.HasPrefix(id, defaultCheckPrefix) {
		name = "Service '" + c.Service + "' check"
	}
	notes := ""
	if c.Flapping {
		notes = "flapping: counted as critical until " + time.Unix(0, c.FlapUntil).UTC().Format(time.RFC3339)
	}
	def := CheckDefinition{
		Interval: durationString(c.Interval), Timeout: durationString(c.Timeout),
		DeregisterCriticalServiceAfter: durationString(c.DeregisterCriticalAfter),
	}
	switch c.Type {
	case fsm.CheckHTTP:
		def.HTTP, def.Header, def.Method, def.TLSSkipVerify = c.Target, c.Header, c.Method, c.TLSSkipVerify
	case fsm.CheckTCP:
		def.TCP = c.Target
	case fsm.CheckGRPC:
		def.GRPC = c.Target
		if c.GRPCService != "" {
			def.GRPC += "/" + c.GRPCService
		}
	case fsm.CheckTTL:
		def.Interval = ""
	}
	return &HealthCheck{
		Node: nodeName(inst), CheckID: consulCheckID(c), Name: name, Status: string(c.Effective()),
		Notes: notes, Output: c.Output, ServiceID: inst.ID, ServiceName: inst.Service,
		ServiceTags: orEmpty(inst.Tags), Type: string(c.Type), Definition: def,
		CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	}
}

// syntheticChecks are the checks Consul would show for an instance's
// maintenance (_service_maintenance:<id>) and, Beacon's own, its draining
// (_service_drain:<id>): both critical, so ?passing drops the instance.
func syntheticChecks(inst *fsm.Instance) []*HealthCheck {
	var out []*HealthCheck
	if m := inst.Maintenance; m != nil && strings.HasPrefix(m.Reason, nodeMaintPrefix) {
		reason := strings.TrimPrefix(m.Reason, nodeMaintPrefix)
		if reason == "" {
			reason = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
		}
		out = append(out, &HealthCheck{
			Node: nodeName(inst), CheckID: nodeMaintCheckID, Name: "Node Maintenance Mode",
			Status: "critical", Notes: reason, ServiceTags: []string{}, Type: "maintenance",
			CreateIndex: inst.ModifyIndex, ModifyIndex: inst.ModifyIndex,
		})
	} else if m != nil {
		reason := m.Reason
		if reason == "" {
			reason = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
		}
		out = append(out, &HealthCheck{
			Node: nodeName(inst), CheckID: maintCheckPrefix + inst.ID, Name: "Service Maintenance Mode",
			Status: "critical", Notes: reason, ServiceID: inst.ID, ServiceName: inst.Service,
			ServiceTags: orEmpty(inst.Tags), Type: "maintenance",
			CreateIndex: inst.ModifyIndex, ModifyIndex: inst.ModifyIndex,
		})
	}
	if d := inst.Drain; d != nil {
		out = append(out, &HealthCheck{
			Node: nodeName(inst), CheckID: drainCheckPrefix + inst.ID, Name: "Service Draining",
			Status: "critical", Notes: "draining: deregistered at " + time.Unix(0, d.Deadline).UTC().Format(time.RFC3339),
			ServiceID: inst.ID, ServiceName: inst.Service, ServiceTags: orEmpty(inst.Tags), Type: "drain",
			CreateIndex: inst.ModifyIndex, ModifyIndex: inst.ModifyIndex,
		})
	}
	return out
}

// hasSerfCheck reports whether an instance's node shows serfHealth: a
// cluster member's does (n, its record), and any node an instance was
// failed on; an external node, or a node the catalog does not know, has
// no agent for gossip to report on.
func hasSerfCheck(inst *fsm.Instance, n *fsm.Node) bool {
	return inst.NodeFailed || (inst.Node != "" && n != nil && !n.External())
}

// serfCheck is the node check Consul derives from gossip: passing while
// the agent is alive. Beacon derives it from the catalog's node record,
// which the leader keeps in step with gossip; an instance the catalog marks
// NodeFailed makes it critical too.
func serfCheck(node string, n *fsm.Node, nodeFailed bool) *HealthCheck {
	hc := &HealthCheck{
		Node: node, CheckID: serfCheckID, Name: "Serf Health Status", Status: "passing",
		Output: "Agent alive and reachable", ServiceTags: []string{},
	}
	if n != nil {
		hc.CreateIndex, hc.ModifyIndex = n.CreateIndex, n.ModifyIndex
		if n.Status != fsm.NodeAlive {
			hc.Status, hc.Output = "critical", "Agent not live or unreachable"
		}
	}
	if nodeFailed {
		hc.Status, hc.Output = "critical", "Agent not live or unreachable"
	}
	return hc
}
