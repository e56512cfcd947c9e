package fsm

import (
	"strings"
	"sync"

	"github.com/google/btree"
	"github.com/hashicorp/go-memdb"
)

// A service's checks are kept in a copy-on-write B-tree ordered by check ID
// (a checkSet), one per service, held by a row of the checksets table, as
// its instances are (instset.go, whose transaction machinery they share).
// They used to be rows of a go-memdb table with an ID and an owner index:
// two radix-tree leaves per check, each with its node, edges and key, about
// 350 bytes a check on top of the record (fsm/DESIGN.md, "Check sets"); a
// B-tree slot costs about 20.
//
// Check IDs are SERVICE:INSTANCE:NAME, so within one service's set an
// instance's checks are one run of IDs (checksOf). There is no index by
// owner: the checks a node owns are read in full only when a runner starts
// or loses track of its feed (Store.ChecksOwnedBy), and followed through
// the check feed otherwise (checkfeed.go).
//
// Watching: a service's checks are watched through its row, which changes
// whenever one of them does. An instance's checks are watched the same way,
// so a blocking read of one instance also wakes when another instance of
// its service changes a check, finds its index unchanged and waits again.
type checkSet = btree.BTreeG[*Check]

// checkSetRow is a row of the checksets table: service's checks.
type checkSetRow struct {
	Service string
	key     []byte // Service and a NUL, its "id" key (rowCache.key), or nil
	set     *checkSet
}

func (r *checkSetRow) items() *checkSet { return r.set }
func (r *checkSetRow) idKey() []byte    { return r.key }

var noCheckFreeList = btree.NewFreeListG[*Check](0)

func newCheckSet() *checkSet {
	return btree.NewWithFreeListG(setDegree, lessCheckID, noCheckFreeList)
}

func lessCheckID(a, b *Check) bool { return a.ID < b.ID }

var checkSets = setTable[*Check]{tableCheckSets, newCheckSet,
	func(k string, ik []byte, s *checkSet) any { return &checkSetRow{Service: k, key: ik, set: s} }}

// checkSetOf is checkSets.of: service's checks (nil if it has none), and the
// watch channel of its row added to ws.
func checkSetOf(tx *memdb.Txn, ws memdb.WatchSet, service string) *checkSet {
	return checkSets.of(tx, ws, service)
}

// checkProbes are lookup keys for check sets, so that a lookup does not
// allocate a Check.
var checkProbes = sync.Pool{New: func() any { return new(Check) }}

// getCheck returns the check id of set, or nil.
func getCheck(set *checkSet, id string) *Check {
	if set == nil {
		return nil
	}
	p := checkProbes.Get().(*Check)
	p.ID = id
	c, _ := set.Get(p)
	p.ID = ""
	checkProbes.Put(p)
	return c
}

// findCheck returns the check id, looking it up in the set of its service
// (set(service)). The service is the ID's part before its first ':' unless
// a service name holds ':' (the API refuses it, the catalog does not rely
// on that): then each longer prefix ending before a ':' is tried in turn.
// Such names can give two services' checks one ID ("a"/"b:c"/"x" and
// "a:b"/"c"/"x" are both a:b:c:x); the ID then names the check of the
// shorter service name, and each set keeps its own.
func findCheck(id string, set func(service string) *checkSet) *Check {
	for i := 0; ; {
		j := strings.IndexByte(id[i:], ':')
		if j < 0 {
			return nil
		}
		i += j
		if c := getCheck(set(id[:i]), id); c != nil {
			return c
		}
		i++
	}
}

// checksOfSet returns the checks in set, service's check set, or those of
// its instance id when id is set, in ID order. A name with ':' can make an
// instance's run of IDs hold another instance's checks, which are skipped
// (every check in the set is service's: sets are keyed by Check.Service).
// Each check's ModifyIndex raises *idx when idx is set.
func checksOfSet(set *checkSet, service, id string, idx *uint64) []*Check {
	if set == nil {
		return nil
	}
	var out []*Check
	visit := func(c *Check) bool {
		if id != "" && c.Instance != id {
			return true
		}
		if idx != nil {
			*idx = max(*idx, c.ModifyIndex)
		}
		out = append(out, c)
		return true
	}
	if id == "" {
		set.Ascend(visit)
		return out
	}
	prefix := CheckID(service, id, "")
	p := checkProbes.Get().(*Check)
	p.ID = prefix
	set.AscendGreaterOrEqual(p, func(c *Check) bool {
		return strings.HasPrefix(c.ID, prefix) && visit(c)
	})
	p.ID = ""
	checkProbes.Put(p)
	return out
}

// eachCheck calls fn for every check tx sees, in service order and then ID
// order, until fn returns false.
func eachCheck(tx *memdb.Txn, fn func(*Check) bool) {
	it, err := tx.Get(tableCheckSets, "id")
	if err != nil {
		panic(err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		more := true
		o.(*checkSetRow).set.Ascend(func(c *Check) bool {
			more = fn(c)
			return more
		})
		if !more {
			return
		}
	}
}

// check returns the check id as the transaction sees it, or nil.
func (s *setsTxn) check(id string) *Check {
	return findCheck(id, func(service string) *checkSet { return s.checks.get(s.tx, service) })
}

// checksOf returns the checks of service's instance id as the transaction
// sees them.
func (s *setsTxn) checksOf(service, id string) []*Check {
	return checksOfSet(s.checks.get(s.tx, service), service, id, nil)
}

// putCheck stores c, replacing the check with its ID.
func (s *setsTxn) putCheck(c *Check) {
	s.checks.mutable(s.tx, c.Service).ReplaceOrInsert(c)
}

// removeCheck deletes c, the current record of its ID.
func (s *setsTxn) removeCheck(c *Check) {
	s.checks.mutable(s.tx, c.Service).Delete(c)
}
