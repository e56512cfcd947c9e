package fsm

import "testing"

// lookupUnique must find exactly what tx.First finds, including for keys
// that are prefixes of others and keys that sort between stored ones.
func TestLookupUniqueMatchesFirst(t *testing.T) {
	st := newStoreState()
	tx := st.db.Txn(true)
	for _, in := range []*Instance{
		{Service: "web", ID: "a"}, {Service: "web", ID: "a1"}, {Service: "web", ID: "b"},
		{Service: "web2", ID: "a"}, {Service: "w", ID: "eb"},
	} {
		if err := tx.Insert(tableInstances, in); err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range []*Token{{Accessor: "acc1", SecretHash: "aa"}, {Accessor: "acc10", SecretHash: "ab"}} {
		if err := tx.Insert(tableTokens, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Insert(tableServices, &Service{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	rtx := st.db.Txn(false)
	for _, q := range []struct {
		table, index string
		args         []any
	}{
		{tableInstances, "id", []any{"web", "a"}},
		{tableInstances, "id", []any{"web", "a1"}},
		{tableInstances, "id", []any{"web", "a0"}},
		{tableInstances, "id", []any{"web", "c"}},
		{tableInstances, "id", []any{"we", "b"}},
		{tableInstances, "id", []any{"web2", "a"}},
		{tableInstances, "id", []any{"w", "eb"}},
		{tableInstances, "id", []any{"zzz", "a"}},
		{tableTokens, "id", []any{"acc1"}},
		{tableTokens, "id", []any{"acc"}},
		{tableTokens, "secret", []any{"ab"}},
		{tableTokens, "secret", []any{"a"}},
		{tableServices, "id", []any{"web"}},
		{tableServices, "id", []any{"we"}},
		{tableServices, "id", []any{""}},
	} {
		want, werr := rtx.First(q.table, q.index, q.args...)
		got, gerr := lookupUnique(rtx, q.table, q.index, q.args...)
		if got != want || (werr == nil) != (gerr == nil) {
			t.Errorf("%s.%s %v: lookupUnique %v, %v; First %v, %v", q.table, q.index, q.args, got, gerr, want, werr)
		}
	}
	// A non-unique index goes to First.
	if _, err := lookupUnique(rtx, tableInstances, "node", "n1"); err != nil {
		t.Errorf("non-unique index: %v", err)
	}
}
