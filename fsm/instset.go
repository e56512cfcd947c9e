package fsm

import (
	"errors"
	"sync"

	"github.com/google/btree"
	"github.com/hashicorp/go-memdb"
)

// A service's instances are kept in a copy-on-write B-tree ordered by ID
// (an instanceSet), one per service, held by a row of the sets table. An
// entry in a radix tree of go-memdb cost about 190 bytes per instance (a
// node, a leaf, an edge and a copy of the key), which was a third of the
// catalog's memory at 100,000 instances; a B-tree slot costs about 20
// (fsm/DESIGN.md, "Instance sets").
//
// Concurrency: a set published in a committed row is never modified again.
// A write transaction clones the set of each service it changes once
// (instanceSet.Clone copies nothing: nodes are copied when first written
// through the clone) and modifies the clone, which only that transaction
// sees until it writes the row at its end (setsTxn.flush). Readers of the
// old row keep reading the old set, unchanged. Clone writes the original's
// copy-on-write context (a field no reader touches); only the one writer
// clones.
//
// An instance with a Node is also in its node's set (the nodesets table,
// ordered by service and ID), found when the node fails and by
// NodeInstances. Draining instances are also rows of the instances table,
// for its draining index (DrainingInstances); other instances are only in
// their sets.
type instanceSet = btree.BTreeG[*Instance]

// setDegree gives nodes of up to 63 items. A full node's item and child
// arrays (capacity 64, grown by append) are 512 bytes, a size class of
// their own: with degree 16 they were 256 bytes, the class of an Instance,
// so the nodes that each write's copy-on-write path leaves behind were
// interleaved with the long-lived records in the same spans, and after a
// fill those spans stayed part-used (fragmentation, measured in
// docs/benchmarks.md, ninth session). A write copies a root-to-leaf path
// of one or two levels; a set of 1,000 instances is a root and its leaves.
const setDegree = 32

// noFreeList is shared by every set: capacity 0, so no node is ever reused.
// (google/btree frees only nodes its clone made itself, which no reader has
// seen; without reuse that needs no argument.)
var noFreeList = btree.NewFreeListG[*Instance](0)

func newInstanceSet() *instanceSet {
	return btree.NewWithFreeListG(setDegree, lessInstanceID, noFreeList)
}

// lessInstanceID orders a service's set by ID. It compares the instances'
// keys first (idKey: the ID's first six bytes, padded with zeros) and the
// IDs only when the keys are equal. A comparison of IDs follows two
// pointers, the instance and its ID's bytes, each a cache miss in a large
// catalog: the lookups of a registration took ~7 % of a node's CPU at 64
// writers. A key's order never contradicts the IDs' (padding is zero,
// below every byte), which FuzzIDKeyOrder checks.
func lessInstanceID(a, b *Instance) bool {
	if a.idKey != b.idKey {
		return a.idKey.num() < b.idKey.num()
	}
	return a.ID < b.ID
}

// idKey is the first six bytes of an ID, padded with zeros.
type idKey [6]byte

func keyOf(id string) (k idKey) {
	copy(k[:], id)
	return k
}

// num is k as a big-endian number: keys compare as their bytes do.
func (k idKey) num() uint64 {
	return uint64(k[0])<<40 | uint64(k[1])<<32 | uint64(k[2])<<24 | uint64(k[3])<<16 | uint64(k[4])<<8 | uint64(k[5])
}

// Agents register through the Consul API with their node's name, so most
// instances of such a catalog have a Node: a node's set is a second set of
// the same records, ordered by service and ID.
func newNodeSet() *instanceSet {
	return btree.NewWithFreeListG(setDegree, lessServiceID, noFreeList)
}

func lessServiceID(a, b *Instance) bool {
	if a.Service != b.Service {
		return a.Service < b.Service
	}
	return a.ID < b.ID
}

// serviceSet is a row of the sets table: service's instances.
type serviceSet struct {
	Service string
	key     []byte // Service and a NUL, its "id" key (rowCache.key), or nil
	set     *instanceSet
}

// nodeSet is a row of the nodesets table: node's instances.
type nodeSet struct {
	Node string
	key  []byte // Node and a NUL, its "id" key (rowCache.key), or nil
	set  *instanceSet
}

func (r *serviceSet) items() *instanceSet { return r.set }
func (r *nodeSet) items() *instanceSet    { return r.set }
func (r *serviceSet) idKey() []byte       { return r.key }
func (r *nodeSet) idKey() []byte          { return r.key }

// setTable is one of the tables of sets: the instances' two, and the
// checks' (checkset.go). T is what the sets hold.
type setTable[T any] struct {
	name   string
	newSet func() *btree.BTreeG[T]
	row    func(key string, idKey []byte, s *btree.BTreeG[T]) any
}

var (
	serviceSets = setTable[*Instance]{tableSets, newInstanceSet,
		func(k string, ik []byte, s *instanceSet) any { return &serviceSet{Service: k, key: ik, set: s} }}
	nodeSets = setTable[*Instance]{tableNodeSets, newNodeSet,
		func(k string, ik []byte, s *instanceSet) any { return &nodeSet{Node: k, key: ik, set: s} }}
)

// of returns key's set as tx sees it, or nil, and adds the watch channel of
// its row to ws (it fires on every change of the set, and when a missing
// row is written).
func (t setTable[T]) of(tx *memdb.Txn, ws memdb.WatchSet, key string) *btree.BTreeG[T] {
	var raw any
	var err error
	if ws != nil {
		var ch <-chan struct{}
		ch, raw, err = tx.FirstWatch(t.name, "id", key)
		ws.Add(ch)
	} else {
		raw, err = lookupUnique(tx, t.name, "id", key) // no watch channel made
	}
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return nil
	}
	return raw.(interface{ items() *btree.BTreeG[T] }).items()
}

// setOf is serviceSets.of: service's instances.
func setOf(tx *memdb.Txn, ws memdb.WatchSet, service string) *instanceSet {
	return serviceSets.of(tx, ws, service)
}

// nodeSetOf is nodeSets.of: node's instances.
func nodeSetOf(tx *memdb.Txn, ws memdb.WatchSet, node string) *instanceSet {
	return nodeSets.of(tx, ws, node)
}

// probes are lookup keys for sets (a B-tree compares items), so that a
// lookup does not allocate an Instance.
var probes = sync.Pool{New: func() any { return new(Instance) }}

// getInstance returns the instance id of set, or nil.
func getInstance(set *instanceSet, id string) *Instance {
	if set == nil || id == "" {
		return nil
	}
	p := probes.Get().(*Instance)
	p.ID, p.idKey = id, keyOf(id)
	inst, _ := set.Get(p)
	p.ID, p.idKey = "", idKey{}
	probes.Put(p)
	return inst
}

// eachInstance calls fn for each of set's instances in the set's order.
func eachInstance(set *instanceSet, fn func(*Instance)) {
	if set == nil {
		return
	}
	set.Ascend(func(i *Instance) bool {
		fn(i)
		return true
	})
}

// appendSet appends set's instances to out in the set's order.
func appendSet(out []*Instance, set *instanceSet) []*Instance {
	eachInstance(set, func(i *Instance) { out = append(out, i) })
	return out
}

// eachSet calls fn for every service's set in service order, until fn
// returns false.
func eachSet(tx *memdb.Txn, fn func(*serviceSet) bool) {
	it, err := tx.Get(tableSets, "id")
	if err != nil {
		panic(err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if !fn(o.(*serviceSet)) {
			return
		}
	}
}

// allInstances returns every instance tx sees, ordered by service and ID.
func allInstances(tx *memdb.Txn) []*Instance {
	var out []*Instance
	eachSet(tx, func(s *serviceSet) bool {
		out = appendSet(out, s.set)
		return true
	})
	return out
}

// indexed reports whether inst is also a row of the instances table (for
// its draining index).
func indexed(inst *Instance) bool { return inst.Drain != nil }

var errNoKey = errors.New("fsm: instance: service and id are required")

// changedSets are the sets of one table that a transaction changed: a
// clone of each committed set, private to the transaction until write.
//
// read remembers the committed sets the transaction looked up (nil for a
// key without one) and has not changed: a registration looks its service's
// set up to find the instance it replaces, then changes it, and each lookup
// in go-memdb costs an iterator (lookupUnique). No one else writes the
// table while the transaction runs, so a committed set looked up once stays
// what the transaction sees until the transaction changes it (then m has
// it) or writes (which forgets both).
//
// cache is the writer's rowCache of the table: committed sets found in it
// need no lookup in go-memdb at all, in this transaction or a later one.
type changedSets[T any] struct {
	t     setTable[T]
	m     map[string]*btree.BTreeG[T]
	read  map[string]*btree.BTreeG[T]
	cache map[string]*btree.BTreeG[T]
	rows  *rowCache
}

func newChangedSets[T any](t setTable[T]) changedSets[T] {
	return changedSets[T]{t: t, m: map[string]*btree.BTreeG[T]{}, read: map[string]*btree.BTreeG[T]{}}
}

// get returns key's set as the transaction sees it so far (nil if it has
// none and never had).
func (c *changedSets[T]) get(tx *memdb.Txn, key string) *btree.BTreeG[T] {
	if s, ok := c.m[key]; ok {
		return s
	}
	return c.committed(tx, key)
}

// committed returns key's set as committed before the transaction.
func (c *changedSets[T]) committed(tx *memdb.Txn, key string) *btree.BTreeG[T] {
	if s, ok := c.read[key]; ok {
		return s
	}
	if s := c.cache[key]; s != nil {
		return s
	}
	s := c.t.of(tx, nil, key)
	c.read[key] = s
	if s != nil {
		c.cache[key] = s
	}
	return s
}

// mutable returns key's set, cloned for the transaction on first use.
func (c *changedSets[T]) mutable(tx *memdb.Txn, key string) *btree.BTreeG[T] {
	if s, ok := c.m[key]; ok {
		return s
	}
	s := c.committed(tx, key)
	if s == nil {
		s = c.t.newSet()
	} else {
		s = s.Clone()
	}
	delete(c.read, key)
	c.m[key] = s
	return s
}

// forget drops what the transaction looked up and changed.
func (c *changedSets[T]) forget() {
	clear(c.m)
	clear(c.read)
}

// write publishes the changed sets in tx (an emptied set deletes its row)
// and forgets them: holding them would keep a replaced store generation
// alive after a restore.
func (c *changedSets[T]) write(tx *memdb.Txn) error {
	defer c.forget()
	for key, s := range c.m {
		delete(c.cache, key)
		if s.Len() > 0 {
			if err := tx.Insert(c.t.name, c.t.row(key, c.rows.key(key), s)); err != nil {
				return err
			}
			pendSet(c.rows, c.cache, key, s)
		} else if _, err := tx.DeleteAll(c.t.name, "id", key); err != nil {
			return err
		}
	}
	return nil
}

// setsTxn is what one transaction does to the instances and the checks:
// their services' and nodes' sets, the draining rows of the instances
// table, and the services' check sets (checkset.go). A write batch
// (writeTxn) and a snapshot restore both go through it.
type setsTxn struct {
	tx       *memdb.Txn
	services changedSets[*Instance]
	nodes    changedSets[*Instance]
	checks   changedSets[*Check]
}

func newSetsTxn(tx *memdb.Txn, rows *rowCache) *setsTxn {
	s := &setsTxn{
		services: newChangedSets(serviceSets),
		nodes:    newChangedSets(nodeSets),
		checks:   newChangedSets(checkSets),
	}
	s.reset(tx, rows)
	return s
}

// reset starts a new transaction (the previous one flushed or dropped) of
// the store generation whose writer's cache is rows.
func (s *setsTxn) reset(tx *memdb.Txn, rows *rowCache) {
	s.tx = tx
	s.services.forget()
	s.nodes.forget()
	s.checks.forget()
	s.services.cache, s.services.rows = rows.sets, rows
	s.nodes.cache, s.nodes.rows = rows.nodes, rows
	s.checks.cache, s.checks.rows = rows.checks, rows
}

// instance returns the instance id of service as the transaction sees it.
func (s *setsTxn) instance(service, id string) *Instance {
	return getInstance(s.services.get(s.tx, service), id)
}

// nodeInstances returns node's instances as the transaction sees them.
func (s *setsTxn) nodeInstances(node string) []*Instance {
	return appendSet(nil, s.nodes.get(s.tx, node))
}

// put stores inst, replacing the record with its service and ID, which it
// returns (nil if there was none).
func (s *setsTxn) put(inst *Instance) (*Instance, error) {
	if inst.Service == "" || inst.ID == "" {
		return nil, errNoKey
	}
	// inst is new (committed records are never written again), so no
	// reader sees its key being set.
	inst.idKey = keyOf(inst.ID)
	old, _ := s.services.mutable(s.tx, inst.Service).ReplaceOrInsert(inst)
	if old != nil && old.Node != "" && old.Node != inst.Node {
		s.nodes.mutable(s.tx, old.Node).Delete(old)
	}
	if inst.Node != "" {
		s.nodes.mutable(s.tx, inst.Node).ReplaceOrInsert(inst)
	}
	if indexed(inst) {
		return old, s.tx.Insert(tableInstances, inst)
	}
	if old != nil && indexed(old) {
		return old, s.tx.Delete(tableInstances, old)
	}
	return old, nil
}

// remove deletes inst, the current record of its service and ID.
func (s *setsTxn) remove(inst *Instance) error {
	s.services.mutable(s.tx, inst.Service).Delete(inst)
	if inst.Node != "" {
		s.nodes.mutable(s.tx, inst.Node).Delete(inst)
	}
	if indexed(inst) {
		return s.tx.Delete(tableInstances, inst)
	}
	return nil
}

// flush writes the changed sets into the transaction.
func (s *setsTxn) flush() error {
	if err := s.services.write(s.tx); err != nil {
		return err
	}
	if err := s.checks.write(s.tx); err != nil {
		return err
	}
	return s.nodes.write(s.tx)
}

// rowCache remembers, for the one goroutine that writes a store
// generation, committed rows of the sets, nodesets, checksets and services
// tables: a write batch looks up the set and the record of every service it touches,
// and a lookup in go-memdb costs an iterator and a copy of the index's
// transaction (lookupUnique), about 5 % of a node's CPU under a stream of
// registrations. Readers never use it.
//
// Only rows that exist are remembered (a lookup that finds none goes to
// go-memdb each time). A transaction forgets the rows it changes as it
// writes them, and remembers their new versions only once it has
// committed (committed): a transaction dropped without a commit leaves the
// cache with fewer rows, never with rows that were not committed. A new
// generation (a restored snapshot) starts with an empty cache of its own.
type rowCache struct {
	// published is the generation's map of committed service records for
	// readers (storeState.services); the writer updates it in committed.
	published *sync.Map
	sets      map[string]*instanceSet // service -> its committed set
	nodes     map[string]*instanceSet // node -> its committed set
	checks    map[string]*checkSet    // service -> its committed check set
	services  map[string]*Service     // service -> its committed record
	pending   []pendingRow            // written by the open transaction
	keys      map[string][]byte       // name -> its "id" index key (key)
}

// key returns name and a NUL: the "id" index key of name's rows in the
// services, sets and check sets tables (a node's, in the node sets table),
// made once and shared by every version of those rows, so that writing a
// row does not make its key anew each time (go-memdb asks a row's indexer
// for it twice per insert, and keeps it in the radix tree). Keys are never
// written once made. The map is bounded like the interner's tables.
func (r *rowCache) key(name string) []byte {
	if name == "" {
		return nil // no entry in a string index (strIndex.FromObject)
	}
	if k, ok := r.keys[name]; ok {
		return k
	}
	if len(r.keys) >= internLimit {
		clear(r.keys)
	}
	k := nulTerminated(name)
	r.keys[name] = k
	return k
}

// pendingRow is a row the open transaction wrote: a set (into one of the
// set caches, by key) or a service record (into is nil).
type pendingRow struct {
	into any // map[string]*instanceSet or map[string]*checkSet
	key  string
	set  any // *instanceSet or *checkSet, as into holds
	svc  *Service
	drop bool // key's service record was deleted
}

func newRowCache(published *sync.Map) *rowCache {
	return &rowCache{published: published, sets: map[string]*instanceSet{}, nodes: map[string]*instanceSet{},
		checks: map[string]*checkSet{}, services: map[string]*Service{}, keys: map[string][]byte{}}
}

// pendSet notes that the open transaction wrote key's set s into a table
// whose cache is into; the caller has forgotten key's committed set. (Maps
// and pointers go into an interface without an allocation.)
func pendSet[T any](r *rowCache, into map[string]*btree.BTreeG[T], key string, s *btree.BTreeG[T]) {
	r.pending = append(r.pending, pendingRow{into: into, key: key, set: s})
}

// writeService notes that the open transaction writes svc, forgetting the
// committed record.
func (r *rowCache) writeService(svc *Service) {
	delete(r.services, svc.Name)
	r.pending = append(r.pending, pendingRow{key: svc.Name, svc: svc})
}

// forgetService notes that the open transaction deletes name's record.
func (r *rowCache) forgetService(name string) {
	delete(r.services, name)
	r.pending = append(r.pending, pendingRow{key: name, drop: true})
}

// committed remembers the rows the transaction that just committed wrote.
func (r *rowCache) committed() {
	for i, p := range r.pending {
		switch into := p.into.(type) {
		case nil:
			if p.drop {
				r.published.Delete(p.key)
				break
			}
			r.services[p.key] = p.svc
			r.published.Store(p.key, p.svc)
		case map[string]*instanceSet:
			into[p.key] = p.set.(*instanceSet)
		case map[string]*checkSet:
			into[p.key] = p.set.(*checkSet)
		}
		r.pending[i] = pendingRow{}
	}
	r.pending = r.pending[:0]
}
