package fsm

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Store is the replicated catalog. Reads are safe from any goroutine and
// never block writers; each read sees one consistent version. Every read
// takes an optional watch set (nil is fine) to which it adds the channels
// that close when its result may have changed, and returns the index of that
// result, which is never 0.
type Store struct {
	cur atomic.Pointer[storeState]
	// applied is the index of the last log entry applied to the store
	// (through Apply or a snapshot restore).
	applied atomic.Uint64
	// notify is closed and replaced every time applied advances.
	notifyMu sync.Mutex
	notify   chan struct{}
	// waiters wait for a given index (WaitForIndex): advance wakes only
	// those it reached, not every writer waiting on this node. Waiters of
	// one index share its channel (waiting): a waiter that gives up leaves
	// its channel behind until the index is reached, and on a node cut off
	// from its leader every read waits for the same acknowledged index
	// (WaitAcked), so the heap holds one entry per index, not one per read.
	waiters waiterHeap
	waiting map[uint64]chan struct{}
	// publishing is odd from just before a batch's commit until its
	// service records are in the generation's map (rowCache.committed): a
	// reader that sees it odd may have seen the commit through go-memdb
	// (which wakes watchers in Commit) and must not read the map, which
	// lags it (ServiceList).
	publishing atomic.Uint64
	// acked is the highest index of a write this node acknowledged to a
	// client before applying it (NoteAcked): its reads wait for it.
	acked atomic.Uint64
	// feeds are the open CheckFeeds (checkfeed.go).
	feedsMu sync.Mutex
	feeds   []*CheckFeed
}

// indexWaiter is closed once the store has applied index.
type indexWaiter struct {
	index uint64
	ch    chan struct{}
}

// waiterHeap is a min-heap of waiters by index.
type waiterHeap []indexWaiter

func (h waiterHeap) Len() int           { return len(h) }
func (h waiterHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h waiterHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *waiterHeap) Push(x any)        { *h = append(*h, x.(indexWaiter)) }
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}

// appliedWaitCh returns a channel that closes once the store has applied
// index (at once if it has).
func (s *Store) appliedWaitCh(index uint64) <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if s.applied.Load() >= index {
		return closedCh
	}
	if ch, ok := s.waiting[index]; ok {
		return ch
	}
	ch := make(chan struct{})
	if s.waiting == nil {
		s.waiting = map[uint64]chan struct{}{}
	}
	s.waiting[index] = ch
	heap.Push(&s.waiters, indexWaiter{index: index, ch: ch})
	return ch
}

// closedCh is a closed channel: what a wait for an index already applied
// returns.
var closedCh = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// storeState is one generation of the store; Restore replaces it whole.
type storeState struct {
	db *memdb.MemDB
	// abandon closes when this generation is replaced, waking every reader
	// blocked on it.
	abandon chan struct{}
	// intern is used by the one goroutine that writes this generation.
	intern *interner
	// rows are committed rows the writer looked up, for the same
	// goroutine (rowCache).
	rows *rowCache
	// services holds the committed record of every service (name ->
	// *Service), for readers that need the current record and nothing
	// else from the same transaction (ServiceList without a watch set, a
	// discovery read): a lookup in go-memdb costs an iterator and an index
	// transaction, ~5 % of a discovery read's CPU. The writer updates it
	// after each commit and before the applied index moves (rowCache.
	// committed), so a reader that waited for an index finds it there.
	services sync.Map
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{notify: make(chan struct{})}
	s.cur.Store(newStoreState())
	return s
}

// AppliedCh returns a channel that closes the next time the applied index
// advances (see AppliedIndex).
func (s *Store) AppliedCh() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// advance records that the store now reflects the log up to index.
func (s *Store) advance(index uint64) {
	s.notifyMu.Lock()
	s.applied.Store(index)
	close(s.notify)
	s.notify = make(chan struct{})
	for len(s.waiters) > 0 && s.waiters[0].index <= index {
		w := heap.Pop(&s.waiters).(indexWaiter)
		delete(s.waiting, w.index)
		close(w.ch)
	}
	s.notifyMu.Unlock()
}

func newStoreState() *storeState {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("fsm: bad schema: %v", err)) // a programming error
	}
	st := &storeState{db: db, abandon: make(chan struct{}), intern: newInterner()}
	st.rows = newRowCache(&st.services)
	return st
}

// swap installs a new generation and wakes readers of the old one.
func (s *Store) swap(next *storeState) {
	old := s.cur.Swap(next)
	close(old.abandon)
}

func (s *Store) read(ws memdb.WatchSet) *memdb.Txn {
	st := s.cur.Load()
	if ws != nil {
		ws.Add(st.abandon)
	}
	return st.db.Txn(false)
}

// NoteAcked records that this node acknowledged the write at index to a
// client, committed by the leader but maybe not applied here yet. Reads on
// this node wait for it (WaitAcked), so that a client reads its write on the
// node that answered it without the write waiting for this node's apply.
func (s *Store) NoteAcked(index uint64) {
	for {
		cur := s.acked.Load()
		if index <= cur || s.acked.CompareAndSwap(cur, index) {
			return
		}
	}
}

// WaitAcked waits until the store has applied every write this node
// acknowledged (NoteAcked), for at most max or until ctx ends; it reports
// whether the store got there. It costs two atomic loads when nothing is
// pending.
func (s *Store) WaitAcked(ctx context.Context, max time.Duration) bool {
	a := s.acked.Load()
	if s.applied.Load() >= a {
		return true
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-s.appliedWaitCh(a):
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return s.applied.Load() >= a
}

// AppliedIndex returns the index of the last Raft log entry reflected in
// the store. It never goes back, not even when a restore installs an older
// snapshot (whose records' indexes may then be lower than before).
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// AbandonCh closes when the current generation of the store is replaced by a
// snapshot restore.
func (s *Store) AbandonCh() <-chan struct{} { return s.cur.Load().abandon }

// tombstonePrefix prefixes the index-table keys that remember, for each
// service whose last instance was deregistered, the index of that deletion,
// so that the empty result of a deleted service keeps a meaningful index.
// A tombstone is removed when the service comes back.
const tombstonePrefix = "deleted-service/"

func tombstone(tx *memdb.Txn, service string) uint64 {
	raw, err := tx.First(tableIndex, "id", tombstonePrefix+service)
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return 0
	}
	return raw.(*indexEntry).Value
}

// maxTombstone returns the highest deletion index among tombstones of
// services named from..to (inclusive) that start with prefix; an empty to
// means no upper bound.
func maxTombstone(tx *memdb.Txn, prefix, from, to string) uint64 {
	it, err := tx.LowerBound(tableIndex, "id", tombstonePrefix+from)
	if err != nil {
		panic(err)
	}
	var m uint64
	for o := it.Next(); o != nil; o = it.Next() {
		e := o.(*indexEntry)
		name, ok := strings.CutPrefix(e.Key, tombstonePrefix)
		if !ok || !strings.HasPrefix(name, prefix) || (to != "" && name > to) {
			break
		}
		m = max(m, e.Value)
	}
	return m
}

func atLeastOne(i uint64) uint64 {
	if i == 0 {
		return 1
	}
	return i
}

func tableIndexTxn(tx *memdb.Txn, ws memdb.WatchSet, tables ...string) uint64 {
	var max uint64
	for _, t := range tables {
		ch, raw, err := tx.FirstWatch(tableIndex, "id", t)
		if err != nil {
			panic(err)
		}
		if ws != nil {
			ws.Add(ch)
		}
		if raw != nil && raw.(*indexEntry).Value > max {
			max = raw.(*indexEntry).Value
		}
	}
	return max
}

// LastIndex returns the highest index that changed any table.
func (s *Store) LastIndex() uint64 {
	tx := s.read(nil)
	return atLeastOne(tableIndexTxn(tx, nil, tableInstances, tableChecks, tableServices, tableNodes, tableTokens))
}

// ServiceInstances returns every instance of service, ordered by ID. The
// index is that of the last write that touched the service: its record's
// ModifyIndex while it has instances, else the index of the deletion of its
// last instance, else (a service never registered) 1. So the index of one
// service never moves for changes to another, and watchers of one service
// are never woken with a new index by changes to another.
func (s *Store) ServiceInstances(ws memdb.WatchSet, service string) (uint64, []*Instance) {
	idx, l := s.ServiceList(ws, service)
	if l == nil {
		return idx, nil
	}
	return idx, slices.Clone(l.Instances)
}

// ServiceList is ServiceInstances without the copy: the list is shared by
// every reader of this version of the service (nil when it has no
// instances), and the caller must not modify it.
func (s *Store) ServiceList(ws memdb.WatchSet, service string) (uint64, *List) {
	if ws == nil && s.publishing.Load()&1 == 0 {
		// The committed record, without a transaction; it holds its set.
		if v, ok := s.cur.Load().services.Load(service); ok {
			svc := v.(*Service)
			return atLeastOne(svc.ModifyIndex), svc.listOf()
		}
	}
	tx := s.read(ws)
	var raw any
	var err error
	if ws != nil {
		var ch <-chan struct{}
		ch, raw, err = tx.FirstWatch(tableServices, "id", service)
		// The service row's watch channel is what wakes a reader: every
		// write that touches one of these instances rewrites it.
		ws.Add(ch)
	} else {
		raw, err = lookupUnique(tx, tableServices, "id", service) // no watch channel made
	}
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return atLeastOne(tombstone(tx, service)), nil
	}
	svc := raw.(*Service)
	return atLeastOne(svc.ModifyIndex), svc.listOf()
}

// listOf returns the list of this version's instances, made from its set
// by the first reader that asks.
func (svc *Service) listOf() *List {
	if l := svc.list.Load(); l != nil {
		return l
	}
	l := &List{Instances: appendSet(make([]*Instance, 0, svc.Instances), svc.set), set: svc.set}
	if !svc.list.CompareAndSwap(nil, l) {
		l = svc.list.Load()
	}
	return l
}

// Instance returns the instance id of service and its checks, or nil if it
// is not registered. The index is the highest ModifyIndex of the instance
// and its checks, or the instances table's index if it is absent.
func (s *Store) Instance(ws memdb.WatchSet, service, id string) (uint64, *Instance, []*Check) {
	tx := s.read(ws)
	if service == "" || id == "" {
		// No instance has an empty service or ID (the index refuses them),
		// so there is nothing to watch.
		return atLeastOne(tableIndexTxn(tx, nil, tableInstances)), nil, nil
	}
	inst := getInstance(setOf(tx, nil, service), id)
	if inst == nil {
		// Watch the service's set: it changes when the instance comes.
		if ws != nil {
			setOf(tx, ws, service)
		}
		return atLeastOne(tableIndexTxn(tx, nil, tableInstances)), nil, nil
	}
	if ws != nil {
		// This version's own channel: it closes when a committed write
		// replaces or deletes it, not for the service's other instances.
		ws.Add(inst.watchCh())
	}
	idx := inst.ModifyIndex
	checks := instanceChecks(tx, ws, service, id)
	for _, c := range checks {
		idx = max(idx, c.ModifyIndex)
	}
	return atLeastOne(idx), inst, checks
}

// CurrentInstance is Instance for a caller that needs neither an index nor
// a watch: the instance id of service and its checks, or nil. It makes no
// other lookup (Instance also looks up the instances table's index), which
// matters on the write path, where every registration asks whether it would
// change anything (api.UnchangedRegistration).
func (s *Store) CurrentInstance(service, id string) (*Instance, []*Check) {
	if service == "" || id == "" {
		return nil, nil
	}
	if s.publishing.Load()&1 == 0 {
		// The committed record holds its set (as in ServiceList): an
		// instance that is not there yet, as for every new registration
		// that asks whether it changes anything, costs no transaction.
		// One that is there is read again below with its checks, from one
		// version of the catalog.
		if v, ok := s.cur.Load().services.Load(service); ok && getInstance(v.(*Service).set, id) == nil {
			return nil, nil
		}
	}
	tx := s.read(nil)
	inst := getInstance(setOf(tx, nil, service), id)
	if inst == nil {
		return nil, nil
	}
	return inst, instanceChecks(tx, nil, service, id)
}

func instanceChecks(tx *memdb.Txn, ws memdb.WatchSet, service, id string) []*Check {
	return checksOf(tx, ws, service, id, nil)
}

// checksOf returns the checks of service, or of its instance id when id is
// set, in ID order, from the service's check set; ws watches the set's row.
// Each check's ModifyIndex raises *idx when idx is set.
func checksOf(tx *memdb.Txn, ws memdb.WatchSet, service, id string, idx *uint64) []*Check {
	return checksOfSet(checkSetOf(tx, ws, service), service, id, idx)
}

// Instances returns every instance in the catalog, ordered by service and ID.
func (s *Store) Instances(ws memdb.WatchSet) (uint64, []*Instance) {
	tx := s.read(ws)
	idx := tableIndexTxn(tx, ws, tableInstances)
	return atLeastOne(idx), allInstances(tx)
}

// DrainingInstances returns the instances that are draining. The watch set
// fires only when one starts, stops or changes while draining.
func (s *Store) DrainingInstances(ws memdb.WatchSet) []*Instance {
	tx := s.read(ws)
	it, err := tx.Get(tableInstances, "draining_prefix")
	if err != nil {
		panic(err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*Instance
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(*Instance))
	}
	return out
}

// NodeInstances returns the instances registered with Node = node.
// The watch set fires on any change of them (the node's set row).
func (s *Store) NodeInstances(ws memdb.WatchSet, node string) (uint64, []*Instance) {
	tx := s.read(ws)
	idx := tableIndexTxn(tx, nil, tableInstances)
	var out []*Instance
	if node != "" {
		out = appendSet(nil, nodeSetOf(tx, ws, node))
	}
	return atLeastOne(idx), out
}

// Services returns up to limit services whose names start with prefix and sort
// after the name after, and whether more follow. limit <= 0 means no limit.
// The index is that of the services table.
func (s *Store) Services(ws memdb.WatchSet, prefix, after string, limit int) (uint64, []*Service, bool) {
	tx := s.read(ws)
	idx := tableIndexTxn(tx, ws, tableServices)
	start := prefix
	if after >= start {
		start = after + "\x00"
	}
	it, err := tx.LowerBound(tableServices, "id", start)
	if err != nil {
		panic(err)
	}
	var out []*Service
	for o := it.Next(); o != nil; o = it.Next() {
		svc := o.(*Service)
		if !strings.HasPrefix(svc.Name, prefix) {
			break
		}
		if limit > 0 && len(out) == limit {
			return atLeastOne(idx), out, true
		}
		out = append(out, svc)
	}
	return atLeastOne(idx), out, false
}

// Checks returns all checks, or those of one service when service is set,
// in ID order; ws fires on any change of a check (of one service's checks
// when service is set).
func (s *Store) Checks(ws memdb.WatchSet, service string) (uint64, []*Check) {
	tx := s.read(ws)
	if service == "" {
		idx := tableIndexTxn(tx, ws, tableChecks)
		var out []*Check
		eachCheck(tx, func(c *Check) bool {
			out = append(out, c)
			return true
		})
		return atLeastOne(idx), inIDOrder(out)
	}
	checks := checksOf(tx, ws, service, "", nil)
	return atLeastOne(tableIndexTxn(tx, nil, tableChecks)), checks
}

// ChecksOwnedBy returns the checks the node owner runs, in ID order. It reads every check (there is no index by owner: checkset.go);
// ws fires on any change of a check.
func (s *Store) ChecksOwnedBy(ws memdb.WatchSet, owner string) (uint64, []*Check) {
	tx := s.read(ws)
	idx := tableIndexTxn(tx, ws, tableChecks)
	var out []*Check
	if owner != "" {
		eachCheck(tx, func(c *Check) bool {
			if c.Owner == owner {
				out = append(out, c)
			}
			return true
		})
	}
	return atLeastOne(idx), inIDOrder(out)
}

// inIDOrder sorts checks read set by set (in service order) into ID order:
// the two differ where a service's name is a prefix of another's followed by
// a byte below ':' ("web" and "web-api"), so the sort has little to move.
func inIDOrder(checks []*Check) []*Check {
	byID := func(a, b *Check) int { return strings.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(checks, byID) {
		slices.SortFunc(checks, byID)
	}
	return checks
}

// Check returns one check or nil. ws fires on a change of the checks of
// each service findCheck looked in (one, unless a service's name has ':').
// Without a watch set no channel is asked for (lookupUnique).
func (s *Store) Check(ws memdb.WatchSet, id string) *Check {
	tx := s.read(ws)
	return findCheck(id, func(service string) *checkSet { return checkSetOf(tx, ws, service) })
}

// Nodes returns the cluster members the catalog knows.
func (s *Store) Nodes(ws memdb.WatchSet) (uint64, []*Node) {
	return listTable[*Node](s, ws, tableNodes)
}

// Node returns one node or nil.
func (s *Store) Node(name string) *Node {
	raw, err := s.read(nil).First(tableNodes, "id", name)
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return nil
	}
	return raw.(*Node)
}

// Tokens returns every token.
func (s *Store) Tokens(ws memdb.WatchSet) (uint64, []*Token) {
	return listTable[*Token](s, ws, tableTokens)
}

// TokenBySecretHash returns the token whose secret hashes to hash, or nil.
func (s *Store) TokenBySecretHash(hash string) *Token {
	raw, err := s.read(nil).First(tableTokens, "secret", hash)
	if err != nil {
		panic(err)
	}
	if raw == nil {
		return nil
	}
	return raw.(*Token)
}

func listTable[T any](s *Store, ws memdb.WatchSet, table string) (uint64, []T) {
	tx := s.read(ws)
	idx := tableIndexTxn(tx, ws, table)
	it, err := tx.Get(table, "id")
	if err != nil {
		panic(err)
	}
	var out []T
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(T))
	}
	return atLeastOne(idx), out
}

// ServiceSummary counts a service's instances by status.
type ServiceSummary struct {
	Name      string
	Tags      []string
	Instances int
	Passing   int
	Warning   int
	Critical  int
	// Unavailable counts instances in maintenance or draining (whatever their status).
	Unavailable int
	ModifyIndex uint64
}

// ServiceSummaries returns, from one consistent view, up to limit summaries
// of services whose names start with prefix and sort after the name after,
// keeping only services with at least one instance for which match returns
// true (match may be nil). more reports whether further services follow.
//
// The index is that of the page: the highest ModifyIndex of the services
// the page scanned (matching or not, up to and including the one that shows
// more follow) and of the deletions of services in that range, so a change
// to a service on another page does not move it. The watch set fires on any
// change to the services table; a reader compares indexes to tell.
func (s *Store) ServiceSummaries(ws memdb.WatchSet, prefix, after string, limit int, match func(*Instance) bool) (uint64, []ServiceSummary, bool) {
	tx := s.read(ws)
	tableIndexTxn(tx, ws, tableServices)
	start := prefix
	if after >= start {
		start = after + "\x00"
	}
	it, err := tx.LowerBound(tableServices, "id", start)
	if err != nil {
		panic(err)
	}
	var out []ServiceSummary
	var idx uint64
	more, last := false, ""
	for o := it.Next(); o != nil; o = it.Next() {
		svc := o.(*Service)
		if !strings.HasPrefix(svc.Name, prefix) {
			break
		}
		idx = max(idx, svc.ModifyIndex)
		sum, ok := summarize(tx, svc, match)
		if !ok {
			continue
		}
		if limit > 0 && len(out) == limit {
			more, last = true, svc.Name
			break
		}
		out = append(out, sum)
	}
	idx = max(idx, maxTombstone(tx, prefix, start, last))
	return atLeastOne(idx), out, more
}

func summarize(tx *memdb.Txn, svc *Service, match func(*Instance) bool) (ServiceSummary, bool) {
	sum := ServiceSummary{Name: svc.Name, ModifyIndex: svc.ModifyIndex}
	matched := match == nil
	tags := map[string]struct{}{}
	eachInstance(setOf(tx, nil, svc.Name), func(inst *Instance) {
		matched = matched || match(inst)
		sum.Instances++
		switch inst.Status {
		case Passing:
			sum.Passing++
		case Warning:
			sum.Warning++
		default:
			sum.Critical++
		}
		if inst.Maintenance != nil || inst.Drain != nil {
			sum.Unavailable++
		}
		for _, t := range inst.Tags {
			tags[t] = struct{}{}
		}
	})
	sum.Tags = make([]string, 0, len(tags))
	for t := range tags {
		sum.Tags = append(sum.Tags, t)
	}
	sort.Strings(sum.Tags)
	return sum, matched
}

// ServiceHealth returns, from one consistent view, what a health read of
// service shows: its instances (ordered by ID), their checks (ordered by
// check ID, so each instance's checks are one run) and the catalog's
// nodes. The index is the highest of the service's (ServiceInstances),
// its checks' ModifyIndex and the nodes table's, so it moves with every
// change the result can show and never goes back. ws fires on a change to
// the service, its checks or any node.
func (s *Store) ServiceHealth(ws memdb.WatchSet, service string) (uint64, []*Instance, []*Check, []*Node) {
	tx := s.read(ws)
	ch, raw, err := tx.FirstWatch(tableServices, "id", service)
	if err != nil {
		panic(err)
	}
	if ws != nil {
		ws.Add(ch)
	}
	var idx uint64
	var insts []*Instance
	var checks []*Check
	if raw == nil {
		idx = tombstone(tx, service)
	} else {
		svc := raw.(*Service)
		idx = svc.ModifyIndex
		insts = appendSet(make([]*Instance, 0, svc.Instances), setOf(tx, nil, service))
		checks = checksOf(tx, ws, service, "", &idx)
	}
	idx = max(idx, tableIndexTxn(tx, ws, tableNodes))
	nit, err := tx.Get(tableNodes, "id")
	if err != nil {
		panic(err)
	}
	var nodes []*Node
	for o := nit.Next(); o != nil; o = nit.Next() {
		nodes = append(nodes, o.(*Node))
	}
	return atLeastOne(idx), insts, checks, nodes
}
