package agent_test

import (
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestMain fails the package if a test leaves goroutines behind
// (agenttest.Main).
func TestMain(m *testing.M) { agenttest.Main(m) }
