package fsm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// SnapshotVersion is the version of the snapshot stream format that
// Persist writes. Restore also reads every version from
// OldestSnapshotVersion on, converting older records as it goes.
//
// Version 2 stores Instance.Meta as sorted key/value pairs (version 1: a
// map) and check IDs as SERVICE:INSTANCE:NAME (version 1: INSTANCE:NAME).
const SnapshotVersion = 2

// OldestSnapshotVersion is the oldest snapshot stream version Restore reads.
const OldestSnapshotVersion = 1

// snapshotHeader opens every snapshot stream.
type snapshotHeader struct {
	Version int
	// Index is the last log index the FSM had applied when the snapshot was taken.
	Index uint64
}

// Record kinds in a snapshot stream. Append only.
const (
	recordInstance byte = 1
	recordCheck    byte = 2
	recordService  byte = 3
	recordNode     byte = 4
	recordToken    byte = 5
	recordIndex    byte = 6
	recordEnd      byte = 0xff
)

// snapshotTables lists what a snapshot carries, in order.
var snapshotTables = []struct {
	table string
	kind  byte
}{
	{tableServices, recordService},
	{tableInstances, recordInstance},
	{tableChecks, recordCheck},
	{tableNodes, recordNode},
	{tableTokens, recordToken},
	{tableIndex, recordIndex},
}

type snapshot struct {
	tx    *memdb.Txn
	index uint64
}

// Snapshot captures the store as of now. It only opens a read transaction;
// the records are written by Persist, concurrently with further applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{tx: f.store.cur.Load().db.Txn(false), index: f.store.applied.Load()}, nil
}

// Persist streams the header and then one record at a time.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	// Records are assembled in buf and written one at a time: instances and
	// checks by the hand-written encoder (snapenc.go), the few others by
	// go-msgpack, into buf as well.
	var buf, rec []byte
	enc := codec.NewEncoderBytes(&rec, msgpackHandle)
	if err := enc.Encode(snapshotHeader{Version: SnapshotVersion, Index: s.index}); err != nil {
		return fmt.Errorf("fsm: snapshot header: %w", err)
	}
	if _, err := bw.Write(rec); err != nil {
		return err
	}
	for _, t := range snapshotTables {
		if t.table == tableInstances {
			// Every instance, from the services' sets, in (service, ID)
			// order as the instances table held them before the sets.
			var werr error
			eachSet(s.tx, func(set *serviceSet) bool {
				set.set.Ascend(func(inst *Instance) bool {
					buf = appendInstance(mpUint(buf[:0], uint64(t.kind)), inst)
					_, werr = bw.Write(buf)
					return werr == nil
				})
				return werr == nil
			})
			if werr != nil {
				return werr
			}
			continue
		}
		if t.table == tableChecks {
			// Every check, from the services' check sets.
			var werr error
			eachCheck(s.tx, func(c *Check) bool {
				buf = appendCheck(mpUint(buf[:0], uint64(t.kind)), c)
				_, werr = bw.Write(buf)
				return werr == nil
			})
			if werr != nil {
				return werr
			}
			continue
		}
		it, err := s.tx.Get(t.table, "id")
		if err != nil {
			return err
		}
		for o := it.Next(); o != nil; o = it.Next() {
			buf = mpUint(buf[:0], uint64(t.kind))
			rec = rec[:0]
			enc.ResetBytes(&rec)
			if err := enc.Encode(o); err != nil {
				return fmt.Errorf("fsm: snapshot %s: %w", t.table, err)
			}
			buf = append(buf, rec...)
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
	}
	if _, err := bw.Write(mpUint(buf[:0], uint64(recordEnd))); err != nil {
		return err
	}
	return bw.Flush()
}

// Release is a no-op: a read transaction holds nothing to free.
func (s *snapshot) Release() {}

// ErrBadSnapshot is returned for a snapshot stream that cannot be read.
var ErrBadSnapshot = errors.New("fsm: bad snapshot")

// Restore replaces the whole store with the snapshot's content. The new store
// is built aside and swapped in, and then readers blocked on the old one are
// woken so they re-run against the new state.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	next, index, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.store.swap(next)
	// The check feeds' readers cannot tell what the restore changed.
	f.store.publishChecks(nil, true)
	f.outcomes.restored(max(f.store.applied.Load(), index))
	// Raft installs a snapshot at a log index past everything applied; an
	// operator's restore of an older snapshot supersedes the entries applied
	// so far just the same. Either way the applied index must not go back:
	// blocking queries and read-your-writes compare client indexes with it.
	f.advance(max(f.store.applied.Load(), index))
	return nil
}

func readSnapshot(r io.Reader) (*storeState, uint64, error) {
	dec := codec.NewDecoder(bufio.NewReaderSize(r, 64<<10), msgpackHandle)
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return nil, 0, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if hdr.Version < OldestSnapshotVersion || hdr.Version > SnapshotVersion {
		return nil, 0, fmt.Errorf("%w: version %d, want %d to %d", ErrBadSnapshot, hdr.Version, OldestSnapshotVersion, SnapshotVersion)
	}
	v1 := hdr.Version == 1
	st := newStoreState()
	in := st.intern
	tx := st.db.Txn(true)
	defer tx.Abort()
	sets := newSetsTxn(tx, st.rows)
	for {
		var kind byte
		if err := dec.Decode(&kind); err != nil {
			return nil, 0, fmt.Errorf("%w: record kind: %v", ErrBadSnapshot, err)
		}
		var obj any
		var table string
		switch kind {
		case recordEnd:
			if err := sets.flush(); err != nil {
				return nil, 0, fmt.Errorf("%w: %s record: %v", ErrBadSnapshot, tableInstances, err)
			}
			if err := publishRestored(tx, st); err != nil {
				return nil, 0, err
			}
			tx.Commit()
			st.rows.committed()
			return st, hdr.Index, nil
		case recordInstance:
			obj, table = &Instance{}, tableInstances
		case recordCheck:
			obj, table = &checkRecord{}, tableChecks
		case recordService:
			obj, table = &Service{}, tableServices
		case recordNode:
			obj, table = &Node{}, tableNodes
		case recordToken:
			obj, table = &Token{}, tableTokens
		case recordIndex:
			obj, table = &indexEntry{}, tableIndex
		default:
			return nil, 0, fmt.Errorf("%w: unknown record kind %d", ErrBadSnapshot, kind)
		}
		if v1 && kind == recordInstance {
			// A version-1 instance carries Meta as a map.
			old := &instanceV1{}
			if err := dec.Decode(old); err != nil {
				return nil, 0, fmt.Errorf("%w: %s record: %v", ErrBadSnapshot, table, err)
			}
			obj = old.upgrade()
		} else if err := dec.Decode(obj); err != nil {
			return nil, 0, fmt.Errorf("%w: %s record: %v", ErrBadSnapshot, table, err)
		}
		if r, ok := obj.(*checkRecord); ok {
			// FlapLevel was an int before 32921bc: clamp it as apply does.
			r.Check.FlapLevel = clampFlapLevel(r.FlapLevel)
			obj = &r.Check
		}
		// Share repeated values between records, as applying them would.
		switch o := obj.(type) {
		case *Instance:
			in.instance(o)
		case *Check:
			in.check(o) // gives the check a definition when it has none
			if v1 {
				o.ID = CheckID(o.Service, o.Instance, o.Name)
			}
			// Instances come before checks in a snapshot.
			if inst := sets.instance(o.Service, o.Instance); inst != nil {
				o.Instance = inst.ID
			}
		case *Node:
			o.Name = in.str(o.Name)
		}
		var err error
		switch o := obj.(type) {
		case *Instance:
			_, err = sets.put(o)
		case *Check:
			err = restoreCheck(sets, o)
		default:
			err = tx.Insert(table, obj)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s record: %v", ErrBadSnapshot, table, err)
		}
	}
}

// publishRestored gives every restored service record its set (none for a
// record without instances, which reads as an empty list, as it did before
// records held their sets) and puts it in the generation's map of committed
// records (storeState.services).
func publishRestored(tx *memdb.Txn, st *storeState) error {
	it, err := tx.Get(tableServices, "id")
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadSnapshot, tableServices, err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		svc := o.(*Service)
		svc.set = setOf(tx, nil, svc.Name)
		st.services.Store(svc.Name, svc)
	}
	return nil
}

// restoreCheck puts a check read from a snapshot into its service's set.
// Its ID must be the one CheckID makes of it (the set is found by the ID's
// service), and no check may come twice.
func restoreCheck(sets *setsTxn, c *Check) error {
	if c.Service == "" || c.ID != CheckID(c.Service, c.Instance, c.Name) {
		return fmt.Errorf("check %q: ID does not match its service %q, instance %q and name %q", c.ID, c.Service, c.Instance, c.Name)
	}
	// Only its own service's set: with ':' in names two services can hold
	// checks with one ID (findCheck).
	if getCheck(sets.checks.get(sets.tx, c.Service), c.ID) != nil {
		return fmt.Errorf("check %q comes twice", c.ID)
	}
	sets.putCheck(c)
	return nil
}

// checkRecord is a check as a snapshot holds it: FlapLevel decoded as the
// int it was before Check kept an int32 (the outer field shadows Check's).
type checkRecord struct {
	Check
	FlapLevel int
}

// instanceV1 is an instance as a version-1 snapshot holds it: the outer Meta
// (a map) shadows Instance.Meta when decoding.
type instanceV1 struct {
	Instance
	Meta map[string]string
}

// upgrade returns the instance in today's form: Meta as sorted pairs, and
// transitions caused by a check naming it by its new ID.
func (o *instanceV1) upgrade() *Instance {
	inst := &o.Instance
	inst.Meta = MetaFromMap(o.Meta)
	for i, t := range inst.Transitions {
		// Version-1 check IDs were INSTANCE:NAME; other causes
		// ("registration", "node") have no ':'.
		if strings.Count(t.Check, ":") == 1 {
			inst.Transitions[i].Check = inst.Service + ":" + t.Check
		}
	}
	return inst
}
