package fsm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// bufferSink is a raft.SnapshotSink that keeps the snapshot in memory.
type bufferSink struct {
	bytes.Buffer
	closed, cancelled bool
	// failAfter, when positive, makes writes fail once that many bytes
	// have been written.
	failAfter int
}

var _ raft.SnapshotSink = (*bufferSink)(nil)

func (s *bufferSink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *bufferSink) ID() string    { return "test" }
func (s *bufferSink) Close() error  { s.closed = true; return nil }
func (s *bufferSink) Cancel() error { s.cancelled = true; return nil }

// persist takes a snapshot of f and returns its bytes.
func persist(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return persistSnapshot(t, snap)
}

func persistSnapshot(t testing.TB, snap raft.FSMSnapshot) []byte {
	t.Helper()
	defer snap.Release()
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%t cancelled=%t, want closed only", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// restore restores snapshot b into f, failing the test on error.
func restore(t testing.TB, f *fsm.FSM, b []byte) {
	t.Helper()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
}

// populate returns an FSM in which every table holds records with every
// field set: see TestPopulateSetsEveryField.
func populate(t testing.TB) *fsm.FSM {
	t.Helper()
	full := fsm.CheckDefinition{
		Name: "full", Type: fsm.CheckHTTP, Target: "https://10.0.0.1:8443/health", Method: "HEAD",
		Header:        map[string][]string{"Authorization": {"Bearer x"}, "X-Probe": {"a", "b"}},
		TLSSkipVerify: true, GRPCService: "grpc.health.v1.Health",
		Interval: 10e9, Timeout: 2e9, TTL: 60e9,
		FailuresBeforeCritical: 3, SuccessesBeforePassing: 2,
		InitialStatus: fsm.Warning, DeregisterCriticalAfter: 600e9, AnyTarget: true,
	}
	f := newFSM(t)
	applyAll(t, f, 1,
		fsmtest.NodeUpdate(t, t0,
			fsmtest.Server("s1", fsm.NodeAlive),
			fsmtest.Server("s2", fsm.NodeAlive),
			fsm.NodeState{Name: "c1", Address: "10.0.0.30:8751", Role: "client", Status: fsm.NodeAlive}),
		fsmtest.Register(t, "web-1", "web", func(r *fsm.RegisterRequest) {
			r.Address, r.Port, r.Tags, r.Meta = "10.0.0.1", 8080, []string{"primary", "v2"}, meta("zone", "a", "rack", "1")
			r.Version, r.Weight, r.Node, r.Time = "2.1.0", 10, "s1", t0+1
			r.Trusted = true
			r.Checks = []fsm.CheckDefinition{full, fsmtest.TTLCheck("ttl", fsm.Passing)}
		}),
		fsmtest.Register(t, "web-2", "web", fsmtest.WithNode("s2"), fsmtest.WithAddress("10.0.0.2", 8080), fsmtest.WithTime(t0+1)),
		fsmtest.Register(t, "api-1", "api", fsmtest.WithAddress("10.0.0.3", 9000), fsmtest.WithChecks(fsmtest.HTTPCheck("http", "http://10.0.0.3/", fsm.Passing))),
		fsmtest.CheckUpdate(t, fsm.PickOwner("web:web-1:full", []string{"s1", "s2"}), t0+2,
			fsm.CheckUpdate{Check: "web:web-1:full", Status: fsm.Passing, Output: "200 OK", FlapLevel: 1}),
		fsmtest.CheckUpdate(t, fsm.PickOwner("api:api-1:http", []string{"s1", "s2"}), t0+3,
			fsm.CheckUpdate{Check: "api:api-1:http", Status: fsm.Passing, Output: "flaps", Flapping: true, FlapUntil: t0 + 1000, FlapLevel: 3}),
		fsmtest.Maintenance(t, "web", "web-1", fsm.ModeMaintenance, func(r *fsm.MaintenanceRequest) { r.Reason, r.Time = "kernel upgrade", t0+4 }),
		fsmtest.Maintenance(t, "web", "web-1", fsm.ModeDrain, func(r *fsm.MaintenanceRequest) { r.Deadline, r.Time = t0+500, t0+5 }),
		fsmtest.Metrics(t, t0+6, fsm.InstanceMetrics{Service: "web", Instance: "web-1", Metrics: map[string]float64{"rps": 12.5, "p99_ms": 40}}),
		fsmtest.NodeUpdate(t, t0+7, fsmtest.Server("s2", fsm.NodeFailed)),
		fsmtest.TokenSet(t, fsm.Token{Accessor: "acc-1", SecretHash: "hash-1", Description: "deployer", Policy: "write", Prefixes: []string{"web", "api"}}),
		fsmtest.TokenSet(t, fsm.Token{Accessor: "acc-2", SecretHash: "hash-2", Description: "reader", Policy: "read"}),
	)
	return f
}

// TestPopulateSetsEveryField guards the snapshot round trip: a field that is
// zero in every record would pass it even if the snapshot dropped it.
func TestPopulateSetsEveryField(t *testing.T) {
	d := dumpStore(populate(t).Store())
	assertEveryFieldSet(t, d.Instances)
	assertEveryFieldSet(t, d.Checks)
	assertEveryFieldSet(t, d.Services)
	// populate's fixtures (snapshot-v1.bin, the archive) predate external
	// nodes and departures, whose fields only they set: see populateExternal.
	assertEveryFieldSet(t, dumpStore(populateExternal(t).Store()).Nodes)
	assertEveryFieldSet(t, d.Tokens)
}

// assertEveryFieldSet fails unless every exported field (and every field of
// an embedded struct) is non-zero in at least one of records.
func assertEveryFieldSet[T any](t *testing.T, records []*T) {
	t.Helper()
	if len(records) == 0 {
		t.Fatalf("no %T records", records)
	}
	set := map[string]bool{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(prefix+f.Name+".", v.Field(i))
				continue
			}
			name := prefix + f.Name
			set[name] = set[name] || !v.Field(i).IsZero()
		}
	}
	for _, r := range records {
		walk(fmt.Sprintf("%T.", *r), reflect.ValueOf(r).Elem())
	}
	for name, ok := range set {
		if !ok {
			t.Errorf("%s is zero in every record", name)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Run("restoring into a fresh FSM reproduces every table and the applied index", func(t *testing.T) {
		src := populate(t)
		dst := newFSM(t)
		restore(t, dst, persist(t, src))
		assertSameStore(t, dumpStore(src.Store()), dumpStore(dst.Store()))
		if got, want := dst.AppliedIndex(), src.AppliedIndex(); got != want {
			t.Errorf("AppliedIndex = %d, want %d", got, want)
		}
		// The restored store carries on exactly like the original.
		next := src.AppliedIndex() + 1
		for _, f := range []*fsm.FSM{src, dst} {
			fsmtest.MustApply(t, f, next, fsmtest.Register(t, "api-2", "api"))
			fsmtest.MustApply(t, f, next+1, fsmtest.NodeUpdate(t, t0+9, fsmtest.Server("s2", fsm.NodeAlive)))
		}
		assertSameStore(t, dumpStore(src.Store()), dumpStore(dst.Store()))
	})
	t.Run("restoring replaces what the FSM held", func(t *testing.T) {
		src := populate(t)
		dst := newFSM(t)
		applyAll(t, dst, 1, fsmtest.Register(t, "old-1", "old"), fsmtest.TokenSet(t, fsm.Token{Accessor: "old", SecretHash: "old"}))
		restore(t, dst, persist(t, src))
		assertSameStore(t, dumpStore(src.Store()), dumpStore(dst.Store()))
	})
	t.Run("an empty snapshot empties the store but does not move the applied index back", func(t *testing.T) {
		dst := populate(t)
		before := dst.AppliedIndex()
		restore(t, dst, persist(t, newFSM(t)))
		assertSameStore(t, dumpStore(newFSM(t).Store()), dumpStore(dst.Store()))
		// Raft applies entries after a restore at indexes past both, and
		// clients compare the indexes they hold with this one.
		if dst.AppliedIndex() != before {
			t.Errorf("AppliedIndex = %d, want %d as before the restore", dst.AppliedIndex(), before)
		}
	})
	t.Run("a snapshot holds the state as of Snapshot, not Persist", func(t *testing.T) {
		src := populate(t)
		want, wantIndex := dumpStore(src.Store()), src.AppliedIndex()
		snap, err := src.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		applyAll(t, src, wantIndex+1, fsmtest.Register(t, "late-1", "late"), fsmtest.Deregister(t, "web", "web-2"))
		dst := newFSM(t)
		restore(t, dst, persistSnapshot(t, snap))
		assertSameStore(t, want, dumpStore(dst.Store()))
		if dst.AppliedIndex() != wantIndex {
			t.Errorf("AppliedIndex = %d, want %d", dst.AppliedIndex(), wantIndex)
		}
	})
	t.Run("the same state always persists to the same bytes", func(t *testing.T) {
		a, b := persist(t, populate(t)), persist(t, populate(t))
		if !bytes.Equal(a, b) {
			t.Errorf("two snapshots of the same state differ")
		}
	})
}

// TestRestoreReadsVersion1 restores testdata/snapshot-v1.bin, which the
// version-1 code wrote from populate's commands: instances with Meta as a
// map, check IDs INSTANCE:NAME. Restore converts them, so the catalog equals
// what today's code builds from the same commands, but for check owners:
// rendezvous hashing over the new IDs may pick others, and a restore keeps
// the owners the snapshot holds.
func TestRestoreReadsVersion1(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "snapshot-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFSM(t)
	restore(t, f, v1)
	got, want := dumpStore(f.Store()), dumpStore(populate(t).Store())
	for _, d := range []dump{got, want} {
		for _, c := range d.Checks {
			if c.Owner == "" && c.Type != fsm.CheckTTL {
				t.Errorf("check %s has no owner", c.ID)
			}
			c.Owner = ""
		}
	}
	// Fields added after version 1 (issue 15) are absent from it.
	for _, i := range want.Instances {
		i.Trusted = false
	}
	for _, c := range want.Checks {
		c.AnyTarget = false
	}
	assertSameStore(t, want, got)
	if inst, _ := instance(t, f, "web", "web-1"); !reflect.DeepEqual(inst.Meta, []fsm.Pair{{Key: "rack", Value: "1"}, {Key: "zone", Value: "a"}}) {
		t.Errorf("meta = %v, want rack=1, zone=a in key order", inst.Meta)
	}
	// What it persists is version 2, and reads back the same.
	g := newFSM(t)
	restore(t, g, persist(t, f))
	assertSameStore(t, dumpStore(f.Store()), dumpStore(g.Store()))
}

func TestRestoreWakesReaders(t *testing.T) {
	snap := persist(t, populate(t))
	f := populate(t)
	old := f.Store().AbandonCh()
	ws := memdb.NewWatchSet()
	f.Store().ServiceInstances(ws, "web")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ws.WatchCtx(ctx) }()

	// The content is the same, but the reader's store is gone: it must look again.
	restore(t, f, snap)
	if err := <-done; err != nil {
		t.Fatalf("reader blocked on the old store not woken: %v", err)
	}
	select {
	case <-old:
	default:
		t.Errorf("old AbandonCh still open")
	}
	select {
	case <-f.Store().AbandonCh():
		t.Errorf("new AbandonCh closed")
	default:
	}
}

// snapshotStream encodes values one after the other with the msgpack
// settings fsm uses, to hand-craft snapshot streams.
func snapshotStream(t testing.TB, values ...any) []byte {
	t.Helper()
	h := &codec.MsgpackHandle{}
	h.Canonical, h.WriteExt = true, true
	var b []byte
	enc := codec.NewEncoderBytes(&b, h)
	var out []byte
	for _, v := range values {
		b = b[:0]
		enc.ResetBytes(&b)
		if err := enc.Encode(v); err != nil {
			t.Fatalf("encode %T: %v", v, err)
		}
		out = append(out, b...)
	}
	return out
}

// header has the fields of fsm's snapshot header.
type header struct {
	Version int
	Index   uint64
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	good := persist(t, populate(t))
	type tc struct {
		name string
		data []byte
	}
	cases := []tc{
		{"an empty stream is rejected", nil},
		{"a header that is not a header is rejected", []byte{0xa3, 'a', 'b', 'c'}},
		{"an unknown version is rejected", snapshotStream(t, header{Version: fsm.SnapshotVersion + 1, Index: 5}, byte(0xff))},
		{"version 0 is rejected", snapshotStream(t, header{Version: 0, Index: 5}, byte(0xff))},
		{"an unknown record kind is rejected", snapshotStream(t, header{Version: fsm.SnapshotVersion, Index: 5}, byte(0x42), map[string]string{"ID": "x"})},
		{"an instance without an ID is rejected", snapshotStream(t, header{Version: fsm.SnapshotVersion, Index: 5}, byte(1), map[string]string{"Service": "web"}, byte(0xff))},
		{"a record of the wrong shape is rejected", snapshotStream(t, header{Version: fsm.SnapshotVersion, Index: 5}, byte(4), "not a node", byte(0xff))},
		{"a stream without its end marker is rejected", good[:len(good)-1]},
	}
	// Cut the good snapshot at every byte of its header and first records,
	// then at a stride: a truncated snapshot must never restore.
	for n := 0; n < len(good)-1; n++ {
		if n < 256 || n%61 == 0 {
			cases = append(cases, tc{fmt.Sprintf("a snapshot cut to %d of %d bytes is rejected", n, len(good)), good[:n]})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := populate(t)
			before, beforeIndex := dumpStore(f.Store()), f.AppliedIndex()
			abandon := f.Store().AbandonCh()
			err := f.Restore(io.NopCloser(bytes.NewReader(c.data)))
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Fatalf("Restore = %v, want an error wrapping ErrBadSnapshot", err)
			}
			assertSameStore(t, before, dumpStore(f.Store()))
			if f.AppliedIndex() != beforeIndex {
				t.Errorf("AppliedIndex = %d, want %d", f.AppliedIndex(), beforeIndex)
			}
			select {
			case <-abandon:
				t.Errorf("a failed restore woke the store's readers")
			default:
			}
		})
	}
}

// closeRecorder records whether Restore closed its reader.
type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestRestoreClosesItsReader(t *testing.T) {
	for name, data := range map[string][]byte{
		"a good snapshot": persist(t, populate(t)),
		"a bad snapshot":  {0xc1},
	} {
		t.Run("Restore closes the reader of "+name, func(t *testing.T) {
			rc := &closeRecorder{Reader: bytes.NewReader(data)}
			_ = newFSM(t).Restore(rc)
			if !rc.closed {
				t.Errorf("reader not closed")
			}
		})
	}
}

func TestPersistCancelsTheSinkOnError(t *testing.T) {
	snap, err := populate(t).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &bufferSink{failAfter: 10}
	if err := snap.Persist(sink); err == nil {
		t.Fatalf("Persist to a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Errorf("sink closed=%t cancelled=%t, want cancelled only", sink.closed, sink.cancelled)
	}
}
