package fsm

import (
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// fired reports whether ws fires within d. A watch that must stay quiet is
// given a short d: a spurious wake shows at once, and a slow machine can
// only make it look quieter.
func fired(ws memdb.WatchSet, d time.Duration) bool {
	timeout := time.After(d)
	return !ws.Watch(timeout)
}

func applyOne(t *testing.T, f *FSM, index uint64, typ MessageType, body any) {
	t.Helper()
	b, err := Encode(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	res := f.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: b}})[0].(ApplyResult)
	if res.Err != nil {
		t.Fatalf("apply at %d: %v", index, res.Err)
	}
}

// A blocking read of one instance wakes when that instance is replaced or
// deleted, and not when another instance of its service changes: a service
// with many instances, each watched by its own client, must not wake every
// watcher for every change.
func TestAnInstanceWatchWakesOnlyForItsInstance(t *testing.T) {
	f := New(nil)
	reg := func(index uint64, id, addr string) {
		applyOne(t, f, index, RegisterType, &RegisterRequest{ID: id, Service: "web", Address: addr, Port: 80})
	}
	reg(1, "a", "127.0.0.1")
	reg(2, "b", "127.0.0.1")
	s := f.Store()

	ws := memdb.NewWatchSet()
	if _, inst, _ := s.Instance(ws, "web", "a"); inst == nil {
		t.Fatal("a missing")
	}
	reg(3, "b", "127.0.0.2") // another instance of the service
	reg(4, "c", "127.0.0.3") // a new one
	if fired(ws, 200*time.Millisecond) {
		t.Fatal("the watch of a fired for changes to b and c")
	}
	reg(5, "a", "127.0.0.4")
	if !fired(ws, 30*time.Second) {
		t.Fatal("the watch of a did not fire when a changed")
	}

	ws = memdb.NewWatchSet()
	_, before, _ := s.Instance(ws, "web", "a")
	applyOne(t, f, 6, DeregisterType, &DeregisterRequest{Service: "web", ID: "a"})
	if !fired(ws, 30*time.Second) {
		t.Fatal("the watch of a did not fire when a was deregistered")
	}

	// A reader that asks for the channel of a version already replaced
	// (it read an older store version) is woken at once.
	if !isClosedCh(before.watchCh()) {
		t.Fatal("the channel of a replaced version is open")
	}

	// An absent instance: the watch fires when it is registered.
	ws = memdb.NewWatchSet()
	if _, inst, _ := s.Instance(ws, "web", "a"); inst != nil {
		t.Fatal("a still there")
	}
	reg(7, "a", "127.0.0.5")
	if !fired(ws, 30*time.Second) {
		t.Fatal("the watch of an absent instance did not fire when it came")
	}
	// Of a service that has no instances at all.
	ws = memdb.NewWatchSet()
	s.Instance(ws, "api", "x")
	applyOne(t, f, 8, RegisterType, &RegisterRequest{ID: "x", Service: "api", Address: "127.0.0.1", Port: 80})
	if !fired(ws, 30*time.Second) {
		t.Fatal("the watch of an instance of a new service did not fire")
	}
}

func isClosedCh(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// The channel is closed only once the write is committed: a reader woken by
// it must find the new version (go-memdb's own watches close after the
// commit too).
func TestAnInstanceWatchFiresAfterTheCommit(t *testing.T) {
	f := New(nil)
	applyOne(t, f, 1, RegisterType, &RegisterRequest{ID: "a", Service: "web", Address: "127.0.0.1", Port: 80})
	for round := range 200 {
		ws := memdb.NewWatchSet()
		_, inst, _ := f.Store().Instance(ws, "web", "a")
		done := make(chan uint64)
		go func() {
			ws.Watch(nil)
			_, now, _ := f.Store().Instance(nil, "web", "a")
			done <- now.ModifyIndex
		}()
		applyOne(t, f, uint64(round+2), RegisterType, &RegisterRequest{ID: "a", Service: "web", Address: "127.0.0.1", Port: 81 + round})
		select {
		case got := <-done:
			if got <= inst.ModifyIndex {
				t.Fatalf("round %d: woken reader read index %d, not the write after %d", round, got, inst.ModifyIndex)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the watcher was not woken")
		}
	}
}
