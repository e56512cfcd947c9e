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
// format characters (bidirectional overrides, zero-width characters) or
// line and paragraph separators, and text without any is returned as it is.
func FuzzEscapeControl(f *testing.F) {
	for _, s := range []string{"ok", "\x1b[2J\x07", "a\nb\tc", "\u009bx", "\xff\xfe", "✓ fine",
		"ok\x1b[31mRED\u202eFAKE", "a\u200bb\u202cc\ufeff", "\u2066x\u2069\u2028\u2029", "\u00ad\U000e0001", "\ufffd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := fsm.EscapeControl(s)
		if !utf8.ValidString(out) {
			t.Fatalf("%q -> invalid UTF-8 %q", s, out)
		}
		clean := utf8.ValidString(s)
		for _, r := range out {
			if unsafeForTerminal(r) {
				t.Fatalf("%q -> %q keeps %U", s, out, r)
			}
		}
		for _, r := range s {
			if unsafeForTerminal(r) || r == utf8.RuneError {
				clean = false
			}
		}
		if clean && out != s {
			t.Fatalf("clean %q changed to %q", s, out)
		}
	})
}

// unsafeForTerminal: control and format characters and the line and
// paragraph separators, by the Unicode tables rather than EscapeControl's
// own test.
func unsafeForTerminal(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}

// What QA printed raw through beacon checks, and the other format
// characters, come out escaped and visible.
func TestEscapeControlEscapesFormatCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"ok\x1b[31mRED\u202eFAKE":      `ok\x1b[31mRED\u202eFAKE`,
		"a\u202ab\u202cc\u202dd":       `a\u202ab\u202cc\u202dd`,
		"\u2066iso\u2067\u2068\u2069":  `\u2066iso\u2067\u2068\u2069`,
		"zero\u200bwidth\u200c\u200d":  `zero\u200bwidth\u200c\u200d`,
		"\u200e\u200f\u061c":           `\u200e\u200f\u061c`,
		"\ufeffbom":                    `\ufeffbom`,
		"soft\u00adhyphen\u2060\u2064": `soft\u00adhyphen\u2060\u2064`,
		"line\u2028para\u2029":         `line\u2028para\u2029`,
		"tag\U000e0001\U000e0041":      `tag\U000e0001\U000e0041`,
		"ünïcode ✓ 日本 😀 \ufffd":        "ünïcode ✓ 日本 😀 \ufffd",
	} {
		if got := fsm.EscapeControl(in); got != want {
			t.Errorf("EscapeControl(%q) = %q, want %q", in, got, want)
		}
	}
}
