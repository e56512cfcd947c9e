package fsm

import (
	"testing"
)

// FuzzSetItemOrder: the sets' order with keys (setItem) is the strings'
// order, whatever the strings: shorter than a key, longer, sharing the
// first eight bytes, holding zero bytes.
func FuzzSetItemOrder(f *testing.F) {
	for _, c := range [][4]string{
		{"a", "b", "s", "s"},
		{"ab", "ab\x00", "s", "s"},
		{"ab\x00", "ab\x01", "x", "y"},
		{"payments-0001", "payments-0002", "svc", "svc"},
		{"i-12345", "i-123456", "web", "web-long-name"},
		{"", "\x00", "\x00\x00\x00\x00\x00\x00\x00\x00a", "\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"\xff\xff\xff\xff\xff\xff\xff\xff", "\xff\xff\xff\xff\xff\xff\xff\xff\x00", "a", "a"},
	} {
		f.Add(c[0], c[1], c[2], c[3])
	}
	f.Fuzz(func(t *testing.T, idA, idB, svcA, svcB string) {
		a := &Instance{ID: idA, Service: svcA}
		b := &Instance{ID: idB, Service: svcB}
		if got, want := lessInstanceID(byID(a), byID(b)), idA < idB; got != want {
			t.Fatalf("by ID: %q < %q is %v, the set says %v", idA, idB, want, got)
		}
		want := svcA < svcB || (svcA == svcB && idA < idB)
		if got := lessServiceID(byServiceID(a), byServiceID(b)); got != want {
			t.Fatalf("by service and ID: (%q, %q) < (%q, %q) is %v, the set says %v", svcA, idA, svcB, idB, want, got)
		}
	})
}
