package cmd_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentRefusesABadNodeNameFromFlagsOrFile: `beacon agent` with a node
// name outside the rule of node names stops before starting anything,
// whether the name came from --node or from the config file.
func TestAgentRefusesABadNodeNameFromFlagsOrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(file, []byte(`{"node": "my node"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	loopback := []string{"--dev", "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}
	for _, args := range [][]string{
		{"--node", "r\x1b[2J\x1b[31mogue"},
		{"--node", "-n1"},
		{"--node", strings.Repeat("n", 129)},
		{"--config", file},
	} {
		// Without the rule the agent would run until the context ends.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, err := beacon(ctx, "127.0.0.1:0", append(append([]string{"agent"}, loopback...), args...)...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "node name") {
			t.Errorf("beacon agent %q: %v, want an error about the node name", args, err)
		}
	}
}
