package fsm_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// populateV2 is populate plus three instances of one service that carry the
// same tags, meta, version and check definitions: the records a catalog
// shares between instances (interned strings, shared tag and meta slices).
func populateV2(t testing.TB) *fsm.FSM {
	t.Helper()
	f := populate(t)
	next := f.AppliedIndex() + 1
	for i, id := range []string{"cache-1", "cache-2", "cache-3"} {
		fsmtest.MustApply(t, f, next+uint64(i), fsmtest.Register(t, id, "cache", func(r *fsm.RegisterRequest) {
			r.Address, r.Port = "10.0.1.1", 6379+i
			r.Tags, r.Meta = []string{"redis", "primary"}, meta("zone", "b", "tier", "hot")
			r.Version, r.Node, r.Time = "7.2.4", "s1", t0+10
			r.Checks = []fsm.CheckDefinition{
				fsmtest.HTTPCheck("http", "http://10.0.1.1:8080/health", fsm.Passing),
				fsmtest.TTLCheck("ttl", fsm.Warning),
			}
		}))
	}
	return f
}

// TestRestoreReadsVersion2Fixture restores testdata/snapshot-v2.bin, which
// the code of main at cc35873 (before strings were interned and tag and meta
// slices shared) persisted from populateV2. Restoring it must reproduce
// exactly the catalog today's code builds from the same commands, check
// owners and every index included, and what it persists must restore to the
// same catalog again.
func TestRestoreReadsVersion2Fixture(t *testing.T) {
	v2, err := os.ReadFile(filepath.Join("testdata", "snapshot-v2.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFSM(t)
	restore(t, f, v2)
	want := populateV2(t)
	assertSameStore(t, dumpStore(want.Store()), dumpStore(f.Store()))
	if got, wantIndex := f.AppliedIndex(), want.AppliedIndex(); got != wantIndex {
		t.Errorf("AppliedIndex = %d, want %d", got, wantIndex)
	}
	g := newFSM(t)
	restore(t, g, persist(t, f))
	assertSameStore(t, dumpStore(f.Store()), dumpStore(g.Store()))

	// The restored catalog carries on like the one built by the commands:
	// changing one of the instances that shared their tags and meta leaves
	// the others as they were.
	next := f.AppliedIndex() + 1
	for _, h := range []*fsm.FSM{want, f} {
		fsmtest.MustApply(t, h, next, fsmtest.Register(t, "cache-2", "cache", func(r *fsm.RegisterRequest) {
			r.Address, r.Port = "10.0.1.1", 6380
			r.Tags, r.Meta = []string{"redis", "replica"}, meta("zone", "b", "tier", "warm")
			r.Version, r.Node, r.Time = "7.2.4", "s1", t0+11
		}))
	}
	assertSameStore(t, dumpStore(want.Store()), dumpStore(f.Store()))
}
