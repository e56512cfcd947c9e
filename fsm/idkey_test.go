package fsm

import (
	"testing"
)

// FuzzIDKeyOrder: a service's set ordered with keys (lessInstanceID) is
// in the IDs' order, whatever the IDs: shorter than a key (six bytes), longer, sharing
// the first six bytes, holding zero bytes.
func FuzzIDKeyOrder(f *testing.F) {
	for _, c := range [][2]string{
		{"a", "b"},
		{"ab", "ba"},
		{"zz", "a"},
		{"abcdeF", "abcdef"},
		{"abcdefZ", "abcdefa"},
		{"ab", "ab\x00"},
		{"ab\x00", "ab\x01"},
		{"payments-0001", "payments-0002"},
		{"i-12345", "i-123456"},
		{"", "\x00"},
		{"\x00\x00\x00\x00\x00\x00\x00\x00a", "\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"\xff\xff\xff\xff\xff\xff\xff\xff", "\xff\xff\xff\xff\xff\xff\xff\xff\x00"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, idA, idB string) {
		a := &Instance{ID: idA, idKey: keyOf(idA)}
		b := &Instance{ID: idB, idKey: keyOf(idB)}
		if got, want := lessInstanceID(a, b), idA < idB; got != want {
			t.Fatalf("%q < %q is %v, the set says %v", idA, idB, want, got)
		}
	})
}
