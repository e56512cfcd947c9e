package fsm

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
)

// codecBytes is what go-msgpack writes for v with the FSM's handle: the
// encoding the hand-written snapshot encoder must reproduce byte for byte.
func codecBytes(t testing.TB, v any) []byte {
	t.Helper()
	var out []byte
	if err := codec.NewEncoderBytes(&out, msgpackHandle).Encode(v); err != nil {
		t.Fatalf("codec encode: %v", err)
	}
	return out
}

func sameAsCodec(t testing.TB, name string, v any, got []byte) {
	t.Helper()
	if want := codecBytes(t, v); !bytes.Equal(got, want) {
		t.Fatalf("%s: hand encoding differs from go-msgpack's\n got %x\nwant %x", name, got, want)
	}
}

// edgeInts are the boundaries of msgpack's integer encodings.
var edgeInts = []int64{
	0, 1, -1, 31, 32, 127, 128, 255, 256, 32767, 32768, 65535, 65536,
	math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
	-31, -32, -33, -127, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64,
}

// edgeStrings have the lengths where msgpack's string encoding changes.
var edgeStrings = []string{"", "a", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("é", 100),
	strings.Repeat("s", 255), strings.Repeat("s", 256), strings.Repeat("s", 65535), strings.Repeat("s", 65536), "\x00\xff"}

func TestSnapshotEncoderMatchesCodec(t *testing.T) {
	full := func() *Instance {
		return &Instance{
			ID: "i-1", Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"a", "b"},
			Meta: []Pair{{"k", "v"}, {"zone", "z1"}}, Version: "1.2.3", Weight: 3, Node: "n1",
			Status: Warning, HealthySince: 17, NodeFailed: true, Trusted: true,
			Maintenance: &Maintenance{Reason: "upgrade", Since: 5}, Drain: &Drain{Deadline: 9, Since: 8},
			Metrics:     map[string]float64{"cpu": 0.5, "a": -1, "z": math.Inf(1), "n": math.NaN()},
			Transitions: []Transition{{Time: 1, Check: "web:i-1:http", From: Passing, To: Critical, Output: "refused"}},
			CreateIndex: 7, ModifyIndex: math.MaxUint64,
		}
	}
	cases := map[string]*Instance{
		"zero":  {},
		"full":  full(),
		"empty": {Tags: []string{}, Meta: []Pair{}, Metrics: map[string]float64{}, Transitions: []Transition{}},
	}
	many := full()
	many.Tags, many.Meta, many.Metrics = nil, nil, map[string]float64{}
	for i := range 70_000 {
		if i < 20 {
			many.Meta = append(many.Meta, Pair{Key: string(rune('a' + i)), Value: "v"})
			many.Transitions = append(many.Transitions, Transition{Time: int64(i)})
		}
		many.Tags = append(many.Tags, "t")
		if i < 300 {
			many.Metrics[strings.Repeat("m", i%7)+string(rune('A'+i%50))+string(rune('0'+i/50))] = float64(i)
		}
	}
	cases["long lists"] = many
	for k, v := range cases {
		sameAsCodec(t, "instance "+k, v, appendInstance(nil, v))
	}
	for _, n := range edgeInts {
		i := full()
		i.Port, i.Weight, i.HealthySince = int(n), int(n), n
		i.CreateIndex, i.ModifyIndex = uint64(n), uint64(n)
		i.Maintenance.Since, i.Drain.Deadline, i.Transitions[0].Time = n, n, n
		sameAsCodec(t, "instance with integer", i, appendInstance(nil, i))
		c := fullCheck()
		c.Interval, c.Timeout, c.TTL, c.FlapUntil, c.StatusSince, c.DeregisterCriticalAfter = n, n, n, n, n, n
		c.FailuresBeforeCritical, c.SuccessesBeforePassing, c.FlapLevel = int(n), int(n), int32(n)
		c.CreateIndex, c.ModifyIndex = uint64(n), uint64(n)
		sameAsCodec(t, "check with integer", c, appendCheck(nil, c))
	}
	for _, s := range edgeStrings {
		i := full()
		i.ID, i.Address, i.Version, i.Status = s, s, s, Health(s)
		i.Tags = []string{s}
		i.Meta = []Pair{{s, s}}
		i.Metrics = map[string]float64{s: 1}
		sameAsCodec(t, "instance with string", i, appendInstance(nil, i))
		c := fullCheck()
		c.Output, c.Target, c.Header = s, s, map[string][]string{s: {s}, "X": nil, "Y": {}}
		sameAsCodec(t, "check with string", c, appendCheck(nil, c))
	}
	zero := &Check{CheckDefinition: &CheckDefinition{}}
	sameAsCodec(t, "zero check", zero, appendCheck(nil, zero))
	c := fullCheck()
	c.AnyTarget = false
	sameAsCodec(t, "check without AnyTarget", c, appendCheck(nil, c))
}

func fullCheck() *Check {
	return &Check{
		ID: "web:i-1:http", Instance: "i-1", Service: "web", Target: "http://127.0.0.1:1/h",
		CheckDefinition: &CheckDefinition{
			Name: "http", Type: CheckHTTP, Method: "HEAD",
			Header:        map[string][]string{"B": {"1", "2"}, "A": {"x"}},
			TLSSkipVerify: true, GRPCService: "svc", Interval: 10e9, Timeout: 2e9, TTL: 30e9,
			FailuresBeforeCritical: 3, SuccessesBeforePassing: 2, InitialStatus: Critical,
			DeregisterCriticalAfter: 60e9, AnyTarget: true,
		},
		Status: Passing, Output: "ok", StatusSince: 4, Owner: "n2", Flapping: true, FlapUntil: 9, FlapLevel: 2,
		CreateIndex: 3, ModifyIndex: 4,
	}
}

// TestSnapshotEncoderKnowsEveryField sets every exported field of Instance
// and Check (and of what they point to), one at a time, and compares the
// encodings: a field added to the records and not to the encoder fails here.
func TestSnapshotEncoderKnowsEveryField(t *testing.T) {
	for _, rec := range []struct {
		name string
		new  func() any
		enc  func(any) []byte
	}{
		{"Instance", func() any { return &Instance{} }, func(v any) []byte { return appendInstance(nil, v.(*Instance)) }},
		{"Check", func() any { return &Check{CheckDefinition: &CheckDefinition{}} }, func(v any) []byte { return appendCheck(nil, v.(*Check)) }},
	} {
		fields := 0
		for path := range exportedFields(reflect.TypeOf(rec.new()).Elem(), nil) {
			v := rec.new()
			setNonZero(reflect.ValueOf(v).Elem().FieldByIndex(path))
			sameAsCodec(t, rec.name+" field "+reflect.TypeOf(v).Elem().FieldByIndex(path).Name, v, rec.enc(v))
			fields++
		}
		if fields < 10 {
			t.Fatalf("%s: only %d fields visited", rec.name, fields)
		}
	}
}

// exportedFields yields the index paths of t's exported fields, descending
// into embedded structs and pointers to structs as go-msgpack flattens them
// (a path through a pointer needs a value whose pointer is set).
func exportedFields(t reflect.Type, prefix []int) func(func([]int) bool) {
	return func(yield func([]int) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			path := append(append([]int(nil), prefix...), i)
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && ft.Kind() == reflect.Struct {
				for p := range exportedFields(ft, path) {
					if !yield(p) {
						return
					}
				}
				continue
			}
			if !f.IsExported() {
				continue
			}
			if !yield(path) {
				return
			}
		}
	}
}

// setNonZero gives v a value that is not its zero value, recursively.
func setNonZero(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x-" + v.Type().Name())
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(-300)
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		v.SetUint(70_000)
	case reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		setNonZero(p.Elem())
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		setNonZero(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		setNonZero(k)
		e := reflect.New(v.Type().Elem()).Elem()
		setNonZero(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				setNonZero(v.Field(i))
			}
		}
	default:
		panic("setNonZero: add kind " + v.Kind().String())
	}
}

// FuzzSnapshotEncoderMatchesCodec compares the hand encoding of records
// built from arbitrary strings and integers with go-msgpack's.
//
//	go test ./fsm -run '^$' -fuzz '^FuzzSnapshotEncoderMatchesCodec$' -fuzztime 30s
func FuzzSnapshotEncoderMatchesCodec(f *testing.F) {
	f.Add("web", "10.0.0.1", "zone", int64(8080), uint64(3), []byte{1, 2, 3}, true)
	f.Add("", strings.Repeat("a", 40), "", int64(-129), uint64(1<<40), []byte{}, false)
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, n int64, u uint64, shape []byte, flag bool) {
		pick := func(i int) byte {
			if i < len(shape) {
				return shape[i]
			}
			return 0
		}
		i := &Instance{ID: s1, Service: s2, Address: s3, Port: int(n), Weight: int(n >> 3), Version: s2 + s1,
			Node: s3, Status: Health(s1), HealthySince: -n, NodeFailed: flag, Trusted: !flag,
			CreateIndex: u, ModifyIndex: u >> 5}
		if pick(0)&1 != 0 {
			i.Maintenance = &Maintenance{Reason: s3, Since: n}
		}
		if pick(0)&2 != 0 {
			i.Drain = &Drain{Deadline: n, Since: int64(u)}
		}
		for k := range int(pick(1) % 20) {
			i.Tags = append(i.Tags, s1[:min(k, len(s1))])
			i.Meta = append(i.Meta, Pair{Key: s2[:min(k, len(s2))], Value: s3})
		}
		if pick(2)&1 != 0 {
			i.Metrics = map[string]float64{}
			for k := range int(pick(3) % 20) {
				i.Metrics[s1+string(rune('a'+k))] = float64(n) / float64(k+1)
			}
		}
		for k := range int(pick(4) % 12) {
			i.Transitions = append(i.Transitions, Transition{Time: n + int64(k), Check: s1, From: Health(s2), To: Health(s3), Output: s2})
		}
		sameAsCodec(t, "instance", i, appendInstance(nil, i))

		c := &Check{ID: s1, Instance: s2, Service: s3, Status: Health(s2), Output: s3 + s1, StatusSince: n, Owner: s1,
			Flapping: flag, FlapUntil: -n, FlapLevel: int32(pick(5)), CreateIndex: u, ModifyIndex: ^u, Target: s3,
			CheckDefinition: &CheckDefinition{Name: s1, Type: CheckType(s2), Method: s1, TLSSkipVerify: !flag,
				GRPCService: s2, Interval: n, Timeout: n / 3, TTL: int64(u), FailuresBeforeCritical: int(pick(6)) - 128,
				SuccessesBeforePassing: int(n >> 40), InitialStatus: Health(s3), DeregisterCriticalAfter: n * 7, AnyTarget: flag}}
		if pick(7)&1 != 0 {
			c.Header = map[string][]string{}
			for k := range int(pick(8) % 20) {
				var vals []string
				if k%3 != 0 {
					vals = make([]string, k%4)
				}
				c.Header[s2+string(rune('A'+k))] = vals
			}
		}
		sameAsCodec(t, "check", c, appendCheck(nil, c))
	})
}

// TestSnapshotStreamUnchanged writes a snapshot of a catalog with every
// record kind both ways, by Persist and entirely with go-msgpack as
// before the hand encoder, and compares the streams.
func TestSnapshotStreamUnchanged(t *testing.T) {
	st := newStoreState()
	tx := st.db.Txn(true)
	sets := newSetsTxn(tx, st.rows)
	for _, rec := range []struct {
		table string
		obj   any
	}{
		{tableServices, &Service{Name: "web", Instances: 2, CreateIndex: 1, ModifyIndex: 300}},
		{tableInstances, &Instance{ID: "a", Service: "web", Port: 1, Status: Passing, Tags: []string{"x"}}},
		{tableInstances, &Instance{ID: "b", Service: "web", Port: 70000, Status: Critical, Trusted: true, Maintenance: &Maintenance{Reason: "r"}}},
		{tableChecks, fullCheck()},
		{tableNodes, &Node{Name: "n1", Address: "127.0.0.1:1", Role: "server", Status: NodeAlive, Since: 5}},
		{tableTokens, &Token{Accessor: "acc", SecretHash: "00", Policy: "write", Prefixes: []string{"web"}}},
		{tableIndex, &indexEntry{Key: tableInstances, Value: 300}},
	} {
		var err error
		switch o := rec.obj.(type) {
		case *Instance:
			_, err = sets.put(o)
		case *Check:
			sets.putCheck(o)
		default:
			err = tx.Insert(rec.table, rec.obj)
		}
		if err != nil {
			t.Fatalf("insert into %s: %v", rec.table, err)
		}
	}
	if err := sets.flush(); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	// records lists what tx holds of a table, instances from their sets.
	recordsOf := func(tx *memdb.Txn, table string) []any {
		var out []any
		if table == tableInstances {
			for _, inst := range allInstances(tx) {
				out = append(out, inst)
			}
			return out
		}
		if table == tableChecks {
			eachCheck(tx, func(c *Check) bool {
				out = append(out, c)
				return true
			})
			return out
		}
		it, err := tx.Get(table, "id")
		if err != nil {
			t.Fatal(err)
		}
		for o := it.Next(); o != nil; o = it.Next() {
			out = append(out, o)
		}
		return out
	}

	var got bytes.Buffer
	if err := (&snapshot{tx: st.db.Txn(false), index: 300}).write(&got); err != nil {
		t.Fatal(err)
	}
	var want []byte
	enc := codec.NewEncoderBytes(&want, msgpackHandle)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(enc.Encode(snapshotHeader{Version: SnapshotVersion, Index: 300}))
	rtx := st.db.Txn(false)
	records := 0
	for _, tb := range snapshotTables {
		for _, o := range recordsOf(rtx, tb.table) {
			must(enc.Encode(tb.kind))
			must(enc.Encode(o))
			records++
		}
	}
	must(enc.Encode(recordEnd))
	if records != 7 {
		t.Fatalf("%d records in the store, want 7", records)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("snapshot stream differs from go-msgpack's (%d against %d bytes)", got.Len(), len(want))
	}
	// And it reads back.
	back, index, err := readSnapshot(bytes.NewReader(got.Bytes()))
	if err != nil || index != 300 {
		t.Fatalf("readSnapshot: index %d, %v", index, err)
	}
	btx := back.db.Txn(false)
	restored := 0
	for _, tb := range snapshotTables {
		restored += len(recordsOf(btx, tb.table))
	}
	if restored != records {
		t.Fatalf("%d records read back, want %d", restored, records)
	}
}

// The integer encoder must agree with the codec on every width, not only at
// the edges the table lists: a sweep over powers of two and their
// neighbours.
func TestSnapshotIntegersAtEveryWidth(t *testing.T) {
	for shift := range 64 {
		for _, d := range []int64{-1, 0, 1} {
			v := int64(1)<<shift + d
			for _, n := range []int64{v, -v} {
				sameAsCodec(t, "int", n, mpInt(nil, n))
			}
			u := uint64(1)<<shift + uint64(d)
			sameAsCodec(t, "uint", u, mpUint(nil, u))
		}
	}
	sameAsCodec(t, "float", math.Copysign(0, -1), mpFloat64(nil, math.Copysign(0, -1)))
}
