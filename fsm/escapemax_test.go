package fsm

import (
	"strings"
	"testing"
)

// TestEscapeControlMaxCutsBetweenEscapes: the cut output is never longer
// than asked and is always a prefix of the whole escaped text that ends
// between two escapes or characters, for every kind EscapeControl escapes
// (C0, C1, format characters, ones above U+FFFF, bytes that are not UTF-8).
func TestEscapeControlMaxCutsBetweenEscapes(t *testing.T) {
	inputs := []string{
		"plain text", "a\x1bb", "é日\u202eX", "x\u0085y", "zw\u200bj", "\U000e0001tag", "bad\xffbyte",
		strings.Repeat("é\u202e\x07", 40),
	}
	for _, s := range inputs {
		whole := EscapeControl(s)
		prev := -1
		for n := 0; n <= len(whole)+2; n++ {
			got := EscapeControlMax(s, n)
			if len(got) > n || !strings.HasPrefix(whole, got) {
				t.Fatalf("EscapeControlMax(%q, %d) = %q: want a prefix of %q of at most %d bytes", s, n, got, whole, n)
			}
			if len(got) < prev {
				t.Fatalf("EscapeControlMax(%q, %d) shrank to %q", s, n, got)
			}
			prev = len(got)
			boundary := false
			for k := 0; k <= len(s); k++ {
				if EscapeControl(s[:k]) == got {
					boundary = true
					break
				}
			}
			if !boundary {
				t.Fatalf("EscapeControlMax(%q, %d) = %q ends inside an escape or a character", s, n, got)
			}
		}
		if got := EscapeControlMax(s, len(whole)); got != whole {
			t.Fatalf("EscapeControlMax(%q, %d) = %q, want all of %q", s, len(whole), got, whole)
		}
	}
}
