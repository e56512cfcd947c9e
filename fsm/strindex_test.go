package fsm

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
)

// The schema's string indexes make the keys memdb.StringFieldIndex makes for
// the same field: lookups, prefix scans and the order of iteration are
// unchanged.
func TestStrIndexMatchesStringFieldIndex(t *testing.T) {
	// Rows as apply writes them carry their key (rowCache.key).
	rc := newRowCache(&sync.Map{})
	records := map[string][]any{
		tableSets:      {&serviceSet{Service: "web"}, &serviceSet{Service: "a-b.c"}, &serviceSet{Service: "web", key: rc.key("web")}},
		tableNodeSets:  {&nodeSet{Node: "n1"}, &nodeSet{Node: "n1", key: rc.key("n1")}},
		tableInstances: {&Instance{Service: "web", ID: "i1", Node: "n1"}, &Instance{Service: "web", ID: "i2"}},
		tableCheckSets: {&checkSetRow{Service: "web"}, &checkSetRow{Service: "db"}, &checkSetRow{Service: "db", key: rc.key("db")}},
		tableServices:  {&Service{Name: "web"}, &Service{Name: ""}, &Service{Name: "web", key: rc.key("web")}, &Service{Name: "", key: rc.key("")}},
		tableNodes:     {&Node{Name: "n1"}},
		tableTokens:    {&Token{Accessor: "acc", SecretHash: "ab12"}},
		tableIndex:     {&indexEntry{Key: "instances"}, &indexEntry{Key: tombstonePrefix + "web"}},
	}
	checked := 0
	for tn, table := range schema().Tables {
		for in, idx := range table.Indexes {
			named, ok := idx.Indexer.(interface{ indexedField() string })
			if !ok {
				continue
			}
			field := named.indexedField()
			want := &memdb.StringFieldIndex{Field: field}
			got := idx.Indexer.(memdb.SingleIndexer)
			for _, rec := range records[tn] {
				wok, wkey, werr := want.FromObject(rec)
				gok, gkey, gerr := got.FromObject(rec)
				if wok != gok || !bytes.Equal(wkey, gkey) || (werr == nil) != (gerr == nil) {
					t.Errorf("%s.%s FromObject(%+v) = %v %q %v, StringFieldIndex %v %q %v", tn, in, rec, gok, gkey, gerr, wok, wkey, werr)
				}
				checked++
			}
			for _, arg := range []any{"web", "", "a\x00b", 7} {
				wkey, werr := want.FromArgs(arg)
				gkey, gerr := idx.Indexer.FromArgs(arg)
				if !bytes.Equal(wkey, gkey) || (werr == nil) != (gerr == nil) {
					t.Errorf("%s.%s FromArgs(%v) = %q %v, StringFieldIndex %q %v", tn, in, arg, gkey, gerr, wkey, werr)
				}
				wp, _ := want.PrefixFromArgs(arg)
				gp, _ := idx.Indexer.(memdb.PrefixIndexer).PrefixFromArgs(arg)
				if !bytes.Equal(wp, gp) {
					t.Errorf("%s.%s PrefixFromArgs(%v) = %q, StringFieldIndex %q", tn, in, arg, gp, wp)
				}
			}
			if _, err := idx.Indexer.FromArgs("a", "b"); err == nil {
				t.Errorf("%s.%s took two arguments", tn, in)
			}
			if _, _, err := got.FromObject(&struct{ Name string }{"x"}); err == nil {
				t.Errorf("%s.%s indexed a record of another type", tn, in)
			}
		}
	}
	if checked < 12 {
		t.Fatalf("compared %d records: the schema's string indexes were not found", checked)
	}
}

func FuzzStrIndex(f *testing.F) {
	f.Add("web")
	f.Add("")
	f.Add("a\x00")
	f.Fuzz(func(t *testing.T, s string) {
		want := &memdb.StringFieldIndex{Field: "Name"}
		got := strField("Name", func(r *Service) string { return r.Name })
		wok, wkey, _ := want.FromObject(&Service{Name: s})
		gok, gkey, _ := got.FromObject(&Service{Name: s})
		if wok != gok || !bytes.Equal(wkey, gkey) {
			t.Fatalf("FromObject(%q) = %v %q, StringFieldIndex %v %q", s, gok, gkey, wok, wkey)
		}
		wa, _ := want.FromArgs(s)
		ga, _ := got.FromArgs(s)
		if !bytes.Equal(wa, ga) {
			t.Fatalf("FromArgs(%q) = %q, StringFieldIndex %q", s, ga, wa)
		}
	})
}

// hasKey agrees with comparing FromObject's key.
func TestStrIndexHasKey(t *testing.T) {
	x := strField("Name", func(r *Service) string { return r.Name })
	for _, name := range []string{"web", "", "we", "web2"} {
		for _, key := range [][]byte{[]byte("web\x00"), []byte("web"), []byte("\x00"), nil, []byte("we\x00"), []byte("web2\x00")} {
			rec := &Service{Name: name}
			ok, k, _ := x.FromObject(rec)
			want := ok && bytes.Equal(k, key)
			if got := x.hasKey(rec, key); got != want {
				t.Errorf("hasKey(%q, %q) = %v, want %v", name, key, got, want)
			}
		}
	}
	if x.hasKey(&Node{Name: "web"}, []byte("web\x00")) {
		t.Error("hasKey matched a record of another type")
	}
}

// keyedRowName is the name a row of the services, sets, node sets or check
// sets table is filed under.
func keyedRowName(row any) string {
	switch r := row.(type) {
	case *Service:
		return r.Name
	case *serviceSet:
		return r.Service
	case *nodeSet:
		return r.Node
	case *checkSetRow:
		return r.Service
	}
	return ""
}

// Every row a write leaves in the services, sets and check sets tables
// carries its own name's key, or none: a wrong one would file it under
// another name in go-memdb.
func TestRowsCarryTheirKeys(t *testing.T) {
	f := New(nil)
	idx := uint64(1)
	for i := range 300 {
		svc := fmt.Sprintf("svc-%d", i%7)
		applyOne(t, f, idx, RegisterType, &RegisterRequest{ID: fmt.Sprintf("i-%d", i), Service: svc, Address: "127.0.0.1", Port: 80,
			Node: fmt.Sprintf("n%d", i%3), Checks: []CheckDefinition{{Name: "ttl", Type: CheckTTL, TTL: int64(time.Hour)}}})
		idx++
		if i%5 == 4 {
			applyOne(t, f, idx, DeregisterType, &DeregisterRequest{Service: svc, ID: fmt.Sprintf("i-%d", i-2)})
			idx++
		}
	}
	tx := f.Store().read(nil)
	keyed := 0
	for _, table := range []string{tableServices, tableSets, tableNodeSets, tableCheckSets} {
		it, err := tx.Get(table, "id")
		if err != nil {
			t.Fatal(err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			name := keyedRowName(raw)
			k := raw.(keyedRow).idKey()
			if k == nil {
				continue
			}
			keyed++
			if string(k) != name+"\x00" {
				t.Fatalf("%s row %q carries the key %q", table, name, k)
			}
			if got, err := tx.First(table, "id", name); err != nil || got != raw {
				t.Fatalf("%s row %q not found under its name: %v", table, name, err)
			}
		}
	}
	if keyed < 7+3+7+7 {
		t.Fatalf("%d rows carry a key; every written row should", keyed)
	}
}
