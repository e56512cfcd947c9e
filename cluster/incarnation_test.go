package cluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIncarnationsGrowAcrossRestartsEvenIfTheClockStepsBack: each run's
// incarnation is above the last run's, kept in the data dir, whatever the
// clock says; a file that is not an incarnation stops the start.
func TestIncarnationsGrowAcrossRestartsEvenIfTheClockStepsBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // a fresh server's: not made yet
	first, err := nextIncarnation(dir)
	if err != nil || first == 0 {
		t.Fatalf("first run: %d %v", first, err)
	}
	second, err := nextIncarnation(dir)
	if err != nil || second <= first {
		t.Fatalf("second run: %d %v, want above %d", second, err, first)
	}
	// The last run's incarnation an hour ahead of the clock (the clock
	// was stepped back since).
	ahead := uint64(time.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(filepath.Join(dir, incarnationFile), []byte(strconv.FormatUint(ahead, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := nextIncarnation(dir); err != nil || got != ahead+1 {
		t.Fatalf("after a clock step back: %d %v, want %d", got, err, ahead+1)
	}
	if err := os.WriteFile(filepath.Join(dir, incarnationFile), []byte("not a number"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nextIncarnation(dir); err == nil || !strings.Contains(err.Error(), "not an incarnation") {
		t.Fatalf("a file that is not an incarnation: %v", err)
	}
	if got, err := nextIncarnation(""); err != nil || got == 0 {
		t.Fatalf("in memory: %d %v", got, err)
	}
}
