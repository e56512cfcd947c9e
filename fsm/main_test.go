package fsm_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"go.uber.org/goleak"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestMain fails the package if any test leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newFSM returns an empty FSM that logs to t.Log.
func newFSM(t testing.TB) *fsm.FSM {
	t.Helper()
	return fsm.New(hclog.New(&hclog.LoggerOptions{
		Name:   "fsm",
		Level:  hclog.Trace,
		Output: testWriter{t},
	}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// applyAll applies cmds at indexes first, first+1, ..., failing the test if
// any is rejected, and returns the index of the last one.
func applyAll(t testing.TB, f *fsm.FSM, first uint64, cmds ...[]byte) uint64 {
	t.Helper()
	idx := first
	for i, c := range cmds {
		idx = first + uint64(i)
		fsmtest.MustApply(t, f, idx, c)
	}
	return idx
}

// instance returns the stored instance id of service and its checks,
// failing the test if the instance is absent.
func instance(t testing.TB, f *fsm.FSM, service, id string) (*fsm.Instance, []*fsm.Check) {
	t.Helper()
	_, inst, checks := f.Store().Instance(nil, service, id)
	if inst == nil {
		t.Fatalf("instance %q of service %q is not registered", id, service)
	}
	return inst, checks
}

// check returns the stored check id, failing the test if it is absent.
func check(t testing.TB, f *fsm.FSM, id string) *fsm.Check {
	t.Helper()
	c := f.Store().Check(nil, id)
	if c == nil {
		t.Fatalf("check %q is not registered", id)
	}
	return c
}

// service returns the stored service name, or nil.
// service returns the exported fields of name's record (exportedService),
// or nil.
func service(f *fsm.FSM, name string) *fsm.Service {
	_, svcs, _ := f.Store().Services(nil, name, "", 0)
	for _, s := range svcs {
		if s.Name == name {
			return exportedService(s)
		}
	}
	return nil
}

// exportedService is a copy of svc's exported fields: its set and list are
// links and caches, equal in content between stores but not in identity.
func exportedService(svc *fsm.Service) *fsm.Service {
	return &fsm.Service{Name: svc.Name, Instances: svc.Instances, CreateIndex: svc.CreateIndex, ModifyIndex: svc.ModifyIndex}
}

// dump is everything a Store holds, in a form reflect.DeepEqual can compare:
// instances are cloned so that their unexported encoding cache is left out,
// and checks so that a test may change them.
type dump struct {
	Instances []*fsm.Instance
	Checks    []*fsm.Check
	Services  []*fsm.Service
	Nodes     []*fsm.Node
	Tokens    []*fsm.Token
	// Table indexes, as the list reads report them, and the overall one.
	InstancesIndex, ChecksIndex, ServicesIndex, NodesIndex, TokensIndex, LastIndex uint64
}

func dumpStore(s *fsm.Store) dump {
	var d dump
	var insts []*fsm.Instance
	d.InstancesIndex, insts = s.Instances(nil)
	for _, i := range insts {
		d.Instances = append(d.Instances, i.Clone())
	}
	var checks []*fsm.Check
	d.ChecksIndex, checks = s.Checks(nil, "")
	for _, c := range checks {
		// A copy with a definition of its own: tests change what they
		// compare, and a stored check's definition is shared.
		n, def := c.Clone(), c.Definition()
		def.Target = ""
		n.CheckDefinition = &def
		d.Checks = append(d.Checks, n)
	}
	var svcs []*fsm.Service
	d.ServicesIndex, svcs, _ = s.Services(nil, "", "", 0)
	for _, svc := range svcs {
		d.Services = append(d.Services, exportedService(svc))
	}
	d.NodesIndex, d.Nodes = s.Nodes(nil)
	d.TokensIndex, d.Tokens = s.Tokens(nil)
	d.LastIndex = s.LastIndex()
	return d
}

// assertSameStore fails the test, naming the records that differ, unless
// want and got hold the same records and indexes.
func assertSameStore(t testing.TB, want, got dump) {
	t.Helper()
	if reflect.DeepEqual(want, got) {
		return
	}
	var diff []string
	diff = append(diff, diffRecords("instance", want.Instances, got.Instances)...)
	diff = append(diff, diffRecords("check", want.Checks, got.Checks)...)
	diff = append(diff, diffRecords("service", want.Services, got.Services)...)
	diff = append(diff, diffRecords("node", want.Nodes, got.Nodes)...)
	diff = append(diff, diffRecords("token", want.Tokens, got.Tokens)...)
	wi := [6]uint64{want.InstancesIndex, want.ChecksIndex, want.ServicesIndex, want.NodesIndex, want.TokensIndex, want.LastIndex}
	gi := [6]uint64{got.InstancesIndex, got.ChecksIndex, got.ServicesIndex, got.NodesIndex, got.TokensIndex, got.LastIndex}
	if wi != gi {
		diff = append(diff, fmt.Sprintf("indexes (instances, checks, services, nodes, tokens, last):\n  want %v\n  got  %v", wi, gi))
	}
	t.Fatalf("stores differ:\n%s", strings.Join(diff, "\n"))
}

func diffRecords[T any](kind string, want, got []T) []string {
	var out []string
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(got):
			out = append(out, fmt.Sprintf("%s %d: missing, want %s", kind, i, short(want[i])))
		case i >= len(want):
			out = append(out, fmt.Sprintf("%s %d: unexpected %s", kind, i, short(got[i])))
		case !reflect.DeepEqual(want[i], got[i]):
			out = append(out, fmt.Sprintf("%s %d (%s):", kind, i, short(reflect.Indirect(reflect.ValueOf(want[i])).Field(0).Interface())))
			out = append(out, diffFields(reflect.Indirect(reflect.ValueOf(want[i])), reflect.Indirect(reflect.ValueOf(got[i])))...)
		}
	}
	return out
}

// diffFields lists the exported fields of two structs of one type that differ.
func diffFields(want, got reflect.Value) []string {
	var out []string
	for i := range want.NumField() {
		f := want.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		w, g := want.Field(i).Interface(), got.Field(i).Interface()
		if f.Anonymous && want.Field(i).Kind() == reflect.Struct {
			out = append(out, diffFields(want.Field(i), got.Field(i))...)
			continue
		}
		if !reflect.DeepEqual(w, g) {
			out = append(out, fmt.Sprintf("  %s: want %s, got %s", f.Name, short(w), short(g)))
		}
	}
	return out
}

// short renders v as JSON, cut to a readable length; where JSON cannot tell
// two values apart (nil against empty) it falls back to Go syntax.
func short(v any) string {
	b, err := json.Marshal(v)
	s := string(b)
	if err != nil || s == "null" || s == "[]" || s == "{}" {
		s = fmt.Sprintf("%#v", v)
	}
	if len(s) > 160 {
		s = s[:160] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// fired reports whether any channel of ws is closed. go-memdb closes watch
// channels inside Txn.Commit, and Restore closes the abandon channel before
// it returns, so a change that already happened is visible here without
// waiting; and a channel still open after the change returned will not be
// closed by it later.
func fired(ws memdb.WatchSet) bool {
	for ch := range ws {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

// mustPanic runs fn and returns what it panicked with, failing the test if
// it returned normally.
func mustPanic(t testing.TB, fn func()) (v any) {
	t.Helper()
	defer func() { v = recover() }()
	fn()
	t.Fatalf("did not panic")
	return nil
}

// noPanic runs fn, failing the test (without crashing the test binary) if fn
// panics.
func noPanic(t testing.TB, fn func()) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Fatalf("panicked: %v", v)
		}
	}()
	fn()
}
