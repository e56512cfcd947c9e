package fsm

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tableInstances = "instances"
	tableSets      = "sets"
	tableNodeSets  = "nodesets"
	tableCheckSets = "checksets"
	tableServices  = "services"
	tableNodes     = "nodes"
	tableTokens    = "tokens"
	tableIndex     = "index"
)

// tableChecks names the checks' entry in the index table: the last Raft
// index that changed a check. The checks themselves are in their services'
// check sets (checkset.go).
const tableChecks = "checks"

// indexEntry remembers the last Raft index that changed a table.
type indexEntry struct {
	Key   string
	Value uint64
}

func schema() *memdb.DBSchema {
	// The string indexes read their field through a function (strindex.go),
	// with the keys memdb.StringFieldIndex would make.
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		// Every instance is in its service's set (instset.go), a row of
		// the sets table, and, if it has a Node, in that node's set, a row
		// of the nodesets table. Only draining instances are also rows of
		// the instances table, for its draining index.
		tableSets: {Name: tableSets, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Service", func(r *serviceSet) string { return r.Service })},
		}},
		tableNodeSets: {Name: tableNodeSets, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Node", func(r *nodeSet) string { return r.Node })},
		}},
		tableInstances: {Name: tableInstances, Indexes: map[string]*memdb.IndexSchema{
			"id":   {Name: "id", Unique: true, Indexer: instanceKeyIndexer{}},
			"node": {Name: "node", AllowMissing: true, Indexer: strField("Node", func(i *Instance) string { return i.Node })},
			// Only draining instances have an entry, so the leader finds
			// the drain deadlines it enforces without scanning the catalog.
			"draining": {Name: "draining", AllowMissing: true, Indexer: drainingIndexer{}},
		}},
		// A service's checks are a row of the checksets table (checkset.go).
		tableCheckSets: {Name: tableCheckSets, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Service", func(r *checkSetRow) string { return r.Service })},
		}},
		tableServices: {Name: tableServices, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Name", func(r *Service) string { return r.Name })},
		}},
		tableNodes: {Name: tableNodes, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Name", func(r *Node) string { return r.Name })},
		}},
		tableTokens: {Name: tableTokens, Indexes: map[string]*memdb.IndexSchema{
			"id":     {Name: "id", Unique: true, Indexer: strField("Accessor", func(t *Token) string { return t.Accessor })},
			"secret": {Name: "secret", Unique: true, Indexer: strField("SecretHash", func(t *Token) string { return t.SecretHash })},
		}},
		tableIndex: {Name: tableIndex, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strField("Key", func(e *indexEntry) string { return e.Key })},
		}},
	}}
}

// serviceKey returns the key of an instance of service with id in the
// instances table's primary index: "SERVICE\x00ID\x00". With id == "" it
// returns "SERVICE\x00", the prefix of every instance of the service.
// Neither part contains NUL (applyRegister refuses it), so keys are
// unambiguous and a service's prefix matches no other service's instances.
func serviceKey(service, id string) []byte {
	n := len(service) + 1
	if id != "" {
		n += len(id) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, service...)
	b = append(b, 0)
	if id != "" {
		b = append(b, id...)
		b = append(b, 0)
	}
	return b
}

// keyArgs reads the (service[, id]) arguments of a lookup in a
// (service, id) index.
func keyArgs(index string, args []any) ([]byte, error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, fmt.Errorf("fsm: %s index takes a service and an optional id, got %d arguments", index, len(args))
	}
	service, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("fsm: %s index: service is %T, not a string", index, args[0])
	}
	id := ""
	if len(args) == 2 {
		if id, ok = args[1].(string); !ok {
			return nil, fmt.Errorf("fsm: %s index: id is %T, not a string", index, args[1])
		}
		if id == "" {
			return nil, fmt.Errorf("fsm: %s index: empty id", index)
		}
	}
	return serviceKey(service, id), nil
}

// instanceKeyIndexer is the instances table's primary index on (Service,
// ID). It is memdb.CompoundIndex of two string fields, written out so that
// a key costs one allocation. Lookups take (service, id) for one instance or
// (service) for all of a service's instances.
type instanceKeyIndexer struct{}

func (instanceKeyIndexer) FromObject(obj any) (bool, []byte, error) {
	inst, ok := obj.(*Instance)
	if !ok {
		return false, nil, fmt.Errorf("fsm: instance index: %T is not an instance", obj)
	}
	if inst.Service == "" || inst.ID == "" {
		return false, nil, fmt.Errorf("fsm: instance index: service and id are required")
	}
	return true, serviceKey(inst.Service, inst.ID), nil
}

func (instanceKeyIndexer) FromArgs(args ...any) ([]byte, error) { return keyArgs("instance", args) }

// drainingIndexer indexes an instance by (Service, ID) only while it is draining.
type drainingIndexer struct{}

func (drainingIndexer) FromObject(obj any) (bool, []byte, error) {
	inst, ok := obj.(*Instance)
	if !ok {
		return false, nil, fmt.Errorf("fsm: draining index: %T is not an instance", obj)
	}
	if inst.Drain == nil {
		return false, nil, nil
	}
	return true, serviceKey(inst.Service, inst.ID), nil
}

func (drainingIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("fsm: draining index takes no arguments")
	}
	return []byte{}, nil
}

func (drainingIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	return drainingIndexer{}.FromArgs(args...)
}

// uniqueIndexers are the indexers of the unique indexes, by table and index
// name, for lookupUnique.
var uniqueIndexers = func() map[[2]string]memdb.Indexer {
	m := map[[2]string]memdb.Indexer{}
	for tn, t := range schema().Tables {
		for in, idx := range t.Indexes {
			if idx.Unique {
				m[[2]string{tn, in}] = idx.Indexer
			}
		}
	}
	return m
}()

// lookupUnique is tx.First on a unique index without a watch channel.
// go-memdb's First asks the radix tree for the watch channel of the node it
// finds, and the tree (fsm/third_party/go-immutable-radix) makes one the
// first time it is asked: a lookup nobody watches would leave a channel on
// the node until it is replaced. LowerBound finds the same record without
// asking; the key it found is compared with the one asked for.
func lookupUnique(tx *memdb.Txn, table, index string, args ...any) (any, error) {
	ix := uniqueIndexers[[2]string{table, index}]
	single, ok := ix.(memdb.SingleIndexer)
	if !ok {
		return tx.First(table, index, args...)
	}
	want, err := ix.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	it, err := tx.LowerBound(table, index, args...)
	if err != nil {
		return nil, err
	}
	obj := it.Next()
	if obj == nil {
		return nil, nil
	}
	if m, ok := ix.(keyMatcher); ok {
		if !m.hasKey(obj, want) {
			return nil, nil
		}
		return obj, nil
	}
	ok, got, err := single.FromObject(obj)
	if err != nil || !ok || !bytes.Equal(got, want) {
		return nil, err
	}
	return obj, nil
}

// keyMatcher is an indexer that tells whether obj's key is key without
// making obj's key (strIndex): lookupUnique's comparison, allocation-free.
type keyMatcher interface {
	hasKey(obj any, key []byte) bool
}
