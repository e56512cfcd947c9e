package consul

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// serviceRead is one view of a service: its instances, their checks (in
// runs by instance) and the catalog's nodes.
type serviceRead struct {
	idx   uint64
	insts []*fsm.Instance
	runs  []checkRun
	nodes []*fsm.Node
}

// checkRun is the checks of one instance.
type checkRun struct {
	instance string
	checks   []*fsm.Check
}

// checksOf returns the checks of instance id. Runs are found by a linear
// scan: a service has a handful to a few hundred instances, and a map
// would cost more to build than the scans cost.
func (rd *serviceRead) checksOf(id string) []*fsm.Check {
	for i := range rd.runs {
		if rd.runs[i].instance == id {
			return rd.runs[i].checks
		}
	}
	return nil
}

// node returns the catalog's record of a node, or nil.
func (rd *serviceRead) node(name string) *fsm.Node {
	if name == "" {
		return nil
	}
	for _, n := range rd.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// readService reads service with its checks and the nodes, from one view
// (fsm.Store.ServiceHealth). The index is the highest of the service's
// index, its checks' and the nodes table's, so it moves with every change
// the result can show and never goes back.
func (s *Server) readService(ws memdb.WatchSet, service string) serviceRead {
	var rd serviceRead
	var checks []*fsm.Check
	rd.idx, rd.insts, checks, rd.nodes = s.store.ServiceHealth(ws, service)
	if len(checks) > 0 {
		// Checks come ordered by ID (SERVICE:INSTANCE:NAME), so each
		// instance's checks are one run of the slice: no copying.
		rd.runs = make([]checkRun, 0, len(rd.insts))
		start := 0
		for i, c := range checks {
			if i+1 == len(checks) || checks[i+1].Instance != c.Instance {
				rd.runs = append(rd.runs, checkRun{c.Instance, checks[start : i+1 : i+1]})
				start = i + 1
			}
		}
	}
	return rd
}

// instanceFilter is the ?tag (repeatable, all must match), ?passing,
// ?node-meta and ?filter selection of instances.
type instanceFilter struct {
	tags     []string
	passing  bool
	nodeMeta map[string]string
	expr     *filter
}

func parseInstanceFilter(q url.Values) (instanceFilter, error) {
	var f instanceFilter
	f.tags = q["tag"]
	var err error
	if f.passing, err = boolParam(q, "passing"); err != nil {
		return f, err
	}
	if f.nodeMeta, err = parseNodeMeta(q); err != nil {
		return f, err
	}
	f.expr, err = parseFilter(q)
	return f, err
}

func parseNodeMeta(q url.Values) (map[string]string, error) {
	if len(q["node-meta"]) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range q["node-meta"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			return nil, invalid("node-meta", "must be key:value")
		}
		m[k] = v
	}
	return m, nil
}

func metaMatches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// entryPassing reports whether every check of an entry passes, as
// ?passing requires: node alive, no maintenance or draining, and each
// check (a flapping one counts as critical) passing.
func entryPassing(inst *fsm.Instance, checks []*fsm.Check, n *fsm.Node) bool {
	if inst.NodeFailed || inst.Maintenance != nil || inst.Drain != nil || (n != nil && n.Status != fsm.NodeAlive) {
		return false
	}
	for _, c := range checks {
		if c.Effective() != fsm.Passing {
			return false
		}
	}
	return true
}

// entryCache is an instance's encoded health entry with what it was built
// from; it stays valid while the instance (immutable), its checks and its
// node are the same values.
type entryCache struct {
	checks []*fsm.Check
	node   *fsm.Node
	dc     string
	enc    []byte
}

// entry builds the health entry of an instance.
func (s *Server) entry(inst *fsm.Instance, checks []*fsm.Check, rd *serviceRead) *ServiceEntry {
	node := s.nodeOf(inst, rd.node(inst.Node))
	hcs := make([]*HealthCheck, 0, len(checks)+2)
	if inst.Node != "" {
		hcs = append(hcs, serfCheck(node.Node, rd.node(inst.Node), inst.NodeFailed))
	}
	for _, c := range checks {
		hcs = append(hcs, checkView(c, inst))
	}
	hcs = append(hcs, syntheticChecks(inst)...)
	return &ServiceEntry{Node: node, Service: s.serviceView(inst), Checks: hcs}
}

// encodedEntry returns the JSON of an instance's health entry from the
// instance's cache slot, building it when the instance, its checks or its
// node changed.
func (s *Server) encodedEntry(inst *fsm.Instance, checks []*fsm.Check, rd *serviceRead) ([]byte, error) {
	node := rd.node(inst.Node)
	if c, ok := inst.Aux().(*entryCache); ok && c.node == node && c.dc == s.cfg.Datacenter && slices.Equal(c.checks, checks) {
		return c.enc, nil
	}
	enc, err := encode(s.entry(inst, checks, rd))
	if err != nil {
		return nil, err
	}
	inst.StoreAux(&entryCache{checks: checks, node: node, dc: s.cfg.Datacenter, enc: enc})
	return enc, nil
}

// handleHealthService: GET /v1/health/service/:name, the discovery read of
// Prometheus, fabio, consul-template and Spring.
func (s *Server) handleHealthService(w http.ResponseWriter, r *http.Request, q url.Values) {
	name := r.PathValue("name")
	f, err := parseInstanceFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingChunks(w, r, q, func(ws memdb.WatchSet) (uint64, [][]byte, error) {
		rd := s.readService(ws, name)
		// The answer is written from the entries' cached encodings with
		// the brackets and commas between them, never copied whole.
		chunks := make([][]byte, 0, 2*len(rd.insts)+1)
		chunks = append(chunks, openBracket)
		for _, inst := range rd.insts {
			checks := rd.checksOf(inst.ID)
			if !inst.HasTags(f.tags) || (f.passing && !entryPassing(inst, checks, rd.node(inst.Node))) {
				continue
			}
			if f.nodeMeta != nil || f.expr != nil {
				e := s.entry(inst, checks, &rd)
				if !metaMatches(e.Node.Meta, f.nodeMeta) {
					continue
				}
				if ok, err := f.expr.match(e); err != nil {
					return rd.idx, nil, err
				} else if !ok {
					continue
				}
			}
			enc, err := s.encodedEntry(inst, checks, &rd)
			if err != nil {
				return rd.idx, nil, err
			}
			if len(chunks) > 1 {
				chunks = append(chunks, comma)
			}
			chunks = append(chunks, enc)
		}
		return rd.idx, append(chunks, closeBracket), nil
	})
}

var (
	openBracket  = []byte("[")
	closeBracket = []byte("]")
	comma        = []byte(",")
)

// handleCatalogService: GET /v1/catalog/service/:name.
func (s *Server) handleCatalogService(w http.ResponseWriter, r *http.Request, q url.Values) {
	name := r.PathValue("name")
	f, err := parseInstanceFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	f.passing = false // not a catalog parameter
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		rd := s.readService(ws, name)
		out := []*CatalogService{}
		for _, inst := range rd.insts {
			if !inst.HasTags(f.tags) {
				continue
			}
			cs := s.catalogView(inst, s.nodeOf(inst, rd.node(inst.Node)))
			if !metaMatches(cs.NodeMeta, f.nodeMeta) {
				continue
			}
			if ok, err := f.expr.match(cs); err != nil {
				return rd.idx, nil, err
			} else if !ok {
				continue
			}
			out = append(out, cs)
		}
		body, err := encode(out)
		return rd.idx, body, err
	})
}

// handleCatalogServices: GET /v1/catalog/services, service names with the
// union of their instances' tags.
func (s *Server) handleCatalogServices(w http.ResponseWriter, r *http.Request, q url.Values) {
	nodeMeta, err := parseNodeMeta(q)
	if err != nil {
		writeError(w, err)
		return
	}
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		idx, sums, _ := s.store.ServiceSummaries(ws, "", "", 0, nil)
		out := make(map[string][]string, len(sums))
		if nodeMeta == nil && expr == nil {
			for _, sum := range sums {
				out[sum.Name] = orEmpty(sum.Tags)
			}
			body, err := encode(out)
			return idx, body, err
		}
		// A filter selects instances (as catalog/service shows them); a
		// service is listed with the tags of its matching instances.
		_, nodes := s.store.Nodes(ws)
		rd := serviceRead{nodes: nodes}
		_, insts := s.store.Instances(ws)
		tags := map[string]map[string]struct{}{}
		for _, inst := range insts {
			cs := s.catalogView(inst, s.nodeOf(inst, rd.node(inst.Node)))
			if !metaMatches(cs.NodeMeta, nodeMeta) {
				continue
			}
			if ok, err := expr.match(cs); err != nil {
				return idx, nil, err
			} else if !ok {
				continue
			}
			if tags[inst.Service] == nil {
				tags[inst.Service] = map[string]struct{}{}
			}
			for _, t := range inst.Tags {
				tags[inst.Service][t] = struct{}{}
			}
		}
		for svc, ts := range tags {
			l := make([]string, 0, len(ts))
			for t := range ts {
				l = append(l, t)
			}
			sort.Strings(l)
			out[svc] = l
		}
		body, err := encode(out)
		return idx, body, err
	})
}

// nodeList reads the catalog's nodes in Consul's form, by name.
func (s *Server) nodeList(ws memdb.WatchSet) (uint64, []*Node, map[string]*fsm.Node) {
	idx, nodes := s.store.Nodes(ws)
	out := make([]*Node, 0, len(nodes))
	byName := make(map[string]*fsm.Node, len(nodes))
	for _, n := range nodes {
		out = append(out, s.nodeView(n))
		byName[n.Name] = n
	}
	return idx, out, byName
}

// handleCatalogNodes: GET /v1/catalog/nodes.
func (s *Server) handleCatalogNodes(w http.ResponseWriter, r *http.Request, q url.Values) {
	nodeMeta, err := parseNodeMeta(q)
	if err != nil {
		writeError(w, err)
		return
	}
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		idx, nodes, _ := s.nodeList(ws)
		out := make([]*Node, 0, len(nodes))
		for _, n := range nodes {
			if !metaMatches(n.Meta, nodeMeta) {
				continue
			}
			if ok, err := expr.match(n); err != nil {
				return idx, nil, err
			} else if !ok {
				continue
			}
			out = append(out, n)
		}
		body, err := encode(out)
		return idx, body, err
	})
}

// nodeInstances reads the instances registered on a node (its agent-local
// services) with the node record; the index covers both.
func (s *Server) nodeInstances(ws memdb.WatchSet, node string) (uint64, []*fsm.Instance, *fsm.Node) {
	idx, insts := s.store.NodeInstances(ws, node)
	nidx, nodes := s.store.Nodes(ws)
	var rec *fsm.Node
	for _, n := range nodes {
		if n.Name == node {
			rec = n
		}
	}
	return max(idx, nidx), insts, rec
}

// handleCatalogNode: GET /v1/catalog/node/:node, null for an unknown node.
func (s *Server) handleCatalogNode(w http.ResponseWriter, r *http.Request, q url.Values) {
	node := r.PathValue("node")
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		idx, insts, rec := s.nodeInstances(ws, node)
		if rec == nil {
			return idx, []byte("null"), nil
		}
		out := &NodeServices{Node: s.nodeView(rec), Services: map[string]*AgentService{}}
		for _, inst := range insts {
			sv := s.serviceView(inst)
			if ok, err := expr.match(sv); err != nil {
				return idx, nil, err
			} else if ok {
				out.Services[inst.ID] = sv
			}
		}
		body, err := encode(out)
		return idx, body, err
	})
}

// handleCatalogNodeServices: GET /v1/catalog/node-services/:node.
func (s *Server) handleCatalogNodeServices(w http.ResponseWriter, r *http.Request, q url.Values) {
	node := r.PathValue("node")
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		idx, insts, rec := s.nodeInstances(ws, node)
		if rec == nil {
			return idx, []byte("null"), nil
		}
		out := &NodeServiceList{Node: s.nodeView(rec), Services: []*AgentService{}}
		for _, inst := range insts {
			sv := s.serviceView(inst)
			if ok, err := expr.match(sv); err != nil {
				return idx, nil, err
			} else if ok {
				out.Services = append(out.Services, sv)
			}
		}
		body, err := encode(out)
		return idx, body, err
	})
}

// handleDatacenters: GET /v1/catalog/datacenters.
func (s *Server) handleDatacenters(w http.ResponseWriter, r *http.Request, q url.Values) {
	s.simpleRead(w, s.store.LastIndex(), []string{s.cfg.Datacenter})
}

// instanceChecks are every check Consul shows for an instance: its own,
// then maintenance and draining.
func instanceChecks(inst *fsm.Instance, checks []*fsm.Check) []*HealthCheck {
	out := make([]*HealthCheck, 0, len(checks))
	for _, c := range checks {
		out = append(out, checkView(c, inst))
	}
	return append(out, syntheticChecks(inst)...)
}

// writeChecks filters and encodes a list of checks. A node's check shows
// once, however many of its instances carry it (_node_maintenance).
func writeChecks(hcs []*HealthCheck, expr *filter) ([]byte, error) {
	out := make([]*HealthCheck, 0, len(hcs))
	type key struct{ node, id string }
	seen := map[key]bool{}
	for _, hc := range hcs {
		if hc.ServiceID == "" {
			if seen[key{hc.Node, hc.CheckID}] {
				continue
			}
			seen[key{hc.Node, hc.CheckID}] = true
		}
		if ok, err := expr.match(hc); err != nil {
			return nil, err
		} else if ok {
			out = append(out, hc)
		}
	}
	return encode(out)
}

// handleHealthChecks: GET /v1/health/checks/:service.
func (s *Server) handleHealthChecks(w http.ResponseWriter, r *http.Request, q url.Values) {
	name := r.PathValue("name")
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		rd := s.readService(ws, name)
		var hcs []*HealthCheck
		for _, inst := range rd.insts {
			hcs = append(hcs, instanceChecks(inst, rd.checksOf(inst.ID))...)
		}
		body, err := writeChecks(hcs, expr)
		return rd.idx, body, err
	})
}

// handleHealthState: GET /v1/health/state/:state (any, passing, warning,
// critical), over every check of the catalog and every node's serfHealth.
func (s *Server) handleHealthState(w http.ResponseWriter, r *http.Request, q url.Values) {
	state := r.PathValue("state")
	switch state {
	case "any", "passing", "warning", "critical":
	default:
		writeError(w, invalid("state", "must be any, passing, warning or critical"))
		return
	}
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		hcs, idx := s.allChecks(ws, "")
		keep := hcs[:0]
		for _, hc := range hcs {
			if state == "any" || hc.Status == state {
				keep = append(keep, hc)
			}
		}
		body, err := writeChecks(keep, expr)
		return idx, body, err
	})
}

// allChecks returns the checks of every instance (of one node when node is
// set) and the nodes' serfHealth, with the highest index among them.
func (s *Server) allChecks(ws memdb.WatchSet, node string) ([]*HealthCheck, uint64) {
	var idx uint64
	var insts []*fsm.Instance
	if node == "" {
		idx, insts = s.store.Instances(ws)
	} else {
		idx, insts = s.store.NodeInstances(ws, node)
	}
	cidx, checks := s.store.Checks(ws, "")
	idx = max(idx, cidx)
	type key struct{ service, id string }
	byInst := map[key][]*fsm.Check{}
	for _, c := range checks {
		byInst[key{c.Service, c.Instance}] = append(byInst[key{c.Service, c.Instance}], c)
	}
	nidx, nodes := s.store.Nodes(ws)
	idx = max(idx, nidx)
	var out []*HealthCheck
	failed := map[string]bool{}
	for _, inst := range insts {
		if inst.NodeFailed {
			failed[inst.Node] = true
		}
	}
	for _, n := range nodes {
		if node == "" || n.Name == node {
			out = append(out, serfCheck(n.Name, n, failed[n.Name]))
		}
	}
	for _, inst := range insts {
		out = append(out, instanceChecks(inst, byInst[key{inst.Service, inst.ID}])...)
	}
	return out, idx
}

// handleHealthNode: GET /v1/health/node/:node.
func (s *Server) handleHealthNode(w http.ResponseWriter, r *http.Request, q url.Values) {
	node := r.PathValue("node")
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) {
		hcs, idx := s.allChecks(ws, node)
		body, err := writeChecks(hcs, expr)
		return idx, body, err
	})
}
