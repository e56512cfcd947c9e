package fsm

import (
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// handler applies one decoded command inside a write transaction.
type handler func(w *writeTxn, body []byte) (Command, *RejectError)

// writeTxn is a batch of Raft log entries being applied in one memdb write
// transaction. index is the entry being applied now. What the entries touch
// (table indexes, service records) is accumulated and written once, at the
// end of the batch: every entry in it commits together, so only the final
// values matter, and a burst of registrations to one service rewrites that
// service's record once instead of once per entry.
type writeTxn struct {
	tx    *memdb.Txn
	in    *interner
	rows  *rowCache
	index uint64
	// visibleAt, when set by a command that changed nothing, is the index
	// at which what it asked for was already in the catalog: its result
	// index (see applyRegister).
	visibleAt uint64
	tables    map[string]uint64 // table -> last index in the batch that changed it
	services  map[string]*serviceTouch
	// sets are the services' and nodes' instance sets the batch changed:
	// clones of the committed sets that only this batch sees until finish
	// writes them (instset.go).
	sets *setsTxn
	// replaced are the instance versions the batch replaced or deleted:
	// their watchers are woken once it has committed (published).
	replaced []*Instance
	// checks are the IDs of the checks the batch inserted or deleted, for
	// the check feeds (published hands them over).
	checks []string
	// transitions are the new statuses of the check transitions the batch
	// recorded (recordTransition), for the metrics.
	transitions []Health
}

// serviceTouch follows one service's instance count through a batch.
type serviceTouch struct {
	existed bool   // it had a record when the batch started
	count   int    // its instance count after the entries so far
	index   uint64 // the last entry that touched it
	created uint64 // CreateIndex of its record after the batch
	// set is the service's instance set at the batch's end, which its new
	// record holds (Service.set).
	set *instanceSet
}

func (w *writeTxn) begin(tx *memdb.Txn, st *storeState) {
	w.tx, w.in, w.rows = tx, st.intern, st.rows
	clear(w.tables)
	clear(w.services)
	if w.sets == nil {
		w.sets = newSetsTxn(tx, st.rows)
	}
	w.sets.reset(tx, st.rows)
	// A transaction that was not committed left nothing to remember.
	w.rows.pending = w.rows.pending[:0]
	clear(w.replaced)
	w.replaced = w.replaced[:0]
	clear(w.checks)
	w.checks = w.checks[:0]
	w.transitions = w.transitions[:0]
}

// published wakes the watchers of the instance versions the batch replaced
// or deleted and hands the changed checks to the check feeds; it runs after
// the transaction committed and its rows were published (rowCache.
// committed), so that a woken reader sees the new version (as go-memdb
// notifies after a commit).
func (w *writeTxn) published(s *Store) {
	s.publishChecks(w.checks, false)
	clear(w.checks)
	w.checks = w.checks[:0]
	for i, inst := range w.replaced {
		inst.markReplaced()
		w.replaced[i] = nil
	}
	w.replaced = w.replaced[:0]
}

// putInstance stores inst, replacing the record with its service and ID.
func (w *writeTxn) putInstance(inst *Instance) {
	old, err := w.sets.put(inst)
	if err != nil {
		panic(err) // applyRegister refuses an empty key: a programming error
	}
	if old != nil {
		w.replaced = append(w.replaced, old)
	}
	w.tables[tableInstances] = max(w.tables[tableInstances], w.index)
}

// removeInstance deletes inst.
func (w *writeTxn) removeInstance(inst *Instance) {
	if err := w.sets.remove(inst); err != nil {
		panic(err)
	}
	w.replaced = append(w.replaced, inst)
	w.tables[tableInstances] = max(w.tables[tableInstances], w.index)
}

func (w *writeTxn) insert(table string, obj any) {
	if err := w.tx.Insert(table, obj); err != nil {
		panic(err) // schema violations are programming errors
	}
	w.tables[table] = max(w.tables[table], w.index)
}

func (w *writeTxn) delete(table string, obj any) {
	if err := w.tx.Delete(table, obj); err != nil {
		panic(err)
	}
	w.tables[table] = max(w.tables[table], w.index)
}

// putCheck inserts or replaces check c.
func (w *writeTxn) putCheck(c *Check) {
	w.sets.putCheck(c)
	w.tables[tableChecks] = max(w.tables[tableChecks], w.index)
	w.checks = append(w.checks, c.ID)
}

// dropCheck deletes check c.
func (w *writeTxn) dropCheck(c *Check) {
	w.sets.removeCheck(c)
	w.tables[tableChecks] = max(w.tables[tableChecks], w.index)
	w.checks = append(w.checks, c.ID)
}

func (w *writeTxn) first(table, index string, args ...any) any {
	raw, err := lookupUnique(w.tx, table, index, args...)
	if err != nil {
		panic(err)
	}
	return raw
}

func (w *writeTxn) instance(service, id string) *Instance {
	if service == "" || id == "" {
		return nil // no such key; the indexer refuses an empty id
	}
	return w.sets.instance(service, id)
}

// service returns service's record as committed before the batch (the
// batch writes records only in finish), or nil.
func (w *writeTxn) service(name string) *Service {
	if svc := w.rows.services[name]; svc != nil {
		return svc
	}
	svc, _ := w.first(tableServices, "id", name).(*Service)
	if svc != nil {
		w.rows.services[name] = svc
	}
	return svc
}

func (w *writeTxn) check(id string) *Check { return w.sets.check(id) }

func (w *writeTxn) checksOf(service, instance string) []*Check {
	if instance == "" {
		return nil
	}
	return w.sets.checksOf(service, instance)
}

// touch records that the current entry changed service, adding delta
// instances (negative: removing).
func (w *writeTxn) touch(service string, delta int) {
	st := w.services[service]
	if st == nil {
		st = &serviceTouch{}
		if svc := w.service(service); svc != nil {
			st.existed, st.count, st.created = true, svc.Instances, svc.CreateIndex
		}
		w.services[service] = st
	}
	before := st.count
	st.count += delta
	st.index = w.index
	if before <= 0 && st.count > 0 {
		st.created = w.index
	}
}

// finish writes what the batch's entries touched: each service's record
// (created, updated, or deleted with a tombstone keeping its deletion index)
// and the index of every table that changed.
func (w *writeTxn) finish() {
	// Each new record holds its service's set as of the batch's end (the
	// sets are written, and forgotten by the transaction, by flush).
	for name, st := range w.services {
		if st.count > 0 {
			st.set = w.sets.services.get(w.tx, name)
		}
	}
	if err := w.sets.flush(); err != nil {
		panic(err)
	}
	for name, st := range w.services {
		w.index = st.index
		if st.count <= 0 {
			if st.existed {
				if svc := w.service(name); svc != nil {
					w.rows.forgetService(name)
					w.delete(tableServices, svc)
				}
			}
			w.setIndex(tombstonePrefix+name, st.index)
			continue
		}
		if !st.existed {
			w.deleteIndex(tombstonePrefix + name)
		}
		svc := &Service{Name: name, Instances: st.count, CreateIndex: st.created, ModifyIndex: st.index, set: st.set, key: w.rows.key(name)}
		w.rows.writeService(svc)
		w.insert(tableServices, svc)
	}
	for t, idx := range w.tables {
		w.setIndex(t, idx)
	}
}

func (w *writeTxn) setIndex(key string, index uint64) {
	if err := w.tx.Insert(tableIndex, &indexEntry{Key: key, Value: index}); err != nil {
		panic(err)
	}
}

func (w *writeTxn) deleteIndex(key string) {
	if _, err := w.tx.DeleteAll(tableIndex, "id", key); err != nil {
		panic(err)
	}
}

// dispatchTable lists every command type and its handler, in one place.
func dispatchTable() map[MessageType]handler {
	return map[MessageType]handler{
		RegisterType:     applyRegisterCommand,
		DeregisterType:   decodeAnd(applyDeregister),
		CheckUpdateType:  decodeAnd(applyCheckUpdate),
		AssignChecksType: decodeAnd(applyAssignChecks),
		NodeUpdateType:   decodeAnd(applyNodeUpdate),
		MaintenanceType:  decodeAnd(applyMaintenance),
		MetricsType:      decodeAnd(applyMetrics),
		TokenSetType:     decodeAnd(applyTokenSet),
		TokenDeleteType:  decodeAnd(applyTokenDelete),

		CatalogRegisterType:   decodeAnd(applyCatalogRegister),
		CatalogDeregisterType: decodeAnd(applyCatalogDeregister),
	}
}

// decodeAnd adapts a typed apply function to a handler, which also returns
// the decoded command. A body that cannot be decoded panics: every node
// would fail the same way, and a node must never silently drift from its
// peers.
func decodeAnd[T any, PT interface {
	*T
	Command
}](fn func(*writeTxn, PT) *RejectError) handler {
	return func(w *writeTxn, body []byte) (Command, *RejectError) {
		req := PT(new(T))
		if err := decodeBody(body, req); err != nil {
			panic("fsm: undecodable log entry: " + err.Error())
		}
		return req, fn(w, req)
	}
}

// CheckID returns the ID of the check named name on instance of service:
// SERVICE:INSTANCE:NAME. Service names, instance IDs and check names contain
// no ':' (the API refuses them), so the ID is unique in the catalog and
// unambiguous.
func CheckID(service, instance, name string) string {
	return service + ":" + instance + ":" + name
}

// SplitCheckID returns the service and instance of a check ID made by
// CheckID; ok is false if id is not one.
func SplitCheckID(id string) (service, instance string, ok bool) {
	service, rest, ok := strings.Cut(id, ":")
	if !ok {
		return "", "", false
	}
	instance, _, ok = strings.Cut(rest, ":")
	return service, instance, ok
}

// applyRegisterCommand is decodeAnd(applyRegister) with the decoder that
// takes the repeated values (service, tags, meta, version, node) from the
// catalog's interner instead of allocating them anew on every node for every
// registration (decodeRegisterShared).
func applyRegisterCommand(w *writeTxn, body []byte) (Command, *RejectError) {
	req := new(RegisterRequest)
	if !decodeRegisterShared(body, req, w.in) {
		if err := decodeBody(body, req); err != nil {
			panic("fsm: undecodable log entry: " + err.Error())
		}
	}
	return req, applyRegister(w, req)
}

func applyRegister(w *writeTxn, req *RegisterRequest) *RejectError {
	if req.ID == "" || req.Service == "" {
		return reject(ErrInvalid, "register: id and service are required")
	}
	if strings.ContainsRune(req.ID, 0) || strings.ContainsRune(req.Service, 0) {
		return reject(ErrInvalid, "register: id and service must not contain NUL")
	}
	names := map[string]bool{}
	for _, d := range req.Checks {
		if names[d.Name] {
			return reject(ErrInvalid, "register: check %q declared twice", d.Name)
		}
		names[d.Name] = true
	}
	old := w.instance(req.Service, req.ID)
	if old != nil && SameRegistration(old, w.checksOf(req.Service, req.ID), req) {
		// A periodic re-registration that changes nothing writes nothing:
		// no index moves, no watcher wakes. Its result is the index at
		// which the record already was as asked, not this entry's: a
		// client answered this entry's index would then read the
		// service at a lower one, as if its write had gone back in time
		// (seen by the chaos suite when a write re-sent after a leader
		// change was appended twice).
		w.visibleAt = old.ModifyIndex
		return nil
	}
	var inst *Instance
	if old != nil {
		inst = old.Clone()
	} else {
		inst = &Instance{CreateIndex: w.index}
		w.touch(req.Service, +1)
	}
	// Repeated values (service, tags, meta, version, node) are shared
	// with the catalog's other records (interner).
	// A request decoded by decodeRegisterShared holds them shared already.
	inst.ID, inst.Address, inst.Port, inst.Weight = req.ID, req.Address, req.Port, req.Weight
	if req.interned {
		inst.Service, inst.Tags, inst.Version = req.Service, req.Tags, req.Version
	} else {
		inst.Service, inst.Tags, inst.Version = w.in.str(req.Service), w.in.tagsOf(req.Tags), w.in.str(req.Version)
	}
	if req.Meta == nil && req.meta != nil {
		inst.Meta = req.meta
	} else {
		inst.Meta = w.in.metaOfMap(req.Meta)
	}
	inst.Trusted = req.Trusted
	if inst.Node != req.Node {
		inst.Node = req.Node
		if !req.interned {
			inst.Node = w.in.str(req.Node)
		}
		inst.NodeFailed = false
		if req.Node != "" {
			if n, _ := w.first(tableNodes, "id", req.Node).(*Node); n != nil {
				inst.NodeFailed = n.Status != NodeAlive
			}
		}
	}
	inst.ModifyIndex = w.index

	// Replace the checks. A check whose definition is unchanged is kept as
	// it is. A check redefined with the same probe target (Check.SameTarget:
	// type, target, gRPC service) keeps its state (status, output, since,
	// owner, flapping, CreateIndex) under its new definition: changing an
	// interval, timeout, threshold or TTL must not pull a healthy instance
	// out of discovery until the next probe. Only a new check, or one whose
	// target changed, starts from its initial status. A new instance has
	// none (deregistering deletes an instance's checks with it).
	existing := map[string]*Check{}
	if old != nil {
		for _, c := range w.checksOf(req.Service, req.ID) {
			existing[c.ID] = c
		}
	}
	checks := make([]*Check, 0, len(req.Checks))
	for i := range req.Checks {
		def := req.Checks[i]
		id := CheckID(req.Service, req.ID, def.Name)
		if c := existing[id]; c != nil && c.SameDefinition(&def) {
			delete(existing, id)
			checks = append(checks, c)
			continue
		} else if c != nil && c.SameTarget(&def) {
			delete(existing, id)
			n := c.Clone()
			n.CheckDefinition = w.in.definition(&def)
			n.ModifyIndex = w.index
			w.putCheck(n)
			checks = append(checks, n)
			continue
		}
		delete(existing, id)
		c := &Check{
			ID: id, Instance: inst.ID, Service: inst.Service, Target: def.Target, CheckDefinition: w.in.definition(&def),
			Status: health(def.InitialStatus), StatusSince: req.Time, CreateIndex: w.index, ModifyIndex: w.index,
		}
		if !c.Status.Valid() {
			c.Status = Critical
		}
		if def.Type != CheckTTL {
			c.Owner = pickOwner(w, id)
		}
		w.putCheck(c)
		checks = append(checks, c)
	}
	for _, c := range existing {
		w.dropCheck(c)
	}
	refreshStatus(inst, checks, req.Time, "registration", "")
	w.putInstance(inst)
	w.touch(req.Service, 0)
	return nil
}

// SameRegistration reports whether registering req would leave inst (with
// its checks) as it is: same address, tags, meta, version, weight, node,
// trust and check definitions.
func SameRegistration(inst *Instance, checks []*Check, req *RegisterRequest) bool {
	if inst.Address != req.Address || inst.Port != req.Port || inst.Version != req.Version ||
		inst.Weight != req.Weight || inst.Node != req.Node || inst.Trusted != req.Trusted ||
		!slices.Equal(inst.Tags, req.Tags) || len(inst.Meta) != req.metaLen() || len(checks) != len(req.Checks) {
		return false
	}
	for _, p := range inst.Meta {
		if v, ok := req.metaValue(p.Key); !ok || v != p.Value {
			return false
		}
	}
	byName := make(map[string]*Check, len(checks))
	for _, c := range checks {
		byName[c.Name] = c
	}
	for i := range req.Checks {
		c := byName[req.Checks[i].Name]
		if c == nil || !c.SameDefinition(&req.Checks[i]) {
			return false
		}
	}
	return true
}

func applyDeregister(w *writeTxn, req *DeregisterRequest) *RejectError {
	inst := w.instance(req.Service, req.ID)
	if inst == nil {
		return nil
	}
	if req.IfIndex != 0 && inst.ModifyIndex != req.IfIndex {
		return reject(ErrConflict, "instance %q of service %q changed at index %d", req.ID, req.Service, inst.ModifyIndex)
	}
	for _, c := range w.checksOf(req.Service, req.ID) {
		w.dropCheck(c)
	}
	w.removeInstance(inst)
	w.touch(inst.Service, -1)
	return nil
}

func applyCheckUpdate(w *writeTxn, req *CheckUpdateRequest) *RejectError {
	for _, u := range req.Updates {
		if !u.Status.Valid() {
			return reject(ErrInvalid, "check %q: invalid status %q", u.Check, u.Status)
		}
	}
	var refused []string
	changed := map[instanceKey]struct{}{} // instances whose checks changed
	for _, u := range req.Updates {
		c := w.check(u.Check)
		if c == nil {
			continue // deregistered meanwhile
		}
		if c.Owner != req.Node {
			refused = append(refused, u.Check)
			continue
		}
		out := truncate(u.Output, MaxOutput)
		level := clampFlapLevel(u.FlapLevel)
		if c.Status == u.Status && c.Output == out && c.Flapping == u.Flapping &&
			c.FlapUntil == u.FlapUntil && c.FlapLevel == level {
			continue
		}
		n := c.Clone()
		if n.Status != u.Status {
			n.StatusSince = req.Time
		}
		n.Status, n.Output = health(u.Status), out
		n.Flapping, n.FlapUntil, n.FlapLevel = u.Flapping, u.FlapUntil, level
		n.ModifyIndex = w.index
		w.putCheck(n)
		// Only a change of the status the check contributes concerns the
		// instance (its status is the worst of these). A new output alone, or
		// flap bookkeeping, changes the check and nothing else, so discovery
		// watchers sleep on.
		if c.Effective() != n.Effective() {
			recordTransition(w, n, c.Effective(), req.Time)
			changed[instanceKey{n.Service, n.Instance}] = struct{}{}
		}
	}
	for k := range changed {
		inst := w.instance(k.service, k.id)
		if inst == nil {
			continue
		}
		n := inst.Clone()
		refreshStatus(n, w.checksOf(k.service, k.id), req.Time, "", "")
		n.ModifyIndex = w.index
		w.putInstance(n)
		w.touch(n.Service, 0)
	}
	if len(refused) > 0 {
		sort.Strings(refused)
		return reject(ErrNotOwner, "node %q does not own checks %s", req.Node, strings.Join(refused, ", "))
	}
	return nil
}

// instanceKey identifies an instance: IDs are unique within a service.
type instanceKey struct{ service, id string }

// recordTransition appends a check's status change to its instance's history.
// It runs before refreshStatus re-reads the checks, so the transition list is
// updated on the instance version that refreshStatus later copies.
func recordTransition(w *writeTxn, c *Check, from Health, at int64) {
	inst := w.instance(c.Service, c.Instance)
	if inst == nil {
		return
	}
	n := inst.Clone()
	to := c.Effective()
	n.Transitions = appendTransition(n.Transitions, Transition{Time: at, Check: c.ID, From: from, To: to, Output: c.Output})
	n.ModifyIndex = w.index
	w.putInstance(n)
	w.transitions = append(w.transitions, to)
}

func appendTransition(ts []Transition, t Transition) []Transition {
	ts = append(ts, t)
	if len(ts) > MaxTransitions {
		ts = slices.Clone(ts[len(ts)-MaxTransitions:])
	}
	return ts
}

// refreshStatus recomputes an instance's status from its checks and node and
// keeps HealthySince in step. why and output describe the cause when the
// change is not a check's own transition (registration, node failure).
func refreshStatus(inst *Instance, checks []*Check, now int64, why, output string) {
	status := Passing
	for _, c := range checks {
		status = status.Worse(c.Effective())
	}
	if inst.NodeFailed {
		status = Critical
	}
	if status == inst.Status {
		return
	}
	if why != "" && inst.Status != "" {
		inst.Transitions = appendTransition(inst.Transitions, Transition{Time: now, Check: why, From: inst.Status, To: status, Output: output})
	}
	inst.Status = status
	if status == Passing {
		inst.HealthySince = now
	} else {
		inst.HealthySince = 0
	}
}

func applyAssignChecks(w *writeTxn, req *AssignChecksRequest) *RejectError {
	for _, a := range req.Assignments {
		c := w.check(a.Check)
		if c == nil || c.Owner == a.Owner {
			continue
		}
		n := c.Clone()
		n.Owner = a.Owner
		n.ModifyIndex = w.index
		w.putCheck(n)
	}
	return nil
}

func applyNodeUpdate(w *writeTxn, req *NodeUpdateRequest) *RejectError {
	for _, u := range req.Upserts {
		if u.Name == "" {
			return reject(ErrInvalid, "node update: name is required")
		}
	}
	for _, u := range req.Upserts {
		old, _ := w.first(tableNodes, "id", u.Name).(*Node)
		if old.DepartedIn(u.Incarnation) && !u.Departed {
			// A leave sticks for the incarnation that left: the leader's
			// view of gossip may still show it alive (or failed) for a
			// moment, or an update read before the leave was applied.
			continue
		}
		if old != nil && old.Address == u.Address && old.Role == u.Role && old.Status == u.Status &&
			old.Incarnation == u.Incarnation && old.Departed == u.Departed {
			continue
		}
		n := &Node{Name: w.in.str(u.Name), Address: u.Address, Role: u.Role, Status: u.Status, Since: req.Time,
			Incarnation: u.Incarnation, Departed: u.Departed, CreateIndex: w.index, ModifyIndex: w.index}
		if old != nil {
			n.CreateIndex = old.CreateIndex
			if old.Status == u.Status {
				n.Since = old.Since
			}
		}
		w.insert(tableNodes, n)
		if old == nil || (old.Status == NodeAlive) != (u.Status == NodeAlive) {
			setNodeFailed(w, u.Name, u.Status != NodeAlive, req.Time)
		}
	}
	for _, name := range req.Removes {
		if n, _ := w.first(tableNodes, "id", name).(*Node); n != nil {
			w.delete(tableNodes, n)
		}
	}
	return nil
}

// applyCatalogRegister upserts an external node and registers the
// instance of the request, if any, on it. Everything is checked before
// anything is written (a rejected command leaves no partial write): the
// node must not be a cluster member's, and the instance is registered
// first, since applyRegister refuses before it writes.
func applyCatalogRegister(w *writeTxn, req *CatalogRegisterRequest) *RejectError {
	if err := ValidateName(req.Node); err != nil {
		return reject(ErrInvalid, "catalog register: node name %s", err)
	}
	old, _ := w.first(tableNodes, "id", req.Node).(*Node)
	if old != nil && old.Role != RoleExternal {
		return reject(ErrConflict, "catalog register: node %q is a cluster member (role %s): its record comes from gossip", req.Node, old.Role)
	}
	if req.Address == "" && (old == nil || !req.SkipNodeUpdate) {
		return reject(ErrInvalid, "catalog register: node %q: an address is required", req.Node)
	}
	if req.Service != nil && req.Service.Node != req.Node {
		return reject(ErrInvalid, "catalog register: the instance's node %q is not the node registered, %q", req.Service.Node, req.Node)
	}
	if req.Service != nil {
		if rerr := applyRegister(w, req.Service); rerr != nil {
			return rerr
		}
	}
	if old != nil && (req.SkipNodeUpdate || old.sameExternal(req)) {
		if req.Service == nil {
			w.visibleAt = old.ModifyIndex // nothing changed (see applyRegister)
		} else if w.visibleAt != 0 {
			w.visibleAt = max(w.visibleAt, old.ModifyIndex)
		}
		return nil
	}
	w.visibleAt = 0
	n := &Node{
		Name: w.in.str(req.Node), Address: req.Address, Role: RoleExternal, Status: NodeAlive,
		TaggedAddresses: nilIfEmpty(req.TaggedAddresses), Meta: nilIfEmpty(req.Meta),
		Since: req.Time, CreateIndex: w.index, ModifyIndex: w.index,
	}
	if old != nil {
		n.CreateIndex, n.Since = old.CreateIndex, old.Since
	}
	w.insert(tableNodes, n)
	return nil
}

// sameExternal reports whether registering req would leave external node
// n as it is.
func (n *Node) sameExternal(req *CatalogRegisterRequest) bool {
	return n.Address == req.Address && maps.Equal(n.TaggedAddresses, req.TaggedAddresses) && maps.Equal(n.Meta, req.Meta)
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// applyCatalogDeregister removes one check of an instance on the node
// (Check), or the external node with every instance on it. A node that is
// a cluster member's is refused (its record comes from gossip); a node the
// catalog does not know, or a check that is not there, is no error.
func applyCatalogDeregister(w *writeTxn, req *CatalogDeregisterRequest) *RejectError {
	if req.Node == "" {
		return reject(ErrInvalid, "catalog deregister: node is required")
	}
	if req.Check != "" {
		c := w.check(req.Check)
		if c == nil {
			return nil
		}
		inst := w.instance(c.Service, c.Instance)
		if inst == nil || inst.Node != req.Node {
			return nil
		}
		w.dropCheck(c)
		n := inst.Clone()
		refreshStatus(n, w.checksOf(n.Service, n.ID), req.Time, "deregistration", "check "+c.Name+" deregistered")
		n.ModifyIndex = w.index
		w.putInstance(n)
		w.touch(n.Service, 0)
		return nil
	}
	old, _ := w.first(tableNodes, "id", req.Node).(*Node)
	if old != nil && old.Role != RoleExternal {
		return reject(ErrConflict, "catalog deregister: node %q is a cluster member (role %s): it leaves through gossip", req.Node, old.Role)
	}
	for _, inst := range w.sets.nodeInstances(req.Node) {
		for _, c := range w.checksOf(inst.Service, inst.ID) {
			w.dropCheck(c)
		}
		w.removeInstance(inst)
		w.touch(inst.Service, -1)
	}
	if old != nil {
		w.delete(tableNodes, old)
	}
	return nil
}

func setNodeFailed(w *writeTxn, node string, failed bool, now int64) {
	for _, inst := range w.sets.nodeInstances(node) {
		if inst.NodeFailed == failed {
			continue
		}
		n := inst.Clone()
		n.NodeFailed = failed
		out := "node " + node + " is alive"
		if failed {
			out = "node " + node + " failed"
		}
		refreshStatus(n, w.checksOf(n.Service, n.ID), now, "node", out)
		n.ModifyIndex = w.index
		w.putInstance(n)
		w.touch(n.Service, 0)
	}
}

func applyMaintenance(w *writeTxn, req *MaintenanceRequest) *RejectError {
	inst := w.instance(req.Service, req.ID)
	if inst == nil {
		return reject(ErrNotFound, "instance %q of service %q is not registered", req.ID, req.Service)
	}
	n := inst.Clone()
	switch req.Mode {
	case ModeNone:
		n.Maintenance, n.Drain = nil, nil
	case ModeMaintenance:
		n.Maintenance = &Maintenance{Reason: req.Reason, Since: req.Time}
		if inst.Maintenance != nil && inst.Maintenance.Reason == req.Reason {
			n.Maintenance.Since = inst.Maintenance.Since
		}
	case ModeDrain:
		n.Drain = &Drain{Deadline: req.Deadline, Since: req.Time}
		if inst.Drain != nil {
			n.Drain.Since = inst.Drain.Since
		}
	default:
		return reject(ErrInvalid, "unknown maintenance mode %q", req.Mode)
	}
	n.ModifyIndex = w.index
	w.putInstance(n)
	w.touch(n.Service, 0)
	return nil
}

func applyMetrics(w *writeTxn, req *MetricsRequest) *RejectError {
	for _, u := range req.Updates {
		inst := w.instance(u.Service, u.Instance)
		if inst == nil || maps.Equal(inst.Metrics, u.Metrics) {
			continue
		}
		n := inst.Clone()
		n.Metrics = u.Metrics
		n.ModifyIndex = w.index
		w.putInstance(n)
		w.touch(n.Service, 0)
	}
	return nil
}

func applyTokenSet(w *writeTxn, req *TokenSetRequest) *RejectError {
	if req.Token.Accessor == "" || req.Token.SecretHash == "" {
		return reject(ErrInvalid, "token: accessor and secret hash are required")
	}
	t := req.Token
	if other, _ := w.first(tableTokens, "secret", t.SecretHash).(*Token); other != nil && other.Accessor != t.Accessor {
		return reject(ErrConflict, "token secret already in use")
	}
	if old, _ := w.first(tableTokens, "id", t.Accessor).(*Token); old != nil {
		t.CreateIndex = old.CreateIndex
	} else {
		t.CreateIndex = w.index
	}
	t.ModifyIndex = w.index
	w.insert(tableTokens, &t)
	return nil
}

// applyTokenDelete deletes a token. Deleting one that does not exist is
// refused (ErrNotFound): an operator revoking a leaked token by a mistyped
// accessor must learn that nothing was revoked. It is decided here, at
// apply, so that of two deletes of the same token, the second learns it
// found nothing.
func applyTokenDelete(w *writeTxn, req *TokenDeleteRequest) *RejectError {
	t, _ := w.first(tableTokens, "id", req.Accessor).(*Token)
	if t == nil {
		return reject(ErrNotFound, "no such token %q (nothing deleted)", req.Accessor)
	}
	w.delete(tableTokens, t)
	return nil
}

// MaxOutput caps the check output kept in the catalog.
const MaxOutput = 4096

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// pickOwner chooses the node that runs a new check: rendezvous hashing over
// the alive nodes, so the choice is deterministic on every replica and a
// node's departure moves only its own checks.
func pickOwner(w *writeTxn, check string) string {
	it, err := w.tx.Get(tableNodes, "id")
	if err != nil {
		panic(err)
	}
	var alive []string
	for o := it.Next(); o != nil; o = it.Next() {
		if n := o.(*Node); n.Status == NodeAlive && n.Role == RoleServer {
			alive = append(alive, n.Name)
		}
	}
	return PickOwner(check, alive)
}

// RoleServer is the role of a Beacon agent that takes part in Raft and runs checks.
const RoleServer = "server"

// RoleUntrusted is the role the leader records for a gossip member that is
// alive and says it is a server but is not in the Raft configuration (it
// failed the cluster port's TLS or secret handshake, or is not added yet):
// it is listed, and gets no checks. A server that left or failed keeps the
// server role.
const RoleUntrusted = "untrusted"

// RoleExternal is the role of a node registered through the Consul
// catalog API (CatalogRegisterRequest): a host that runs no Beacon agent,
// such as a database or a SaaS endpoint. Gossip knows nothing of it: it is
// always alive, gets no checks to run and is never made a Raft server.
const RoleExternal = "external"

// PickOwner returns the member of nodes with the highest rendezvous score for
// check, or "" when nodes is empty.
func PickOwner(check string, nodes []string) string {
	var best string
	var bestScore uint64
	for _, n := range nodes {
		h := fnv.New64a()
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(check))
		if s := h.Sum64(); best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}
