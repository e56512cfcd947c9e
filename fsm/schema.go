package fsm

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tableInstances = "instances"
	tableChecks    = "checks"
	tableServices  = "services"
	tableNodes     = "nodes"
	tableTokens    = "tokens"
	tableIndex     = "index"
)

// indexEntry remembers the last Raft index that changed a table.
type indexEntry struct {
	Key   string
	Value uint64
}

func schema() *memdb.DBSchema {
	str := func(field string) *memdb.StringFieldIndex { return &memdb.StringFieldIndex{Field: field} }
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableInstances: {Name: tableInstances, Indexes: map[string]*memdb.IndexSchema{
			"id":      {Name: "id", Unique: true, Indexer: str("ID")},
			"service": {Name: "service", Indexer: str("Service")},
			"node":    {Name: "node", AllowMissing: true, Indexer: str("Node")},
			// Only draining instances have an entry, so the leader finds
			// the drain deadlines it enforces without scanning the catalog.
			"draining": {Name: "draining", AllowMissing: true, Indexer: drainingIndexer{}},
		}},
		tableChecks: {Name: tableChecks, Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: str("ID")},
			"instance": {Name: "instance", Indexer: str("Instance")},
			"service":  {Name: "service", Indexer: str("Service")},
			"owner":    {Name: "owner", AllowMissing: true, Indexer: str("Owner")},
		}},
		tableServices: {Name: tableServices, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Name")},
		}},
		tableNodes: {Name: tableNodes, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Name")},
		}},
		tableTokens: {Name: tableTokens, Indexes: map[string]*memdb.IndexSchema{
			"id":     {Name: "id", Unique: true, Indexer: str("Accessor")},
			"secret": {Name: "secret", Unique: true, Indexer: str("SecretHash")},
		}},
		tableIndex: {Name: tableIndex, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Key")},
		}},
	}}
}

// drainingIndexer indexes an instance by ID only while it is draining.
type drainingIndexer struct{}

func (drainingIndexer) FromObject(obj any) (bool, []byte, error) {
	inst, ok := obj.(*Instance)
	if !ok {
		return false, nil, fmt.Errorf("fsm: draining index: %T is not an instance", obj)
	}
	if inst.Drain == nil {
		return false, nil, nil
	}
	return true, []byte(inst.ID + "\x00"), nil
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
