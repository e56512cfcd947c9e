package cmd_test

import (
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestMain fails the package if any test leaves goroutines behind.
func TestMain(m *testing.M) { agenttest.Main(m) }
