package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// reviewSnapshotBytes is the store's snapshot stream as Persist writes it.
func reviewSnapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	s := &snapshot{tx: f.store.cur.Load().db.Txn(false), index: f.store.applied.Load()}
	if err := s.write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// reviewEncodeRegister is encodeRegister with Meta written as the pairs
// given, in their order (duplicates and all), or nil: bodies Encode never
// writes, but that go-msgpack (and decodeRegister) take.
func reviewEncodeRegister(r *RegisterRequest, meta []Pair, metaNil bool) []byte {
	b := []byte{byte(RegisterType)}
	n := 11
	if r.Trusted {
		n++
	}
	b = mpMapLen(b, n)
	b = mpStr(mpStr(b, "Address"), r.Address)
	b = mpStr(b, "Checks")
	if r.Checks == nil {
		b = mpNil(b)
	} else {
		b = mpArrayLen(b, len(r.Checks))
		for i := range r.Checks {
			b = appendDefinition(b, &r.Checks[i])
		}
	}
	b = mpStr(mpStr(b, "ID"), r.ID)
	b = mpStr(b, "Meta")
	if metaNil {
		b = mpNil(b)
	} else {
		b = mpMapLen(b, len(meta))
		for _, p := range meta {
			b = mpStr(mpStr(b, p.Key), p.Value)
		}
	}
	b = mpStr(mpStr(b, "Node"), r.Node)
	b = mpInt(mpStr(b, "Port"), int64(r.Port))
	b = mpStr(mpStr(b, "Service"), r.Service)
	b = mpStrings(mpStr(b, "Tags"), r.Tags)
	b = mpInt(mpStr(b, "Time"), r.Time)
	if r.Trusted {
		b = mpBool(mpStr(b, "Trusted"), true)
	}
	b = mpStr(mpStr(b, "Version"), r.Version)
	b = mpInt(mpStr(b, "Weight"), int64(r.Weight))
	return b
}

// reviewCommand is one random log entry for the differential test: a
// registration drawn from small pools (so that re-registrations, changed
// and unchanged, are frequent), its Meta written sorted, unsorted, with a
// key twice, empty, nil or with many keys; or a deregistration.
func reviewCommand(rng *rand.Rand, last *reviewReg) []byte {
	if last.r.ID != "" && rng.IntN(3) == 0 {
		return last.encode(rng) // again: the same registration, maybe written otherwise
	}
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	long := strings.Repeat("L", 250)
	str := func() string {
		return pick("", "a", "b", "a\x00", "\x00b", "\x00", "ab", "é", long, long+"xyz", strings.Repeat("z", 300))
	}
	svc := pick("web", "db", "w\x01")
	id := pick("1", "2", "3", "4")
	if rng.IntN(6) == 0 {
		return mustEncodeReview(DeregisterType, &DeregisterRequest{Service: svc, ID: id})
	}
	r := RegisterRequest{ID: id, Service: svc, Address: pick("10.0.0.1", "10.0.0.2"), Port: rng.IntN(2),
		Version: pick("", "v1", "v2", long+"v"), Weight: rng.IntN(2), Node: pick("", "n1", "n2"),
		Trusted: rng.IntN(4) == 0, Time: int64(rng.IntN(3))}
	switch rng.IntN(4) {
	case 1:
		r.Tags = []string{}
	case 2, 3:
		for range rng.IntN(4) {
			r.Tags = append(r.Tags, str())
		}
	}
	if rng.IntN(3) == 0 {
		for i := range 1 + rng.IntN(2) {
			r.Checks = append(r.Checks, CheckDefinition{Name: fmt.Sprintf("c%d", i), Type: CheckType(pick("ttl", "http", "tcp", "x")),
				Method: pick("", "GET"), InitialStatus: Health(pick("", "passing", "critical", "bogus")), TTL: int64(time.Minute),
				GRPCService: pick("", "g"), Target: pick("", "t")})
		}
	}
	var meta []Pair
	metaNil := false
	switch rng.IntN(7) {
	case 0:
		metaNil = true
	case 1: // empty map
	case 2: // many keys (over maxSharedMeta sometimes)
		for i := range 10 + rng.IntN(12) {
			meta = append(meta, Pair{Key: fmt.Sprintf("k%02d", i), Value: pick("x", "y")})
		}
	default:
		m := map[string]string{}
		for range 1 + rng.IntN(4) {
			m[str()] = str()
		}
		for k, v := range m {
			meta = append(meta, Pair{k, v})
		}
		slices.SortFunc(meta, func(a, b Pair) int { return strings.Compare(a.Key, b.Key) })
		switch rng.IntN(4) {
		case 0: // unsorted
			rng.Shuffle(len(meta), func(i, j int) { meta[i], meta[j] = meta[j], meta[i] })
		case 1: // a key twice: go-msgpack and decodeRegister keep the last value
			if len(meta) > 0 {
				p := meta[rng.IntN(len(meta))]
				meta = append(meta, Pair{p.Key, p.Value + "!"})
			}
		}
	}
	*last = reviewReg{r, meta, metaNil}
	return last.encode(rng)
}

// reviewReg is a registration and its Meta as written (order, duplicates).
type reviewReg struct {
	r       RegisterRequest
	meta    []Pair
	metaNil bool
}

// encode writes the registration with its Meta as given or, at random, as
// Encode writes it (a sorted map), or reordered.
func (g reviewReg) encode(rng *rand.Rand) []byte {
	r, meta := g.r, slices.Clone(g.meta)
	switch {
	case rng.IntN(3) == 0 && !g.metaNil:
		// The Encode form: a map, sorted.
		m := map[string]string{}
		for _, p := range meta {
			m[p.Key] = p.Value
		}
		r.Meta = m
		return mustEncodeReview(RegisterType, &r)
	case rng.IntN(4) == 0:
		slices.Reverse(meta) // a key twice: the other value wins, as in go-msgpack
	}
	return reviewEncodeRegister(&r, meta, g.metaNil)
}

func mustEncodeReview(t MessageType, v any) []byte {
	b, err := Encode(t, v)
	if err != nil {
		panic(err)
	}
	return b
}

// reviewFillInterner tops in's tables up to just under internLimit, so that
// the next few values interned drop them, in the middle of decoding or
// applying a registration.
func reviewFillInterner(in *interner, rng *rand.Rand, gen *int) {
	target := internLimit - 1 - rng.IntN(6)
	for len(in.strs)+len(in.tags)+len(in.metas)+len(in.defs) < target {
		*gen++
		s := fmt.Sprintf("fill-%d", *gen)
		in.strs[s] = s
	}
}

// The apply path's decoder (decodeRegisterShared, with the interner) leaves
// the same catalog, the same results and the same commands as the plain path
// it replaced (decodeRegister, interning in applyRegister): for Meta sorted,
// unsorted, with a key twice, empty, nil or with more than 16 keys, long
// strings, NUL bytes, checks, re-registrations that change nothing, batches,
// and with the interner's tables dropped in the middle of a registration.
func TestReviewEighthSharedApplyMatchesPlainApply(t *testing.T) {
	for _, nearFull := range []bool{false, true} {
		t.Run(fmt.Sprintf("nearFull=%v", nearFull), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(8, uint64(len(fmt.Sprint(nearFull)))))
			fNew, fOld := New(nil), New(nil)
			fOld.handlers[RegisterType] = decodeAnd(applyRegister)
			var gen, resets, unchanged, asPairs, asMap int
			var last reviewReg
			idx := uint64(1)
			batches := 400
			if nearFull {
				batches = 120
			}
			for b := range batches {
				if nearFull {
					reviewFillInterner(fNew.store.cur.Load().intern, rng, &gen)
					reviewFillInterner(fOld.store.cur.Load().intern, rng, &gen)
				}
				n := 1 + rng.IntN(4)
				var logsNew, logsOld []*raft.Log
				for range n {
					cmd := reviewCommand(rng, &last)
					logsNew = append(logsNew, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: slices.Clone(cmd)})
					logsOld = append(logsOld, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: slices.Clone(cmd)})
					idx++
				}
				before := len(fNew.store.cur.Load().intern.strs)
				outNew, outOld := fNew.ApplyBatch(logsNew), fOld.ApplyBatch(logsOld)
				if len(fNew.store.cur.Load().intern.strs) < before {
					resets++
				}
				for i := range outNew {
					rn, ro := outNew[i].(ApplyResult), outOld[i].(ApplyResult)
					if rn.Index != ro.Index || fmt.Sprint(rn.Err) != fmt.Sprint(ro.Err) {
						t.Fatalf("batch %d entry %d (%x): result %d %v, plain path %d %v", b, i, logsNew[i].Data, rn.Index, rn.Err, ro.Index, ro.Err)
					}
					if rn.Index != logsNew[i].Index {
						unchanged++
					}
					if cn, ok := rn.Cmd.(*RegisterRequest); ok {
						co := ro.Cmd.(*RegisterRequest)
						switch {
						case cn.meta != nil:
							asPairs++
						case cn.Meta != nil && len(cn.Meta) > 0:
							asMap++
						}
						if got := plainOf(*cn); !reflect.DeepEqual(got, *co) {
							t.Fatalf("batch %d entry %d: command %+v, plain path %+v", b, i, got, *co)
						}
						if !bytes.Equal(mustEncodeReview(RegisterType, cn), mustEncodeReview(RegisterType, co)) {
							t.Fatalf("batch %d entry %d: the command encodes differently", b, i)
						}
					}
				}
				if sn, so := reviewSnapshotBytes(t, fNew), reviewSnapshotBytes(t, fOld); !bytes.Equal(sn, so) {
					t.Fatalf("batch %d: the catalogs differ", b)
				}
				for _, svc := range []string{"web", "db", "w\x01"} {
					for _, id := range []string{"1", "2", "3", "4"} {
						in, cn := fNew.Store().CurrentInstance(svc, id)
						io, co := fOld.Store().CurrentInstance(svc, id)
						_, ii, ci := fNew.Store().Instance(nil, svc, id)
						if (in == nil) != (io == nil) || (in == nil) != (ii == nil) || len(cn) != len(co) || len(cn) != len(ci) {
							t.Fatalf("batch %d: CurrentInstance(%q, %q) = %v, plain %v, Instance %v", b, svc, id, in, io, ii)
						}
					}
				}
			}
			if nearFull && resets < batches/2 {
				t.Fatalf("the interner was dropped in %d batches of %d", resets, batches)
			}
			if unchanged == 0 || asPairs == 0 || asMap == 0 {
				t.Fatalf("cases not reached: %d unchanged re-registrations, %d meta as pairs, %d as a map", unchanged, asPairs, asMap)
			}
			t.Logf("interner dropped in %d of %d batches; %d unchanged re-registrations, %d meta as pairs, %d as a map", resets, batches, unchanged, asPairs, asMap)
		})
	}
}

// A registration whose tags and meta the interner holds, decoded while the
// interner's tables are dropped half way through it (a new string makes them
// full), still gives the tags and meta it was sent, and the scratch buffers
// reused by the next decode do not change what the first one returned.
func TestReviewEighthSharedDecodeSurvivesResetAndScratchReuse(t *testing.T) {
	in := newInterner()
	reg := func(id string, tags []string, meta map[string]string, node string) []byte {
		return mustEncodeReview(RegisterType, &RegisterRequest{ID: id, Service: "web", Tags: tags, Meta: meta, Node: node, Version: "v"})
	}
	warm := reg("0", []string{"t1", "t2"}, map[string]string{"a": "1", "b": "2"}, "n0")
	var r0 RegisterRequest
	if !decodeRegisterShared(warm[1:], &r0, in) {
		t.Fatal("refused")
	}
	// Fill up so that the first new value (the node, decoded after the
	// meta) resets the tables, then meta and tags decoded after it.
	for i := 0; !in.full(); i++ {
		s := fmt.Sprintf("fill-%d", i)
		in.strs[s] = s
	}
	delete(in.strs, "fill-0")
	b := reg("1", []string{"t1", "t2"}, map[string]string{"a": "1", "b": "2"}, "new-node")
	var r1 RegisterRequest
	if !decodeRegisterShared(b[1:], &r1, in) {
		t.Fatal("refused")
	}
	// Another decode with other tags and meta reuses in.key and in.pairs.
	other := reg("2", []string{"zz", "yy", "xx"}, map[string]string{"c": "3", "d": "4", "e": "5"}, "n9")
	var r2 RegisterRequest
	if !decodeRegisterShared(other[1:], &r2, in) {
		t.Fatal("refused")
	}
	if !slices.Equal(r1.Tags, []string{"t1", "t2"}) || !slices.Equal(r1.meta, []Pair{{"a", "1"}, {"b", "2"}}) || r1.Node != "new-node" || r1.Service != "web" {
		t.Fatalf("after a reset and a reuse of the scratch: %+v", r1)
	}
	if !slices.Equal(r2.Tags, []string{"zz", "yy", "xx"}) || !slices.Equal(r2.meta, []Pair{{"c", "3"}, {"d", "4"}, {"e", "5"}}) {
		t.Fatalf("second: %+v", r2)
	}
	if !slices.Equal(r0.Tags, []string{"t1", "t2"}) || !slices.Equal(r0.meta, []Pair{{"a", "1"}, {"b", "2"}}) {
		t.Fatalf("first: %+v", r0)
	}
}

// A decode that fails half way (a value go-msgpack takes but the hand
// decoder does not) after the shared decoder interned some of it is left to
// go-msgpack, and the registration applies as the plain path applies it.
func TestReviewEighthHalfDecodedFallsBack(t *testing.T) {
	r := RegisterRequest{ID: "1", Service: "web", Tags: []string{"a"}, Version: "v", Node: "n", Time: 1}
	b := reviewEncodeRegister(&r, []Pair{{"k", "v"}}, false)
	// Make Time a uint64 over MaxInt64, after Meta, Node, Service and Tags
	// (go-msgpack wraps it; decodeRegister leaves it to go-msgpack).
	i := bytes.Index(b, []byte("Time")) + len("Time")
	if b[i] != 1 {
		t.Fatalf("Time encoded as %x", b[i])
	}
	b = slices.Concat(b[:i], []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, b[i+1:])
	fNew, fOld := New(nil), New(nil)
	fOld.handlers[RegisterType] = decodeAnd(applyRegister)
	for _, f := range []*FSM{fNew, fOld} {
		res := f.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: slices.Clone(b)}})[0].(ApplyResult)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if c := res.Cmd.(*RegisterRequest); c.interned || c.meta != nil || c.Meta["k"] != "v" {
			t.Fatalf("fallback command: %+v", c)
		}
	}
	if !bytes.Equal(reviewSnapshotBytes(t, fNew), reviewSnapshotBytes(t, fOld)) {
		t.Fatal("the catalogs differ")
	}
	inst, _ := fNew.Store().CurrentInstance("web", "1")
	if inst == nil || !slices.Equal(inst.Meta, []Pair{{"k", "v"}}) {
		t.Fatalf("instance %+v", inst)
	}
}

// Every row of the services, sets, node sets and check sets tables, across
// writes, a restore (a new generation whose restored rows carry no key) and
// a reset of the key map at internLimit, carries its own name's key or none,
// its key's bytes never change, and go-memdb finds every row by its name.
func TestReviewEighthRowKeysStayTheirNames(t *testing.T) {
	rng := rand.New(rand.NewPCG(81, 82))
	f := New(nil)
	idx := uint64(1)
	seen := map[*byte][]byte{} // a key's first byte -> its bytes when first seen
	apply := func(cmds ...[]byte) {
		var logs []*raft.Log
		for _, c := range cmds {
			logs = append(logs, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: c})
			idx++
		}
		for _, out := range f.ApplyBatch(logs) {
			if r := out.(ApplyResult); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	verify := func(when string) {
		t.Helper()
		tx := f.store.cur.Load().db.Txn(false)
		for _, tab := range []string{tableServices, tableSets, tableNodeSets, tableCheckSets} {
			it, err := tx.Get(tab, "id")
			if err != nil {
				t.Fatal(err)
			}
			for o := it.Next(); o != nil; o = it.Next() {
				name := keyedRowName(o)
				k := o.(keyedRow).idKey()
				if k != nil {
					if string(k) != name+"\x00" {
						t.Fatalf("%s: %s row %q carries key %q", when, tab, name, k)
					}
					if old, ok := seen[&k[0]]; ok && !bytes.Equal(old, k) {
						t.Fatalf("%s: a key changed from %q to %q", when, old, k)
					}
					seen[&k[0]] = slices.Clone(k)
				}
				got, err := lookupUnique(tx, tab, "id", name)
				if err != nil || got != o {
					t.Fatalf("%s: %s row %q: lookup by name finds %v (%v)", when, tab, name, got, err)
				}
			}
		}
	}
	names := []string{"a", "ab", "abc", "b", "ba", "web", "web2", "n1"}
	round := func(n int) {
		for range n {
			var cmds [][]byte
			for range 1 + rng.IntN(5) {
				svc, id := names[rng.IntN(len(names))], fmt.Sprint(rng.IntN(3))
				if rng.IntN(3) == 0 {
					cmds = append(cmds, mustEncodeReview(DeregisterType, &DeregisterRequest{Service: svc, ID: id}))
					continue
				}
				r := &RegisterRequest{ID: id, Service: svc, Node: names[rng.IntN(len(names))], Time: 1}
				if rng.IntN(2) == 0 {
					r.Checks = []CheckDefinition{{Name: "ttl", Type: CheckTTL, TTL: int64(time.Hour)}}
				}
				cmds = append(cmds, mustEncodeReview(RegisterType, r))
			}
			apply(cmds...)
			verify("write")
		}
	}
	round(150)
	// A restore: a new generation whose restored rows carry no key.
	var buf bytes.Buffer
	s := &snapshot{tx: f.store.cur.Load().db.Txn(false), index: f.store.applied.Load()}
	if err := s.write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(nopCloserReview{&buf}); err != nil {
		t.Fatal(err)
	}
	verify("restore")
	round(150)
	// The key map, full, starts again.
	rows := f.store.cur.Load().rows
	clear(rows.keys) // the rows' names are made anew after the fillers
	for i := 0; len(rows.keys) < internLimit; i++ {
		rows.key(fmt.Sprintf("filler-%d", i))
	}
	round(150)
	if len(rows.keys) >= internLimit {
		t.Fatalf("the key map holds %d keys", len(rows.keys))
	}
}

type nopCloserReview struct{ *bytes.Buffer }

func (nopCloserReview) Close() error { return nil }

// CurrentInstance answers as Instance through the cases where the committed
// record's set could be stale: after a restore (records restored with their
// sets, and a record restored without instances), after the last instance's
// deregistration, a re-registration in the same batch, and while a
// concurrent restore swaps the generation.
func TestReviewEighthCurrentInstanceAfterRestoreAndDeletes(t *testing.T) {
	f := New(nil)
	s := f.Store()
	idx := uint64(1)
	apply := func(cmds ...[]byte) {
		var logs []*raft.Log
		for _, c := range cmds {
			logs = append(logs, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: c})
			idx++
		}
		f.ApplyBatch(logs)
	}
	reg := func(svc, id string) []byte {
		return mustEncodeReview(RegisterType, &RegisterRequest{ID: id, Service: svc, Time: 1})
	}
	dereg := func(svc, id string) []byte {
		return mustEncodeReview(DeregisterType, &DeregisterRequest{Service: svc, ID: id})
	}
	agree := func(when string) {
		t.Helper()
		for _, svc := range []string{"web", "db", "api"} {
			for _, id := range []string{"1", "2", "3"} {
				ci, cc := s.CurrentInstance(svc, id)
				_, ii, ic := s.Instance(nil, svc, id)
				if ci != ii || len(cc) != len(ic) {
					t.Fatalf("%s: CurrentInstance(%s, %s) = %v, Instance %v", when, svc, id, ci, ii)
				}
			}
		}
	}
	apply(reg("web", "1"), reg("web", "2"), reg("db", "1"))
	agree("registered")
	apply(dereg("db", "1"))
	agree("last instance deregistered")
	apply(dereg("web", "1"), dereg("web", "2"), reg("web", "3"))
	agree("all replaced in one batch")
	apply(reg("db", "2"), dereg("db", "2"), reg("db", "3"))
	agree("registered and deregistered in one batch")

	snap := reviewSnapshotBytes(t, f)
	if err := f.Restore(nopCloserReview{bytes.NewBuffer(slices.Clone(snap))}); err != nil {
		t.Fatal(err)
	}
	agree("restored")
	apply(reg("web", "1"), reg("api", "1"))
	agree("after the restore")
	apply(dereg("web", "1"), dereg("web", "3"))
	agree("last instance after the restore")

	// A restore under readers: an instance present in both generations is
	// never missed.
	apply(reg("api", "2"))
	snap = reviewSnapshotBytes(t, f)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var missed sync.Once
	var miss bool
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if inst, _ := s.CurrentInstance("api", "2"); inst == nil {
					missed.Do(func() { miss = true })
				}
			}
		}()
	}
	for range 50 {
		if err := f.Restore(nopCloserReview{bytes.NewBuffer(slices.Clone(snap))}); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if miss {
		t.Fatal("CurrentInstance missed an instance every generation holds")
	}
	agree("after restores under readers")
}
