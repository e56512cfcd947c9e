// Tests from a review of shared check definitions (32921bc: Check embeds
// *CheckDefinition, handed out by interner.definition). Three found defects
// of 32921bc, fixed since (a v1 check without definition keys, headers
// shared by Definition's copy, FlapLevel not clamped on restore); the others
// pin down what was found sound (defKey complete, apply == restore, snapshot bytes
// as before the change, fixtures' targets).
package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// rvsdOldCheck is the Check of a89c003, before the change: the definition
// embedded by value (its Target the check's), FlapLevel an int. Snapshots
// must keep encoding a check as go-msgpack encoded this.
type rvsdOldCheck struct {
	ID       string
	Instance string
	Service  string
	CheckDefinition

	Status      Health
	Output      string
	StatusSince int64
	Owner       string
	Flapping    bool
	FlapUntil   int64
	FlapLevel   int

	CreateIndex uint64
	ModifyIndex uint64
}

func rvsdOld(c *Check) *rvsdOldCheck {
	return &rvsdOldCheck{
		ID: c.ID, Instance: c.Instance, Service: c.Service, CheckDefinition: c.Definition(),
		Status: c.Status, Output: c.Output, StatusSince: c.StatusSince, Owner: c.Owner,
		Flapping: c.Flapping, FlapUntil: c.FlapUntil, FlapLevel: int(c.FlapLevel),
		CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	}
}

func rvsdCodec(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

func rvsdChecks(s *Store) []*Check {
	tx := s.cur.Load().db.Txn(false)
	var out []*Check
	eachCheck(tx, func(c *Check) bool {
		out = append(out, c)
		return true
	})
	return out
}

func rvsdRestore(t testing.TB, stream []byte) *FSM {
	t.Helper()
	f := New(nil)
	if err := f.Restore(nopCloser{bytes.NewReader(stream)}); err != nil {
		t.Fatal(err)
	}
	return f
}

func rvsdPersist(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rvsdCatalog applies registrations that share definitions, with targets
// of their own, headers, AnyTarget, every check type, a re-registration
// that changes one definition, check updates with flap levels and an
// ownership change.
func rvsdCatalog(t testing.TB) *FSM {
	f := New(nil)
	idx := uint64(1)
	apply := func(cmds ...[]byte) {
		t.Helper()
		var logs []*raft.Log
		for _, c := range cmds {
			logs = append(logs, rvLog(idx, c))
			idx++
		}
		for i, r := range f.ApplyBatch(logs) {
			if res, ok := r.(ApplyResult); ok && res.Err != nil {
				t.Fatalf("command %d: %v", i, res.Err)
			}
		}
	}
	apply(rvNode(t, "s1", NodeAlive), rvNode(t, "s2", NodeAlive))
	defs := func(k int, interval int64) []CheckDefinition {
		return []CheckDefinition{
			{Name: "http", Type: CheckHTTP, Target: fmt.Sprintf("http://10.0.0.%d:80/h", k), Method: "GET", Interval: interval, Timeout: 2e9, InitialStatus: Passing},
			{Name: "hh", Type: CheckHTTP, Target: fmt.Sprintf("https://10.0.0.%d/h", k), Method: "HEAD", TLSSkipVerify: true,
				Header: map[string][]string{"X-B": {"1", "2"}, "A": {"z"}, "Empty": {}}, Interval: 10e9, Timeout: 2e9},
			{Name: "tcp", Type: CheckTCP, Target: fmt.Sprintf("10.0.0.%d:5432", k), Interval: 5e9, Timeout: 1e9,
				FailuresBeforeCritical: 3, SuccessesBeforePassing: 2, DeregisterCriticalAfter: 60e9, InitialStatus: Warning},
			{Name: "grpc", Type: CheckGRPC, Target: fmt.Sprintf("10.0.0.%d:9000", k), GRPCService: "svc.v1", Interval: 5e9, Timeout: 1e9, AnyTarget: k%2 == 0},
			{Name: "ttl", Type: CheckTTL, TTL: 30e9, InitialStatus: Passing},
		}
	}
	for k := range 6 {
		apply(rvReg(t, "web", fmt.Sprintf("i-%d", k), "s1", fmt.Sprintf("10.0.0.%d", k), defs(k, 10e9)...))
	}
	apply(rvReg(t, "web", "i-3", "s1", "10.0.0.3", defs(3, 20e9)...)) // i-3's http check redefined
	var ups = map[string][]CheckUpdate{}
	for n, c := range rvsdChecks(f.Store()) {
		if c.Owner != "" {
			ups[c.Owner] = append(ups[c.Owner], CheckUpdate{Check: c.ID, Status: Critical, Output: "o",
				Flapping: n%2 == 0, FlapUntil: rvT0 + 99, FlapLevel: n * 1000})
		}
	}
	for owner, u := range ups {
		apply(rvEnc(t, CheckUpdateType, &CheckUpdateRequest{Node: owner, Updates: u, Time: rvT0 + 50}))
	}
	apply(rvEnc(t, AssignChecksType, &AssignChecksRequest{Assignments: []Assignment{{Check: "web:i-1:tcp", Owner: "s9"}}}))
	return f
}

// TestReviewSharedDefKeyHasEveryField: defKey is every field of
// CheckDefinition but Target and Header, with its type; a field added to
// CheckDefinition and forgotten in defKey fails here. And definitions that
// differ in any one field are not merged by the interner.
func TestReviewSharedDefKeyHasEveryField(t *testing.T) {
	dt, kt := reflect.TypeOf(CheckDefinition{}), reflect.TypeOf(defKey{})
	n := 0
	for i := range dt.NumField() {
		f := dt.Field(i)
		if f.Name == "Target" || f.Name == "Header" {
			continue
		}
		n++
		kf, ok := kt.FieldByName(f.Name)
		if !ok || kf.Type != f.Type {
			t.Errorf("CheckDefinition.%s (%s) is not in defKey with its type", f.Name, f.Type)
		}
	}
	if kt.NumField() != n {
		t.Errorf("defKey has %d fields, CheckDefinition %d besides Target and Header", kt.NumField(), n)
	}

	// Behaviour: change each field of a base definition in turn (by
	// reflection, so a new field is covered too); each variant gets a
	// definition of its own, equal to what was declared.
	base := CheckDefinition{Name: "c", Type: CheckHTTP, Method: "GET", Interval: 1, Timeout: 1, TTL: 1,
		FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: Passing, DeregisterCriticalAfter: 1, GRPCService: "g"}
	in := newInterner()
	b := base
	shared := in.definition(&b)
	if again := base; in.definition(&again) != shared {
		t.Fatalf("the same declaration is not shared")
	}
	for i := range dt.NumField() {
		f := dt.Field(i)
		if f.Name == "Target" || f.Name == "Header" {
			continue
		}
		v := base
		fv := reflect.ValueOf(&v).Elem().Field(i)
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(fv.String() + "x")
		case reflect.Bool:
			fv.SetBool(!fv.Bool())
		case reflect.Int, reflect.Int64, reflect.Int32:
			fv.SetInt(fv.Int() + 1)
		default:
			t.Fatalf("CheckDefinition.%s: kind %s not covered by this test", f.Name, fv.Kind())
		}
		got := in.definition(&v)
		if got == shared {
			t.Errorf("a definition differing in %s is merged with the base one", f.Name)
		}
		if want := v; !got.equalProbe(&want) || got.Target != "" {
			t.Errorf("definition differing in %s reads %+v, declared %+v", f.Name, *got, want)
		}
	}
}

// TestReviewSharedDefV1CheckWithoutDefinition (a defect of 32921bc, fixed): a version-1 snapshot
// whose check record has no definition keys at all decodes to a Check with
// a nil *CheckDefinition, and readSnapshot computes the version-1 ID from
// c.Name before interner.check gives the check a definition: a nil pointer
// dereference, which panics the node in Raft's Restore. Before the change
// the record restored (name "", ID "web:i1:").
func TestReviewSharedDefV1CheckWithoutDefinition(t *testing.T) {
	enc := func(v any) []byte { return rvsdCodec(t, v) }
	var stream []byte
	stream = append(stream, enc(snapshotHeader{Version: 1, Index: 10})...)
	stream = append(stream, enc(recordInstance)...)
	stream = append(stream, enc(map[string]any{"Service": "web", "ID": "i1", "Status": "passing", "Meta": map[string]string{}})...)
	stream = append(stream, enc(recordCheck)...)
	stream = append(stream, enc(map[string]any{"ID": "i1:", "Service": "web", "Instance": "i1", "Status": "passing"})...)
	stream = append(stream, enc(recordEnd)...)

	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("Restore of a version-1 check record without definition keys panicked: %v", p)
			}
		}()
		err = New(nil).Restore(nopCloser{bytes.NewReader(stream)})
	}()
	if err != nil && !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("Restore: %v, want nil or ErrBadSnapshot", err)
	}
}

// TestReviewSharedDefDefinitionCopiesHeader (a defect of 32921bc, fixed): Check.Definition says it
// returns "a copy ... (a caller may change it)", but the copy shares the
// stored definition's Header map (and its slices): a caller that changes
// the copy's headers changes the stored, immutable check under every
// reader. (The random review test's frozen definitions are such copies, so
// it cannot see a header change either.)
func TestReviewSharedDefDefinitionCopiesHeader(t *testing.T) {
	f := rvsdCatalog(t)
	id := "web:i-0:hh"
	c := f.Store().Check(nil, id)
	d := c.Definition()
	d.Header["X-B"][0] = "changed"
	d.Header["X-New"] = []string{"v"}
	c = f.Store().Check(nil, id)
	if got := c.Header["X-B"][0]; got != "1" {
		t.Errorf("changing Definition()'s copy changed the stored check's header X-B to %q", got)
	}
	if _, ok := c.Header["X-New"]; ok || len(c.Header) != 3 {
		t.Errorf("changing Definition()'s copy added a header to the stored check: %v", c.Header)
	}
}

// TestReviewSharedDefRestoreClampsFlapLevel (a defect of 32921bc, fixed): apply clamps a proposed
// flap level into the int32 a Check keeps (clampFlapLevel), but Restore
// decodes the snapshot's FlapLevel straight into the int32: a snapshot
// persisted before the change (FlapLevel an int, whatever the owner
// proposed) with a level beyond int32 no longer restores at all, and one
// with a negative level restores unclamped, so that a node that installed
// that snapshot and one that replayed the log disagree on the record (and
// on the next update's ModifyIndex).
func TestReviewSharedDefRestoreClampsFlapLevel(t *testing.T) {
	for _, level := range []int{math.MaxInt32 + 1, -1} {
		t.Run(fmt.Sprint(level), func(t *testing.T) {
			f := rvsdCatalog(t)
			c := f.Store().Check(nil, "web:i-0:http")
			old := rvsdOld(c)
			old.FlapLevel = level // what a89c003 stored for such an update
			var stream []byte
			stream = append(stream, rvsdCodec(t, snapshotHeader{Version: SnapshotVersion, Index: 100})...)
			stream = append(stream, rvsdCodec(t, recordCheck)...)
			stream = append(stream, rvsdCodec(t, old)...)
			stream = append(stream, rvsdCodec(t, recordEnd)...)
			r := New(nil)
			if err := r.Restore(nopCloser{bytes.NewReader(stream)}); err != nil {
				t.Fatalf("a snapshot of a89c003 with FlapLevel %d does not restore: %v", level, err)
			}
			got := r.Store().Check(nil, c.ID)
			if want := clampFlapLevel(level); got == nil || got.FlapLevel != want {
				t.Fatalf("restored FlapLevel %v, want %d as apply would keep it", got, want)
			}
		})
	}
}

// TestReviewSharedDefApplyEqualsRestore: a restored catalog holds the same
// checks as the applied one (targets, headers, definitions), shares
// definitions among the same checks, holds no target in any definition,
// and persists the same bytes; and those bytes are, check by check,
// go-msgpack's encoding of the check as a89c003 laid it out.
func TestReviewSharedDefApplyEqualsRestore(t *testing.T) {
	f := rvsdCatalog(t)
	snap := rvsdPersist(t, f)
	r := rvsdRestore(t, snap)
	a, b := rvsdChecks(f.Store()), rvsdChecks(r.Store())
	if len(a) != len(b) || len(a) != 30 {
		t.Fatalf("%d checks applied, %d restored, want 30", len(a), len(b))
	}
	group := func(cs []*Check) map[*CheckDefinition][]string {
		m := map[*CheckDefinition][]string{}
		for _, c := range cs {
			m[c.CheckDefinition] = append(m[c.CheckDefinition], c.ID)
		}
		return m
	}
	partition := func(cs []*Check) map[string]string {
		out := map[string]string{}
		for _, ids := range group(cs) {
			for _, id := range ids {
				out[id] = fmt.Sprint(ids)
			}
		}
		return out
	}
	if pa, pb := partition(a), partition(b); !reflect.DeepEqual(pa, pb) {
		t.Errorf("definitions are shared differently:\napplied  %v\nrestored %v", pa, pb)
	}
	for i := range a {
		if !reflect.DeepEqual(a[i], b[i]) {
			t.Errorf("check %s: applied %+v (%+v), restored %+v (%+v)", a[i].ID, a[i], *a[i].CheckDefinition, b[i], *b[i].CheckDefinition)
		}
		for _, c := range []*Check{a[i], b[i]} {
			if c.CheckDefinition == nil || c.CheckDefinition.Target != "" {
				t.Errorf("check %s holds definition %+v", c.ID, c.CheckDefinition)
			}
			if c.Type != CheckTTL && c.Target == "" {
				t.Errorf("check %s has no target", c.ID)
			}
		}
		if got, want := appendCheck(nil, a[i]), rvsdCodec(t, rvsdOld(a[i])); !bytes.Equal(got, want) {
			t.Errorf("check %s encodes as\n% x\nbefore the change\n% x", a[i].ID, got, want)
		}
	}
	if !bytes.Equal(snap, rvsdPersist(t, r)) {
		t.Errorf("the restored catalog persists other bytes")
	}
	// The http checks but i-3's share one definition; each hh check has
	// its own (headers).
	g := group(a)
	if d := f.Store().Check(nil, "web:i-0:http").CheckDefinition; len(g[d]) != 5 {
		t.Errorf("the http definition is shared by %v, want the five instances but i-3", g[d])
	}
	if d := f.Store().Check(nil, "web:i-0:hh").CheckDefinition; len(g[d]) != 1 {
		t.Errorf("a definition with headers is shared by %v", g[d])
	}
}

// TestReviewSharedDefInternerReset: definitions handed out before the
// interner's tables are reset (internLimit) keep their values, the ones
// handed out after read right and are shared again, and a restore of a
// catalog with more distinct values than internLimit equals the catalog.
func TestReviewSharedDefInternerReset(t *testing.T) {
	in := newInterner()
	type given struct {
		decl CheckDefinition
		got  *CheckDefinition
	}
	var all []given
	for i := range internLimit + 100 {
		d := CheckDefinition{Name: fmt.Sprintf("c%d", i%7), Type: CheckHTTP, Target: fmt.Sprint(i), Interval: int64(i), Method: "GET"}
		all = append(all, given{d, in.definition(&d)})
	}
	resets := 0
	for i, g := range all {
		if !g.got.equalProbe(&g.decl) || g.got.Target != "" {
			t.Fatalf("definition %d reads %+v, declared %+v", i, *g.got, g.decl)
		}
		if i > 0 && all[i-1].got == g.got {
			t.Fatalf("definitions %d and %d merged", i-1, i)
		}
		if d := g.decl; i >= internLimit && in.definition(&d) != g.got {
			resets++
		}
	}
	if resets != 0 {
		t.Errorf("%d definitions handed out after the reset are not shared any more", resets)
	}
	if len(in.defs) == 0 || len(in.defs) > internLimit {
		t.Errorf("%d definitions in the table", len(in.defs))
	}
}

// TestReviewSharedDefReadersRaceNoWriter: readers go through every field of
// every stored check's (shared) definition, headers included, while
// registrations change and restore definitions, owners post updates, the
// leader reassigns and a snapshot is restored. Run with -race: a write
// through a shared definition anywhere on the apply path is a race here.
func TestReviewSharedDefReadersRaceNoWriter(t *testing.T) {
	f := rvsdCatalog(t)
	snap := rvsdPersist(t, f)
	stop := make(chan struct{})
	var sink atomic64
	var wg = make(chan struct{})
	readers := 4
	for range readers {
		go func() {
			defer func() { wg <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, c := range rvsdChecks(f.Store()) {
					d := c.Definition()
					n := int64(len(d.Name)+len(d.Type)+len(d.Target)+len(d.Method)+len(d.GRPCService)+len(d.InitialStatus)) +
						d.Interval + d.Timeout + d.TTL + d.DeregisterCriticalAfter + int64(d.FailuresBeforeCritical+d.SuccessesBeforePassing)
					if d.TLSSkipVerify || d.AnyTarget {
						n++
					}
					for k, vs := range c.Header {
						n += int64(len(k))
						for _, v := range vs {
							n += int64(len(v))
						}
					}
					sink.add(n)
				}
			}
		}()
	}
	idx := f.AppliedIndex() + 1
	for round := range 60 {
		var cmds []*raft.Log
		for k := range 6 {
			defs := []CheckDefinition{
				{Name: "http", Type: CheckHTTP, Target: fmt.Sprintf("http://10.0.0.%d:80/h", k), Method: "GET", Interval: int64(10e9 + round%3), Timeout: 2e9, InitialStatus: Passing},
				{Name: "hh", Type: CheckHTTP, Target: fmt.Sprintf("https://10.0.0.%d/h", k), Method: "HEAD",
					Header: map[string][]string{"X-B": {fmt.Sprint(round % 2)}}, Interval: 10e9, Timeout: 2e9},
				{Name: "ttl", Type: CheckTTL, TTL: int64(30e9 + round%2), InitialStatus: Passing},
			}
			cmds = append(cmds, rvLog(idx, rvReg(t, "web", fmt.Sprintf("i-%d", k), "s1", fmt.Sprintf("10.0.0.%d", k), defs...)))
			idx++
		}
		var ups []CheckUpdate
		for _, c := range rvsdChecks(f.Store()) {
			if c.Owner == "s1" {
				ups = append(ups, CheckUpdate{Check: c.ID, Status: Warning, Output: fmt.Sprint(round), FlapLevel: round})
			}
		}
		cmds = append(cmds, rvLog(idx, rvEnc(t, CheckUpdateType, &CheckUpdateRequest{Node: "s1", Updates: ups, Time: rvT0 + int64(round)})))
		idx++
		cmds = append(cmds, rvLog(idx, rvEnc(t, AssignChecksType, &AssignChecksRequest{Assignments: []Assignment{{Check: "web:i-1:http", Owner: fmt.Sprint("s", round%2+1)}}})))
		idx++
		f.ApplyBatch(cmds)
		if round%20 == 19 {
			if err := f.Restore(nopCloser{bytes.NewReader(snap)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	for range readers {
		<-wg
	}
	rvCheckConsistent(t, f.Store(), "after the race")
}

type atomic64 struct{ v atomic.Int64 }

func (a *atomic64) add(n int64) { a.v.Add(n) }

// TestReviewSharedDefFixturesKeepTheirTargets: the version-1 and -2
// fixtures restore with each check's target and headers as a89c003
// restored them (read there), no target in any definition, and v2's three
// cache instances' identical http checks sharing one definition.
func TestReviewSharedDefFixturesKeepTheirTargets(t *testing.T) {
	want := map[string]string{
		"api:api-1:http":     "http://10.0.0.3/",
		"web:web-1:full":     "https://10.0.0.1:8443/health",
		"web:web-1:ttl":      "",
		"cache:cache-1:http": "http://10.0.1.1:8080/health",
		"cache:cache-2:http": "http://10.0.1.1:8080/health",
		"cache:cache-3:http": "http://10.0.1.1:8080/health",
		"cache:cache-1:ttl":  "", "cache:cache-2:ttl": "", "cache:cache-3:ttl": "",
	}
	for _, v := range []string{"v1", "v2"} {
		b, err := os.ReadFile(filepath.Join("testdata", "snapshot-"+v+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		f := rvsdRestore(t, b)
		checks := rvsdChecks(f.Store())
		if len(checks) != map[string]int{"v1": 3, "v2": 9}[v] {
			t.Fatalf("%s: %d checks", v, len(checks))
		}
		for _, c := range checks {
			w, ok := want[c.ID]
			if !ok || c.Target != w || c.CheckDefinition.Target != "" || c.Definition().Target != w {
				t.Errorf("%s: check %s: target %q (definition %q), want %q", v, c.ID, c.Target, c.CheckDefinition.Target, w)
			}
			if c.ID == "web:web-1:full" && !reflect.DeepEqual(c.Header, map[string][]string{"Authorization": {"Bearer x"}, "X-Probe": {"a", "b"}}) {
				t.Errorf("%s: check %s: headers %v", v, c.ID, c.Header)
			}
		}
		if v == "v2" {
			d := f.Store().Check(nil, "cache:cache-1:http").CheckDefinition
			for _, id := range []string{"cache:cache-2:http", "cache:cache-3:http"} {
				if f.Store().Check(nil, id).CheckDefinition != d {
					t.Errorf("v2: %s does not share cache-1's http definition", id)
				}
			}
		}
	}
}
