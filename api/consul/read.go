package consul

import (
	"maps"
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

// each is the one read path of the filtered instance reads
// (health/service, catalog/service, catalog/services): it calls keep with
// each instance of insts that f selects, in order, with its checks (from
// rd). ?tag and ?passing are decided on the instance; ?node-meta and
// ?filter on the result shape the endpoint returns, which view builds (with
// its node's metadata) only when one of them is given. keep receives that
// value, or nil when it was not built.
func (f instanceFilter) each(rd *serviceRead, insts []*fsm.Instance,
	view func(*fsm.Instance, []*fsm.Check) (v any, nodeMeta map[string]string),
	keep func(inst *fsm.Instance, checks []*fsm.Check, v any) error,
) error {
	for _, inst := range insts {
		checks := rd.checksOf(inst.ID)
		if !inst.HasTags(f.tags) || (f.passing && !entryPassing(inst, checks, rd.node(inst.Node))) {
			continue
		}
		var v any
		if f.nodeMeta != nil || f.expr != nil {
			var meta map[string]string
			v, meta = view(inst, checks)
			if !metaMatches(meta, f.nodeMeta) {
				continue
			}
			if ok, err := f.expr.match(v); err != nil {
				return err
			} else if !ok {
				continue
			}
		}
		if err := keep(inst, checks, v); err != nil {
			return err
		}
	}
	return nil
}

// matching returns the items of a read that ?filter selects, in order.
func matching[T any](expr *filter, items []T) ([]T, error) {
	if expr == nil {
		return items, nil
	}
	out := make([]T, 0, len(items))
	for _, it := range items {
		if ok, err := expr.match(it); err != nil {
			return nil, err
		} else if ok {
			out = append(out, it)
		}
	}
	return out, nil
}

// filteredQuery is a blocking read narrowed by ?filter: a malformed filter
// is answered 400 before anything is read.
func (s *Server) filteredQuery(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error)) {
	expr, err := parseFilter(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.blockingQuery(w, r, q, func(ws memdb.WatchSet) (uint64, []byte, error) { return query(ws, expr) })
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
	if hasSerfCheck(inst, rd.node(inst.Node)) {
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
		err := f.each(&rd, rd.insts, func(inst *fsm.Instance, checks []*fsm.Check) (any, map[string]string) {
			e := s.entry(inst, checks, &rd)
			return e, e.Node.Meta
		}, func(inst *fsm.Instance, checks []*fsm.Check, _ any) error {
			enc, err := s.encodedEntry(inst, checks, &rd)
			if err != nil {
				return err
			}
			if len(chunks) > 1 {
				chunks = append(chunks, comma)
			}
			chunks = append(chunks, enc)
			return nil
		})
		if err != nil {
			return rd.idx, nil, err
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
		err := f.each(&rd, rd.insts, s.catalogFilterView(&rd), func(inst *fsm.Instance, _ []*fsm.Check, v any) error {
			cs, _ := v.(*CatalogService)
			if cs == nil {
				cs = s.catalogView(inst, s.nodeOf(inst, rd.node(inst.Node)))
			}
			out = append(out, cs)
			return nil
		})
		if err != nil {
			return rd.idx, nil, err
		}
		body, err := encode(out)
		return rd.idx, body, err
	})
}

// catalogFilterView is the view ?node-meta and ?filter of the catalog
// reads see: an instance as GET /v1/catalog/service shows it.
func (s *Server) catalogFilterView(rd *serviceRead) func(*fsm.Instance, []*fsm.Check) (any, map[string]string) {
	return func(inst *fsm.Instance, _ []*fsm.Check) (any, map[string]string) {
		cs := s.catalogView(inst, s.nodeOf(inst, rd.node(inst.Node)))
		return cs, cs.NodeMeta
	}
}

// handleCatalogServices: GET /v1/catalog/services, service names with the
// union of their instances' tags.
func (s *Server) handleCatalogServices(w http.ResponseWriter, r *http.Request, q url.Values) {
	nodeMeta, err := parseNodeMeta(q)
	if err != nil {
		writeError(w, err)
		return
	}
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
		f := instanceFilter{nodeMeta: nodeMeta, expr: expr} // ?tag and ?passing are not taken
		idx, sums, _ := s.store.ServiceSummaries(ws, "", "", 0, nil)
		out := make(map[string][]string, len(sums))
		if f.nodeMeta == nil && f.expr == nil {
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
		err := f.each(&rd, insts, s.catalogFilterView(&rd), func(inst *fsm.Instance, _ []*fsm.Check, _ any) error {
			if tags[inst.Service] == nil {
				tags[inst.Service] = map[string]struct{}{}
			}
			for _, t := range inst.Tags {
				tags[inst.Service][t] = struct{}{}
			}
			return nil
		})
		if err != nil {
			return idx, nil, err
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
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
		idx, nodes, _ := s.nodeList(ws)
		out := make([]*Node, 0, len(nodes))
		for _, n := range nodes {
			if metaMatches(n.Meta, nodeMeta) {
				out = append(out, n)
			}
		}
		out, err := matching(expr, out)
		if err != nil {
			return idx, nil, err
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
	s.nodeServices(w, r, q, func(n *Node, svcs []*AgentService) any {
		out := &NodeServices{Node: n, Services: make(map[string]*AgentService, len(svcs))}
		for _, sv := range svcs {
			out.Services[sv.ID] = sv
		}
		return out
	})
}

// nodeServices answers the reads of one node's services
// (catalog/node, catalog/node-services): ?filter selects among the
// services, shape puts them into the endpoint's result. An unknown node is
// null.
func (s *Server) nodeServices(w http.ResponseWriter, r *http.Request, q url.Values, shape func(*Node, []*AgentService) any) {
	node := r.PathValue("node")
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
		idx, insts, rec := s.nodeInstances(ws, node)
		if rec == nil {
			return idx, []byte("null"), nil
		}
		svcs := make([]*AgentService, 0, len(insts))
		for _, inst := range insts {
			svcs = append(svcs, s.serviceView(inst))
		}
		svcs, err := matching(expr, svcs)
		if err != nil {
			return idx, nil, err
		}
		body, err := encode(shape(s.nodeView(rec), svcs))
		return idx, body, err
	})
}

// handleCatalogNodeServices: GET /v1/catalog/node-services/:node.
func (s *Server) handleCatalogNodeServices(w http.ResponseWriter, r *http.Request, q url.Values) {
	s.nodeServices(w, r, q, func(n *Node, svcs []*AgentService) any {
		return &NodeServiceList{Node: n, Services: svcs}
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
		out = append(out, hc)
	}
	out, err := matching(expr, out)
	if err != nil {
		return nil, err
	}
	return encode(out)
}

// handleHealthChecks: GET /v1/health/checks/:service.
func (s *Server) handleHealthChecks(w http.ResponseWriter, r *http.Request, q url.Values) {
	name := r.PathValue("name")
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
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
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
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
		if (node == "" || n.Name == node) && !n.External() {
			out = append(out, serfCheck(n.Name, n, failed[n.Name]))
			delete(failed, n.Name)
		}
	}
	// Nodes instances were failed on that the catalog no longer lists.
	for _, name := range slices.Sorted(maps.Keys(failed)) {
		if node == "" || name == node {
			out = append(out, serfCheck(name, nil, true))
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
	s.filteredQuery(w, r, q, func(ws memdb.WatchSet, expr *filter) (uint64, []byte, error) {
		hcs, idx := s.allChecks(ws, node)
		body, err := writeChecks(hcs, expr)
		return idx, body, err
	})
}
