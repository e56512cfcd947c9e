package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-memdb"
)

// The schema's string indexes make the keys memdb.StringFieldIndex makes for
// the same field: lookups, prefix scans and the order of iteration are
// unchanged.
func TestStrIndexMatchesStringFieldIndex(t *testing.T) {
	records := map[string][]any{
		tableSets:      {&serviceSet{Service: "web"}, &serviceSet{Service: "a-b.c"}},
		tableNodeSets:  {&nodeSet{Node: "n1"}},
		tableInstances: {&Instance{Service: "web", ID: "i1", Node: "n1"}, &Instance{Service: "web", ID: "i2"}},
		tableCheckSets: {&checkSetRow{Service: "web"}, &checkSetRow{Service: "db"}},
		tableServices:  {&Service{Name: "web"}, &Service{Name: ""}},
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
