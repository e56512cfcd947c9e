package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// Run a target with: go test ./fsm -run '^$' -fuzz '^FuzzDecode$' -fuzztime 30s
// Inputs that failed are kept in testdata/fuzz/<target> and run as part of
// the ordinary tests.

// requestFor returns a new request of the type that command type typ
// carries (ignoring the SkipUnknown bit), or nil for an unknown type.
func requestFor(typ fsm.MessageType) any {
	for _, gc := range goldenCommands() {
		if gc.typ == typ&^fsm.SkipUnknown {
			return reflect.New(reflect.TypeOf(gc.req).Elem()).Interface()
		}
	}
	return nil
}

// addGoldenSeeds seeds f with the golden encoding of every command type.
func addGoldenSeeds(f *testing.F) {
	for _, gc := range goldenCommands() {
		f.Add(readGolden(f, gc.name))
	}
}

// FuzzDecode feeds arbitrary bytes to fsm.Decode into every request type: it
// must return an error or a value, never panic or hang.
func FuzzDecode(f *testing.F) {
	addGoldenSeeds(f)
	f.Add([]byte{})
	f.Add([]byte{byte(fsm.RegisterType)})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, gc := range goldenCommands() {
			out := reflect.New(reflect.TypeOf(gc.req).Elem()).Interface()
			typ, err := fsm.Decode(data, out)
			if len(data) == 0 {
				if !errors.Is(err, fsm.ErrShortCommand) {
					t.Fatalf("Decode(empty) = %v, want ErrShortCommand", err)
				}
				continue
			}
			if typ != fsm.MessageType(data[0]) {
				t.Fatalf("Decode returned type %d for a command starting %d", typ, data[0])
			}
			if err != nil {
				continue
			}
			// Whatever decodes must encode again.
			if _, err := fsm.Encode(typ, out); err != nil {
				t.Fatalf("decoded %T does not encode: %v", out, err)
			}
		}
	})
}

// FuzzRestore feeds arbitrary bytes to Restore. A stream that is not a
// snapshot must fail with ErrBadSnapshot and leave the FSM as it was; one
// that restores must persist again to the same bytes.
func FuzzRestore(f *testing.F) {
	f.Add(persist(f, populate(f)))
	f.Add(persist(f, fsm.New(nil)))
	if v1, err := os.ReadFile(filepath.Join("testdata", "snapshot-v1.bin")); err == nil {
		f.Add(v1)
	}
	f.Add(snapshotStream(f, header{Version: fsm.SnapshotVersion, Index: 3}, byte(3), fsm.Service{Name: "web", Instances: 1}, byte(0xff)))
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		g := fsm.New(nil)
		before := persist(t, g)
		var err error
		noPanic(t, func() { err = g.Restore(io.NopCloser(bytes.NewReader(data))) })
		if err != nil {
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Fatalf("Restore = %v, want an error wrapping ErrBadSnapshot", err)
			}
			if after := persist(t, g); !bytes.Equal(before, after) {
				t.Fatalf("a failed restore changed the store")
			}
			return
		}
		var once []byte
		noPanic(t, func() {
			dumpStore(g.Store())
			once = persist(t, g)
		})
		h := fsm.New(nil)
		restore(t, h, once)
		if twice := persist(t, h); !bytes.Equal(once, twice) {
			t.Fatalf("a restored snapshot does not persist to the same bytes")
		}
	})
}

// FuzzApply applies every command that decodes to a populated FSM. Apply may
// panic only on entries that do not decode (and on unknown types without
// the skip bit); anything that decodes must be applied or rejected, and the
// catalog must stay consistent: see checkInvariants.
func FuzzApply(f *testing.F) {
	addGoldenSeeds(f)
	// Commands that touch the records populate creates.
	for _, b := range [][]byte{
		fsmtest.CheckUpdate(f, "", t0+10, fsm.CheckUpdate{Check: "web:web-1:ttl", Status: fsm.Critical, Output: "late"}),
		fsmtest.CheckUpdate(f, "", t0+10, fsm.CheckUpdate{Check: "web:web-1:ttl", Status: fsm.Passing}, fsm.CheckUpdate{Check: "api:api-1:http", Status: fsm.Warning}),
		fsmtest.Register(f, "web-1", "web", fsmtest.WithNode("s2"), fsmtest.WithChecks(fsmtest.TTLCheck("ttl", fsm.Passing))),
		fsmtest.Register(f, "web-1", "api", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", fsm.Passing))),
		fsmtest.Deregister(f, "web", "web-2"),
		fsmtest.NodeUpdate(f, t0+10, fsmtest.Server("s1", fsm.NodeFailed), fsmtest.Server("s2", fsm.NodeAlive)),
		fsmtest.NodeRemove(f, t0+10, "s1"),
		fsmtest.AssignChecks(f, fsm.Assignment{Check: "api:api-1:http", Owner: "s9"}),
		fsmtest.Maintenance(f, "web", "web-1", fsm.ModeNone),
		fsmtest.Metrics(f, t0+10, fsm.InstanceMetrics{Service: "web", Instance: "web-2", Metrics: map[string]float64{"x": 1}}),
		fsmtest.TokenSet(f, fsm.Token{Accessor: "acc-2", SecretHash: "hash-1"}),
		fsmtest.TokenDelete(f, "acc-1"),
	} {
		f.Add(b)
	}
	f.Add(groupOf(fsmtest.Register(f, "web-1", "web"), fsmtest.Deregister(f, "web", "web-2"), fsmtest.Register(f, "", "web")))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return // panics by design
		}
		if fsm.MessageType(data[0]) == fsm.GroupType {
			fuzzApplyGroup(t, data)
			return
		}
		typ := fsm.MessageType(data[0])
		req := requestFor(typ)
		if req == nil && typ&fsm.SkipUnknown == 0 {
			return // an unknown type without the skip bit panics by design
		}
		if req != nil {
			if _, err := fsm.Decode(data, req); err != nil {
				return // an undecodable entry panics by design
			}
		}
		g := populate(t)
		before := dumpStore(g.Store())
		idx := g.AppliedIndex() + 1
		var res fsm.ApplyResult
		noPanic(t, func() { res = fsmtest.Apply(t, g, idx, data) })
		after := dumpStore(g.Store())
		if res.Err != nil && !errors.Is(res.Err, fsm.ErrNotOwner) {
			// A rejected command changes nothing. (A check update refused for
			// some checks still applies those the node owns.)
			assertSameStore(t, before, after)
		}
		checkInvariants(t, after, idx)
	})
}

// fuzzApplyGroup is FuzzApply for a group entry: one that splits into
// members that all decode is applied with a result per member, and a group
// whose members were all rejected changes nothing.
func fuzzApplyGroup(t *testing.T, data []byte) {
	valid := true
	if err := fsm.SplitGroup(data, func(_ int, _, cmd []byte) bool {
		typ := fsm.MessageType(cmd[0])
		req := requestFor(typ)
		switch {
		case req == nil && typ&fsm.SkipUnknown == 0:
			valid = false // an unknown member type panics by design
		case req != nil:
			if _, err := fsm.Decode(cmd, req); err != nil {
				valid = false // an undecodable member panics by design
			}
		}
		return valid
	}); err != nil || !valid {
		return
	}
	members := 0
	_ = fsm.SplitGroup(data, func(int, []byte, []byte) bool { members++; return true })
	g := populate(t)
	before := dumpStore(g.Store())
	idx := g.AppliedIndex() + 1
	var raw any
	noPanic(t, func() { raw = g.Apply(fsmtest.Log(idx, data)) })
	res, ok := raw.(fsm.GroupResult)
	if !ok || len(res) != members {
		t.Fatalf("Apply(group of %d) = %T (%v)", members, raw, raw)
	}
	allRejected := true
	for _, r := range res {
		if r.Err == nil || errors.Is(r.Err, fsm.ErrNotOwner) {
			allRejected = false
		}
	}
	after := dumpStore(g.Store())
	if allRejected {
		assertSameStore(t, before, after)
	}
	checkInvariants(t, after, idx)
}

// checkInvariants fails the test unless d is a consistent catalog as of
// index idx.
func checkInvariants(t *testing.T, d dump, idx uint64) {
	t.Helper()
	type key struct{ service, id string }
	count := map[string]int{}
	byID := map[key]*fsm.Instance{}
	for _, i := range d.Instances {
		count[i.Service]++
		if byID[key{i.Service, i.ID}] != nil {
			t.Errorf("instance %q of service %q is stored twice", i.ID, i.Service)
		}
		byID[key{i.Service, i.ID}] = i
	}
	newest := map[string]uint64{}
	for _, i := range d.Instances {
		newest[i.Service] = max(newest[i.Service], i.ModifyIndex)
	}
	for _, s := range d.Services {
		if s.Instances != count[s.Name] {
			t.Errorf("service %q counts %d instances, holds %d", s.Name, s.Instances, count[s.Name])
		}
		// Discovery readers watch only the service record: every write to
		// an instance must rewrite it too.
		if s.ModifyIndex < newest[s.Name] {
			t.Errorf("service %q at index %d, but one of its instances changed at %d", s.Name, s.ModifyIndex, newest[s.Name])
		}
		delete(count, s.Name)
	}
	for name := range count {
		t.Errorf("instances of service %q have no service record", name)
	}
	worst := map[key]fsm.Health{}
	for _, c := range d.Checks {
		k := key{c.Service, c.Instance}
		inst := byID[k]
		if inst == nil {
			t.Errorf("check %q belongs to missing instance %q of service %q", c.ID, c.Instance, c.Service)
			continue
		}
		if c.ID != fsm.CheckID(c.Service, c.Instance, c.Name) {
			t.Errorf("check %q is not named after service %q, instance %q and name %q", c.ID, c.Service, c.Instance, c.Name)
		}
		if !c.Status.Valid() {
			t.Errorf("check %q has status %q", c.ID, c.Status)
		}
		w, ok := worst[k]
		if !ok {
			w = fsm.Passing
		}
		worst[k] = w.Worse(c.Effective())
	}
	for _, i := range d.Instances {
		want, ok := worst[key{i.Service, i.ID}]
		if !ok {
			want = fsm.Passing
		}
		if i.NodeFailed {
			want = fsm.Critical
		}
		if i.Status != want {
			t.Errorf("instance %q is %s, its checks and node say %s", i.ID, i.Status, want)
		}
		if len(i.Transitions) > fsm.MaxTransitions {
			t.Errorf("instance %q keeps %d transitions", i.ID, len(i.Transitions))
		}
		for _, tr := range i.Transitions {
			if tr.From == tr.To {
				t.Errorf("instance %q records a transition from %s to itself: %+v", i.ID, tr.From, tr)
			}
		}
	}
	type indexed struct {
		what           string
		create, modify uint64
	}
	var recs []indexed
	for _, r := range d.Instances {
		recs = append(recs, indexed{"instance " + r.Service + "/" + r.ID, r.CreateIndex, r.ModifyIndex})
	}
	for _, r := range d.Checks {
		recs = append(recs, indexed{"check " + r.ID, r.CreateIndex, r.ModifyIndex})
	}
	for _, r := range d.Services {
		recs = append(recs, indexed{"service " + r.Name, r.CreateIndex, r.ModifyIndex})
	}
	for _, r := range d.Nodes {
		recs = append(recs, indexed{"node " + r.Name, r.CreateIndex, r.ModifyIndex})
	}
	for _, r := range d.Tokens {
		recs = append(recs, indexed{"token " + r.Accessor, r.CreateIndex, r.ModifyIndex})
	}
	for _, r := range recs {
		if r.create == 0 || r.create > r.modify || r.modify > idx {
			t.Errorf("%s has CreateIndex %d, ModifyIndex %d at index %d", r.what, r.create, r.modify, idx)
		}
	}
	secrets := map[string]string{}
	for _, tok := range d.Tokens {
		if other, ok := secrets[tok.SecretHash]; ok {
			t.Errorf("tokens %q and %q share a secret hash", other, tok.Accessor)
		}
		secrets[tok.SecretHash] = tok.Accessor
	}
	if d.LastIndex > idx {
		t.Errorf("LastIndex %d is past the applied index %d", d.LastIndex, idx)
	}
}
