package api

import (
	"regexp"
	"testing"
)

// FuzzCharClasses holds the hand-written character class checks to the
// regular expressions they replaced.
func FuzzCharClasses(f *testing.F) {
	for _, s := range []string{"", "a", "-a", "a-", "web-1", "i-12345", "A.b_c-d", "a/b", "1.2.3+build", "v1.0.0-rc.1",
		"é", "a\n", "a b", "_a", ".a", "/a", "+a", "a\x00", "\xff", "a\xff", "Z9"} {
		f.Add(s)
	}
	id := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	metaKey := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	version := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]*$`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			name string
			re   *regexp.Regexp
			fn   func(string) bool
		}{{"ID", id, validIDChars}, {"meta key", metaKey, validMetaKeyChars}, {"version", version, validVersionChars}} {
			if got, want := c.fn(s), c.re.MatchString(s); got != want {
				t.Errorf("%s %q: the check says %v, the expression %v", c.name, s, got, want)
			}
		}
	})
}
