package agenttest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main is the TestMain of packages whose tests start agents: it runs the
// tests and fails the package if any goroutine is left behind, since every
// agent a test starts must shut down completely. memberlist may still be
// finishing a probe of a dead peer (bounded by its TCP timeout, 2 s) when
// the last agent stops, so leaks are looked for until they persist for 5 s.
//
//	func TestMain(m *testing.M) { agenttest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = goleak.Find(); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}
