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
// sees until it writes the row at its end (writeTxn.finish). Readers of the
// old row keep reading the old set, unchanged. Clone writes the original's
// copy-on-write context (a field no reader touches); only the one writer
// clones.
//
// Instances that need a secondary index (those with a Node, found when the
// node fails or by NodeInstances, and draining ones, DrainingInstances) are
// also rows of the instances table, whose schema is as before; instances
// without either are only in their set.
type instanceSet = btree.BTreeG[*Instance]

// setDegree gives nodes of up to 31 instances: about 20 bytes per instance
// with nodes two thirds full (measured: 2.1 MB for 100,000), and a write
// copies a few hundred bytes per level.
const setDegree = 16

// noFreeList is shared by every set: capacity 0, so no node is ever reused.
// (google/btree frees only nodes its clone made itself, which no reader has
// seen; without reuse that needs no argument.)
var noFreeList = btree.NewFreeListG[*Instance](0)

func newInstanceSet() *instanceSet {
	return btree.NewWithFreeListG(setDegree, lessInstanceID, noFreeList)
}

func lessInstanceID(a, b *Instance) bool { return a.ID < b.ID }

// serviceSet is a row of the sets table: service's instances.
type serviceSet struct {
	Service string
	set     *instanceSet
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
	p.ID = id
	inst, _ := set.Get(p)
	p.ID = ""
	probes.Put(p)
	return inst
}

// appendSet appends set's instances to out in ID order.
func appendSet(out []*Instance, set *instanceSet) []*Instance {
	if set == nil {
		return out
	}
	set.Ascend(func(i *Instance) bool {
		out = append(out, i)
		return true
	})
	return out
}

// eachInstance calls fn for each of set's instances in ID order.
func eachInstance(set *instanceSet, fn func(*Instance)) {
	if set == nil {
		return
	}
	set.Ascend(func(i *Instance) bool {
		fn(i)
		return true
	})
}

// setOf returns service's set as tx sees it, or nil, and adds the watch
// channel of its row to ws (it fires on every change of the service's
// instances).
func setOf(tx *memdb.Txn, ws memdb.WatchSet, service string) *instanceSet {
	var raw any
	var err error
	if ws != nil {
		var ch <-chan struct{}
		ch, raw, err = tx.FirstWatch(tableSets, "id", service)
		ws.Add(ch)
	} else {
		raw, err = lookupUnique(tx, tableSets, "id", service) // no watch channel made
	}
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return nil
	}
	return raw.(*serviceSet).set
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

// A node's instances (those registered with its name as Node) are a second
// set of the same records, ordered by service and ID, held by a row of the
// nodesets table: found when the node fails (setNodeFailed) and by
// NodeInstances. Agents register through the Consul API with their node's
// name, so most instances of such a catalog have one.
func newNodeSet() *instanceSet {
	return btree.NewWithFreeListG(setDegree, lessServiceID, noFreeList)
}

func lessServiceID(a, b *Instance) bool {
	if a.Service != b.Service {
		return a.Service < b.Service
	}
	return a.ID < b.ID
}

// nodeSet is a row of the nodesets table: node's instances.
type nodeSet struct {
	Node string
	set  *instanceSet
}

// nodeSetOf returns node's set as tx sees it, or nil, and adds the watch
// channel of its row to ws (it fires on every change of its instances).
func nodeSetOf(tx *memdb.Txn, ws memdb.WatchSet, node string) *instanceSet {
	var raw any
	var err error
	if ws != nil {
		var ch <-chan struct{}
		ch, raw, err = tx.FirstWatch(tableNodeSets, "id", node)
		ws.Add(ch)
	} else {
		raw, err = lookupUnique(tx, tableNodeSets, "id", node)
	}
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return nil
	}
	return raw.(*nodeSet).set
}

var errNoKey = errors.New("fsm: instance: service and id are required")

// setBuilder fills sets outside a batch (snapshot restore): each service's
// set is private to the builder until flush writes the rows.
type setBuilder struct {
	tx    *memdb.Txn
	sets  map[string]*instanceSet
	nodes map[string]*instanceSet
}

func newSetBuilder(tx *memdb.Txn) *setBuilder {
	return &setBuilder{tx: tx, sets: map[string]*instanceSet{}, nodes: map[string]*instanceSet{}}
}

func (b *setBuilder) get(service, id string) *Instance { return getInstance(b.sets[service], id) }

// put adds inst, replacing an instance with the same service and ID.
func (b *setBuilder) put(inst *Instance) error {
	if inst.Service == "" || inst.ID == "" {
		return errNoKey
	}
	s := b.sets[inst.Service]
	if s == nil {
		s = newInstanceSet()
		b.sets[inst.Service] = s
	}
	old, _ := s.ReplaceOrInsert(inst)
	if old != nil && old.Node != "" {
		b.nodes[old.Node].Delete(old)
	}
	if inst.Node != "" {
		ns := b.nodes[inst.Node]
		if ns == nil {
			ns = newNodeSet()
			b.nodes[inst.Node] = ns
		}
		ns.ReplaceOrInsert(inst)
	}
	if indexed(inst) {
		return b.tx.Insert(tableInstances, inst)
	}
	if old != nil && indexed(old) {
		return b.tx.Delete(tableInstances, old)
	}
	return nil
}

func (b *setBuilder) flush() error {
	for svc, s := range b.sets {
		if err := b.tx.Insert(tableSets, &serviceSet{Service: svc, set: s}); err != nil {
			return err
		}
	}
	for node, s := range b.nodes {
		if s.Len() == 0 {
			continue
		}
		if err := b.tx.Insert(tableNodeSets, &nodeSet{Node: node, set: s}); err != nil {
			return err
		}
	}
	return nil
}
