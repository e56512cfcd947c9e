package consul

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// MaxReasonLen caps a maintenance reason (as Beacon's own API does).
const MaxReasonLen = 256

// decode reads a JSON body of at most MaxBodyBytes into v. Unknown fields
// are ignored (Consul clients send fields Beacon has no use for); the
// fields Beacon refuses are modelled so that their use is an error.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return api.StatusError(http.StatusBadRequest, "bad_body", "cannot read request body: "+err.Error())
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return api.StatusError(http.StatusBadRequest, "bad_json", "request body is empty; a JSON object is required")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return invalid(ute.Field, "must be %s, not %s", ute.Type.Kind(), ute.Value)
		}
		return api.StatusError(http.StatusBadRequest, "bad_json", "Request decode failed: "+err.Error())
	}
	return nil
}

// apply encodes a command and commits it through the cluster.
func (s *Server) apply(r *http.Request, t fsm.MessageType, req any) (uint64, error) {
	cmd, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	return s.cluster.Apply(r.Context(), cmd)
}

// writeOK answers a write as Consul does: 200 with an empty body.
func writeOK(w http.ResponseWriter, idx uint64) {
	w.Header().Set(HeaderIndex, fmt.Sprint(max(idx, 1)))
	w.WriteHeader(http.StatusOK)
}

// handleAgentRegister: PUT /v1/agent/service/register. The instance is
// registered cluster-wide with this agent as its node. As in Consul, a
// service ID is unique on an agent: a registration replaces this agent's
// instance of that ID under another name (a rename), and keeps the checks
// of the instance it replaces or updates that it does not list, unless
// ?replace-existing-checks is set.
func (s *Server) handleAgentRegister(w http.ResponseWriter, r *http.Request, q url.Values) {
	replaceChecks, err := boolParam(q, "replace-existing-checks")
	if err != nil {
		writeError(w, err)
		return
	}
	var reg Registration
	if err := s.decode(w, r, &reg, false); err != nil {
		writeError(w, err)
		return
	}
	if err := s.authorizeWrite(r, reg.Name); err != nil {
		writeError(w, err)
		return
	}
	req, err := s.buildRegister(r, &reg, s.cfg.NodeName, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	replaced := s.replacedBy(req)
	for _, old := range replaced {
		if err := s.authorizeWrite(r, old.Service); err != nil {
			// The token may write reg.Name (checked above): what it may
			// not is take the ID from the instance that has it.
			writeError(w, api.StatusError(http.StatusForbidden, "permission_denied", fmt.Sprintf(
				"permission denied: service ID %s is taken on this agent by an instance of service %s, which this token cannot write "+
					"(on the Consul API a service ID is unique per agent, and registering it would replace that instance): choose another ID",
				quote(old.ID), quote(old.Service))))
			return
		}
	}
	if !replaceChecks {
		s.keepChecks(req, replaced)
	}
	// A service re-registering itself unchanged (Spring and most Consul
	// clients do, periodically) appends nothing and wakes no watcher.
	if len(replaced) == 0 {
		if idx, ok := api.UnchangedRegistration(r.Context(), s.store, s.cluster.ConsistentIndex, req); ok {
			writeOK(w, idx)
			return
		}
	}
	// The replaced instances go first, each only if unchanged since it
	// was read (IfIndex): no reader ever sees two instances of one ID on
	// this agent, and a failure between the writes leaves the old one
	// gone and the new one not there yet, which the client's retry of
	// its failed registration mends (docs/consul.md).
	for _, old := range replaced {
		dr := &fsm.DeregisterRequest{Service: old.Service, ID: old.ID, IfIndex: old.ModifyIndex, Time: req.Time}
		if _, err := s.apply(r, fsm.DeregisterType, dr); err != nil {
			writeError(w, err)
			return
		}
	}
	idx, err := s.apply(r, fsm.RegisterType, req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeOK(w, idx)
}

// replacedBy are this agent's instances that the registration req
// replaces: its ID under another service.
func (s *Server) replacedBy(req *fsm.RegisterRequest) []*fsm.Instance {
	var out []*fsm.Instance
	for _, inst := range s.localWithID(req.ID) {
		if inst.Service != req.Service {
			out = append(out, inst)
		}
	}
	return out
}

// keepChecks adds to req the checks it does not name of the instance it
// updates and of those it replaces, as Consul keeps an agent's checks
// across a re-registration. A kept check whose definition is unchanged
// keeps its status (fsm's applyRegister); one moved by a rename starts
// over. It may probe any host only if this registration may
// (AnyTarget), so that no token gains through it what it could not
// register.
func (s *Server) keepChecks(req *fsm.RegisterRequest, replaced []*fsm.Instance) {
	named := make(map[string]bool, len(req.Checks))
	for _, d := range req.Checks {
		named[d.Name] = true
	}
	_, checks := s.store.CurrentInstance(req.Service, req.ID)
	for _, old := range replaced {
		_, oc := s.store.CurrentInstance(old.Service, old.ID)
		checks = append(checks, oc...)
	}
	for _, c := range checks {
		if named[c.Name] {
			continue
		}
		named[c.Name] = true
		d := c.Definition()
		d.AnyTarget = d.AnyTarget && req.Trusted
		req.Checks = append(req.Checks, d)
	}
}

// refusedCheckFields are the check kinds Beacon never runs: they would run
// a command, reach into a container or the host, or need an agent on the
// instance's host.
func refusedCheckField(c *CheckRegistration) string {
	switch {
	case len(c.ScriptArgs) > 0:
		return "ScriptArgs"
	case len(c.Args) > 0:
		return "Args"
	case c.DockerContainerID != "":
		return "DockerContainerID"
	case c.Shell != "":
		return "Shell"
	case c.H2PING != "":
		return "H2PING"
	case c.OSService != "":
		return "OSService"
	case c.UDP != "":
		return "UDP"
	case c.AliasNode != "":
		return "AliasNode"
	case c.AliasService != "":
		return "AliasService"
	case c.Body != "":
		return "Body"
	case c.TCPUseTLS:
		return "TCPUseTLS"
	case c.GRPCUseTLS:
		return "GRPCUseTLS"
	case c.H2PingUseTLS:
		return "H2PingUseTLS"
	case c.TLSServerName != "":
		return "TLSServerName"
	}
	return ""
}

// buildRegister turns a Consul registration into Beacon's, validated with
// the native API's rules for the request's token (api.RegisterRulesFor;
// without an Authorizer, those of a client without the management token),
// with errors naming the Consul fields.
func (s *Server) buildRegister(r *http.Request, reg *Registration, node string, now time.Time) (*fsm.RegisterRequest, error) {
	switch {
	case reg.Kind != "" && reg.Kind != "typical":
		return nil, invalid("Kind", "service kind %q is not supported: Beacon has no Connect proxies or gateways", reg.Kind)
	case reg.Proxy != nil:
		return nil, invalid("Proxy", "is not supported: Beacon has no Connect proxies")
	case reg.Connect != nil:
		return nil, invalid("Connect", "is not supported: Beacon has no Connect")
	case reg.SocketPath != "":
		return nil, invalid("SocketPath", "is not supported: instances are reached at an address and port")
	case reg.Namespace != "" && reg.Namespace != "default":
		return nil, invalid("Namespace", "Beacon has one namespace, \"default\"")
	case reg.Partition != "" && reg.Partition != "default":
		return nil, invalid("Partition", "Beacon has one partition, \"default\"")
	}
	if err := api.ValidateService("Name", reg.Name); err != nil {
		return nil, err
	}
	id := reg.ID
	if id == "" {
		id = reg.Name
	}
	if err := api.ValidateID("ID", id); err != nil {
		return nil, err
	}
	addr := reg.Address
	if addr == "" {
		addr = s.cfg.NodeAddress
	}
	body := client.Registration{Address: addr, Port: reg.Port, Tags: reg.Tags, Meta: reg.Meta, Node: node}
	if reg.Weights != nil {
		body.Weight = reg.Weights.Passing
	}
	var checks []*CheckRegistration
	if reg.Check != nil {
		checks = append(checks, reg.Check)
	}
	for _, c := range reg.Checks {
		if c != nil {
			checks = append(checks, c)
		}
	}
	fields := make([]string, len(checks))
	for i, c := range checks {
		fields[i] = "Check"
		if reg.Check == nil || i > 0 {
			fields[i] = fmt.Sprintf("Checks[%d]", i-boolInt(reg.Check != nil))
		}
		def, err := s.buildCheck(fields[i], c, id, i, len(checks))
		if err != nil {
			return nil, err
		}
		body.Checks = append(body.Checks, def)
	}
	var req *fsm.RegisterRequest
	var err error
	if s.cfg.Auth != nil {
		tok, _ := requestToken(r, nil) // authorizeWrite has refused a bad one
		req, err = api.BuildRegisterWith(reg.Name, id, &body, now, s.cfg.Auth.RegisterRulesFor(tok))
	} else {
		req, err = api.BuildRegister(reg.Name, id, &body, now, s.cfg.CheckDenyCIDRs)
	}
	if err != nil {
		return nil, consulField(err, fields)
	}
	return req, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// buildCheck turns one Consul check into a Beacon check definition. The
// check's Beacon name comes from its Consul ID (checkName): Consul's
// default IDs service:<id> (one check) and service:<id>:N (several, from 1).
func (s *Server) buildCheck(field string, c *CheckRegistration, instance string, i, n int) (client.CheckDefinition, error) {
	var def client.CheckDefinition
	if f := refusedCheckField(c); f != "" {
		return def, invalid(field+"."+f, "is not supported: Beacon runs HTTP, TCP, gRPC and TTL checks only, and never runs commands")
	}
	cid := c.CheckID
	if cid == "" {
		cid = c.ID
	}
	if cid == "" {
		cid = defaultCheckPrefix + instance
		if n > 1 {
			cid += fmt.Sprintf(":%d", i+1)
		}
	}
	name, ok := checkName(cid, instance)
	if !ok {
		return def, invalid(field+".CheckID", "%q: a check ID is service:<service id>[:N] or a name of letters, digits, '.', '_' and '-'", cid)
	}
	def.Name = name
	def.Method, def.Header, def.TLSSkipVerify = c.Method, c.Header, c.TLSSkipVerify
	def.TCP = c.TCP
	def.TTL = client.Duration(c.TTL)
	if c.HTTP != "" {
		def.HTTP = withDefaultPort(c.HTTP)
	}
	if c.GRPC != "" {
		def.GRPC, def.GRPCService, _ = strings.Cut(c.GRPC, "/")
	}
	def.Interval, def.Timeout = client.Duration(c.Interval), client.Duration(c.Timeout)
	if def.TTL != 0 {
		def.Interval, def.Timeout = 0, 0 // a TTL check has neither in Beacon
	} else if def.Interval != 0 && def.Timeout > def.Interval {
		def.Timeout = def.Interval // Consul lets a timeout exceed the interval; Beacon does not
	}
	def.FailuresBeforeCritical, def.SuccessesBeforePassing = c.FailuresBeforeCritical, c.SuccessBeforePassing
	switch c.Status {
	case "", "passing", "warning", "critical":
		def.InitialStatus = c.Status
	default:
		return def, invalid(field+".Status", "must be passing, warning or critical")
	}
	def.DeregisterCriticalAfter = client.Duration(c.DeregisterCriticalServiceAfter)
	if def.DeregisterCriticalAfter > 0 && def.DeregisterCriticalAfter < client.Duration(api.MinDeregisterAfter) {
		def.DeregisterCriticalAfter = client.Duration(api.MinDeregisterAfter)
	}
	return def, nil
}

// withDefaultPort adds the scheme's port to an HTTP check URL without one
// (Beacon requires it; Consul implies it).
func withDefaultPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Port() != "" {
		return raw
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	u.Host = net.JoinHostPort(u.Hostname(), port)
	return u.String()
}

// nativeFields maps the native API's field names in validation errors to
// the Consul registration's.
var nativeFields = map[string]string{
	"service": "Name", "id": "ID", "address": "Address", "port": "Port", "meta": "Meta",
	"version": "Meta", "weight": "Weights.Passing", "node": "Node", "checks": "Checks",
	"http": "HTTP", "tcp": "TCP", "grpc": "GRPC", "grpc_service": "GRPC", "ttl": "TTL",
	"interval": "Interval", "timeout": "Timeout", "method": "Method", "header": "Header",
	"name": "CheckID", "type": "Type", "failures_before_critical": "FailuresBeforeCritical",
	"successes_before_passing": "SuccessBeforePassing", "initial_status": "Status",
	"deregister_critical_after": "DeregisterCriticalServiceAfter",
}

var checkField = regexp.MustCompile(`^checks\[(\d+)\]`)

// consulField renames the field of a native validation error.
func consulField(err error, checkFields []string) error {
	var ve *api.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	f := ve.Field
	prefix := ""
	if m := checkField.FindStringSubmatch(f); m != nil {
		var i int
		fmt.Sscanf(m[1], "%d", &i)
		if i < len(checkFields) {
			prefix = checkFields[i]
		}
		f = strings.TrimPrefix(strings.TrimPrefix(f, m[0]), ".")
	}
	parts := strings.SplitN(f, ".", 2)
	head, rest, _ := strings.Cut(parts[0], "[")
	if n, ok := nativeFields[head]; ok {
		head = n
	}
	if rest != "" {
		head += "[" + rest
	}
	if len(parts) == 2 {
		head += "." + parts[1]
	}
	switch {
	case prefix != "" && head != "":
		head = prefix + "." + head
	case prefix != "":
		head = prefix
	}
	return &api.ValidationError{Field: head, Msg: ve.Msg}
}

// handleAgentDeregister: PUT /v1/agent/service/deregister/:id. Every
// instance of this agent with that ID goes (there is one, unless two were
// registered before a registration replaced its ID's older instance), else
// the one instance in the catalog with it (findInstance).
func (s *Server) handleAgentDeregister(w http.ResponseWriter, r *http.Request, q url.Values) {
	id := r.PathValue("id")
	insts := s.localWithID(id)
	if len(insts) == 0 {
		if inst := s.findInstance(id); inst != nil {
			insts = append(insts, inst)
		}
	}
	if len(insts) == 0 {
		writeError(w, notFound("Unknown service ID "+quote(id)+". Ensure that the service ID is passed, not the service name."))
		return
	}
	for _, inst := range insts {
		if err := s.authorizeWrite(r, inst.Service); err != nil {
			writeError(w, err)
			return
		}
	}
	var idx uint64
	for _, inst := range insts {
		var err error
		idx, err = s.apply(r, fsm.DeregisterType, &fsm.DeregisterRequest{Service: inst.Service, ID: inst.ID, Time: time.Now().UnixNano()})
		if err != nil {
			writeError(w, err)
			return
		}
	}
	writeOK(w, idx)
}

// handleAgentMaintenance: PUT /v1/agent/service/maintenance/:id?enable=&reason=.
func (s *Server) handleAgentMaintenance(w http.ResponseWriter, r *http.Request, q url.Values) {
	if !q.Has("enable") {
		writeError(w, invalid("enable", "Missing value for enable"))
		return
	}
	enable, err := boolParam(q, "enable")
	if err != nil {
		writeError(w, err)
		return
	}
	reason := q.Get("reason")
	if utf8.RuneCountInString(reason) > MaxReasonLen || !api.Printable(reason) {
		writeError(w, invalid("reason", "must be at most %d printable characters", MaxReasonLen))
		return
	}
	id := r.PathValue("id")
	inst := s.findInstance(id)
	if inst == nil {
		writeError(w, notFound("Unknown service ID "+quote(id)))
		return
	}
	if err := s.authorizeWrite(r, inst.Service); err != nil {
		writeError(w, err)
		return
	}
	req := &fsm.MaintenanceRequest{Service: inst.Service, ID: inst.ID, Mode: fsm.ModeNone, Time: time.Now().UnixNano()}
	if enable {
		req.Mode, req.Reason = fsm.ModeMaintenance, reason
	}
	idx, err := s.apply(r, fsm.MaintenanceType, req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeOK(w, idx)
}

// handleCheckVerb: PUT /v1/agent/check/pass|warn|fail/:id?note=.
func (s *Server) handleCheckVerb(status fsm.Health) handler {
	return func(w http.ResponseWriter, r *http.Request, q url.Values) {
		s.reportTTL(w, r, status, q.Get("note"))
	}
}

// handleCheckUpdate: PUT /v1/agent/check/update/:id, body {Status, Output}.
func (s *Server) handleCheckUpdate(w http.ResponseWriter, r *http.Request, q url.Values) {
	var body CheckUpdate
	if err := s.decode(w, r, &body, false); err != nil {
		writeError(w, err)
		return
	}
	var status fsm.Health
	switch body.Status {
	case "passing", "warning", "critical":
		status = fsm.Health(body.Status)
	default:
		writeError(w, invalid("Status", "must be passing, warning or critical"))
		return
	}
	s.reportTTL(w, r, status, body.Output)
}

// maxOutput caps a TTL report's output (Consul's default is 4 KiB).
const maxOutput = 4096

// cutOutput cuts s to at most n bytes on a UTF-8 boundary: a rune cut in
// half would be stored as an escape (fsm.EscapeControl) of its first bytes.
func cutOutput(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}

func (s *Server) reportTTL(w http.ResponseWriter, r *http.Request, status fsm.Health, output string) {
	id := r.PathValue("id")
	c, err := s.findCheck(id)
	if err != nil {
		writeError(w, err)
		return
	}
	if c == nil {
		// This agent may not have applied a registration another agent
		// just accepted: before the 404, catch up with the leader's
		// commit (one read index) and look again, so a check registered
		// through any agent can be reported through any other at once.
		if _, cerr := s.cluster.ConsistentIndex(r.Context()); cerr == nil {
			if c, err = s.findCheck(id); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	if c == nil {
		// Spring Cloud Consul re-registers its service when it sees this.
		writeError(w, notFound("Unknown check ID "+quote(id)+". Ensure that the check ID is passed, not the check name."))
		return
	}
	if err := s.authorizeWrite(r, c.Service); err != nil {
		writeError(w, err)
		return
	}
	if c.Type != fsm.CheckTTL {
		writeError(w, api.StatusError(http.StatusBadRequest, "not_ttl", "CheckID "+quote(id)+" does not have associated TTL"))
		return
	}
	if s.cfg.TTL == nil {
		writeError(w, api.StatusError(http.StatusServiceUnavailable, "unavailable", "this agent does not take TTL reports"))
		return
	}
	output = cutOutput(output, maxOutput)
	idx, err := s.cfg.TTL.ReportTTL(r.Context(), c.ID, status, output, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	writeOK(w, idx)
}

// handleJoin: PUT /v1/agent/join/:addr (a gossip address).
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request, q url.Values) {
	if wan, _ := boolParam(q, "wan"); wan {
		writeError(w, invalid("wan", "Beacon has no WAN pool: one cluster is one datacenter"))
		return
	}
	addr := r.PathValue("addr")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "8752") // Beacon's default gossip port
	}
	if _, err := s.cluster.Join([]string{addr}); err != nil {
		writeError(w, api.StatusError(http.StatusBadGateway, "join_failed", "join "+addr+": "+err.Error()))
		return
	}
	writeOK(w, s.store.LastIndex())
}

// handleLeave: PUT /v1/agent/leave. This agent leaves and shuts down.
func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request, q url.Values) {
	if err := s.cluster.Leave(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	writeOK(w, s.store.LastIndex())
}

// handleForceLeave: PUT /v1/agent/force-leave/:node.
func (s *Server) handleForceLeave(w http.ResponseWriter, r *http.Request, q url.Values) {
	if err := s.cluster.ForceLeave(r.Context(), r.PathValue("node")); err != nil {
		writeError(w, err)
		return
	}
	writeOK(w, s.store.LastIndex())
}

// nodeMaintPrefix marks the maintenance reason of instances put in
// maintenance by PUT /v1/agent/maintenance: Beacon has no node-level
// maintenance, so the agent's instances each enter maintenance, and these
// show as the node's _node_maintenance check rather than a service's.
const nodeMaintPrefix = "node maintenance: "

// handleNodeMaintenance: PUT /v1/agent/maintenance?enable=&reason=. Every
// instance this agent registered enters (or, if it entered this way,
// leaves) maintenance; instances registered later are not affected.
func (s *Server) handleNodeMaintenance(w http.ResponseWriter, r *http.Request, q url.Values) {
	if !q.Has("enable") {
		writeError(w, invalid("enable", "Missing value for enable"))
		return
	}
	enable, err := boolParam(q, "enable")
	if err != nil {
		writeError(w, err)
		return
	}
	reason := q.Get("reason")
	if utf8.RuneCountInString(nodeMaintPrefix+reason) > MaxReasonLen || !api.Printable(reason) {
		writeError(w, invalid("reason", "must be at most %d printable characters", MaxReasonLen-len(nodeMaintPrefix)))
		return
	}
	_, insts := s.localInstances()
	var idx uint64
	for _, inst := range insts {
		inNode := inst.Maintenance != nil && strings.HasPrefix(inst.Maintenance.Reason, nodeMaintPrefix)
		if (enable && inst.Maintenance != nil && !inNode) || (!enable && !inNode) {
			continue // in maintenance of its own, or not in node maintenance
		}
		if err := s.authorizeWrite(r, inst.Service); err != nil {
			writeError(w, err)
			return
		}
		req := &fsm.MaintenanceRequest{Service: inst.Service, ID: inst.ID, Mode: fsm.ModeNone, Time: time.Now().UnixNano()}
		if enable {
			req.Mode, req.Reason = fsm.ModeMaintenance, nodeMaintPrefix+reason
		}
		if idx, err = s.apply(r, fsm.MaintenanceType, req); err != nil {
			writeError(w, err)
			return
		}
	}
	writeOK(w, max(idx, s.store.LastIndex()))
}
