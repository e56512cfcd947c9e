package agent_test

import (
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent"
)

// badNodeNames break the rule of node names (docs/api.md, Limits), each in
// its own way.
var badNodeNames = map[string]string{
	"a terminal escape":  "r\x1b[2J\x1b[31mogue",
	"a space":            "my node",
	"nothing":            "",
	"129 characters":     strings.Repeat("n", 129),
	"a leading '-'":      "-n1",
	"a slash":            "n1/x",
	"a non-ASCII letter": "nœud",
}

// TestNewRefusesANodeNameThatBreaksTheRule: an agent whose node name the
// API would refuse (for force-leave, remove-peer) does not start, whether
// its config came from flags, a file or a program using the package.
func TestNewRefusesANodeNameThatBreaksTheRule(t *testing.T) {
	base := agent.DefaultConfig()
	base.DataDir = t.TempDir()
	base.ClusterSecret = strings.Repeat("s", 32)
	for _, ok := range []string{"n1", "N-1.a_b", strings.Repeat("n", 128), "9lives"} {
		cfg := base
		cfg.Node = ok
		if _, err := agent.New(cfg); err != nil {
			t.Fatalf("node name %q refused: %v", ok, err)
		}
	}
	for what, name := range badNodeNames {
		t.Run("a name with "+what+" is refused", func(t *testing.T) {
			cfg := base
			cfg.Node = name
			_, err := agent.New(cfg)
			if err == nil {
				t.Fatalf("node name %q accepted", name)
			}
			if !strings.Contains(err.Error(), "node name") || strings.ContainsRune(err.Error(), 0x1b) {
				t.Fatalf("node name %q: error %q should name the node name, escaped", name, err)
			}
		})
	}
}
