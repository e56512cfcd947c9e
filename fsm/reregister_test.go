package fsm_test

import (
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/go-memdb"
)

// TestIdenticalReRegistrationChangesNothing: a periodic re-registration
// with the same definition (at a later time) leaves the instance, its
// checks and the service's index as they were and fires no watch; a
// registration that differs in any field, trust included, is applied.
func TestIdenticalReRegistrationChangesNothing(t *testing.T) {
	f := newFSM(t)
	def := func(at int64) func(*fsm.RegisterRequest) {
		return func(r *fsm.RegisterRequest) {
			r.Address, r.Port, r.Tags, r.Meta, r.Weight, r.Time = "10.0.0.1", 80, []string{"a"}, map[string]string{"k": "v"}, 1, at
			r.Checks = []fsm.CheckDefinition{fsmtest.HTTPCheck("http", "http://10.0.0.1:80/", fsm.Passing)}
		}
	}
	fsmtest.MustApply(t, f, 1, fsmtest.Register(t, "web-1", "web", def(100)))
	before, _ := instance(t, f, "web", "web-1")
	ws := memdb.NewWatchSet()
	svcIdx, _ := f.Store().ServiceInstances(ws, "web")

	res := fsmtest.MustApply(t, f, 2, fsmtest.Register(t, "web-1", "web", def(200)))
	// Its result is the index at which the record already was as asked:
	// a client told 2 would read the service at 1, lower than its own
	// write's answer (a read-your-writes violation by index).
	if res.Index != 1 {
		t.Fatalf("an identical re-registration answered index %d, want 1 (the record's)", res.Index)
	}
	after, checks := instance(t, f, "web", "web-1")
	if after.ModifyIndex != before.ModifyIndex || checks[0].ModifyIndex != 1 {
		t.Fatalf("modify index %d (check %d) after an identical re-registration, want 1", after.ModifyIndex, checks[0].ModifyIndex)
	}
	if idx, _ := f.Store().ServiceInstances(nil, "web"); idx != svcIdx {
		t.Fatalf("service index moved %d -> %d", svcIdx, idx)
	}
	select {
	case <-ws.WatchCh(t.Context()):
		t.Fatal("an identical re-registration woke a watcher")
	default:
	}

	for i, change := range []func(*fsm.RegisterRequest){
		func(r *fsm.RegisterRequest) { r.Port = 81 },
		func(r *fsm.RegisterRequest) { r.Meta = map[string]string{"k": "w"} },
		func(r *fsm.RegisterRequest) { r.Trusted = true },
		func(r *fsm.RegisterRequest) { r.Checks[0].AnyTarget = true },
		func(r *fsm.RegisterRequest) { r.Checks = nil },
	} {
		idx := uint64(10 + i)
		fsmtest.MustApply(t, f, idx, fsmtest.Register(t, "web-1", "web", def(300), change))
		if inst, _ := instance(t, f, "web", "web-1"); inst.ModifyIndex != idx {
			t.Fatalf("change %d was not applied (modify index %d)", i, inst.ModifyIndex)
		}
	}
}

// FuzzEscapeControl: the result is valid UTF-8 without control characters,
// and text without any is returned as it is.
func FuzzEscapeControl(f *testing.F) {
	for _, s := range []string{"ok", "\x1b[2J\x07", "a\nb\tc", "\u009bx", "\xff\xfe", "✓ fine"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := fsm.EscapeControl(s)
		if !utf8.ValidString(out) {
			t.Fatalf("%q -> invalid UTF-8 %q", s, out)
		}
		clean := utf8.ValidString(s)
		for _, r := range out {
			if unicode.IsControl(r) {
				t.Fatalf("%q -> %q keeps control character %U", s, out, r)
			}
		}
		for _, r := range s {
			if unicode.IsControl(r) || r == utf8.RuneError {
				clean = false
			}
		}
		if clean && out != s {
			t.Fatalf("clean %q changed to %q", s, out)
		}
	})
}
