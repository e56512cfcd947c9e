package agenttest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
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
		_ = wait.Poll(5*time.Second, 100*time.Millisecond, func() (bool, string) {
			err = goleak.Find()
			return err == nil, ""
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}
