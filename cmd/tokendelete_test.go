package cmd

import (
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestTokenDeleteOfAnUnknownAccessorSaysNothingWasDeleted: `beacon token
// delete` with a mistyped accessor exits 1 saying no such token, and the
// real token is still listed.
func TestTokenDeleteOfAnUnknownAccessorSaysNothingWasDeleted(t *testing.T) {
	const mgmt = "test-management-token-0123456789"
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.ManagementToken, c.ClusterSecret = mgmt, "test-cluster-secret-abcdef-0123456789"
	}))
	c.WaitForLeader()
	g := []string{"--addr", c.Node(0).HTTPAddr(), "--token", mgmt}
	out, stderr, code := runCLI(t, append(g, "token", "create", "--policy", "read", "--description", "tenant A")...)
	if code != exitOK {
		t.Fatalf("create: %s", stderr)
	}
	var accessor string
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "accessor") {
			accessor = strings.TrimSpace(v)
		}
	}
	if accessor == "" {
		t.Fatalf("no accessor in %q", out)
	}
	typo := accessor[:len(accessor)-1] + "x"
	out, stderr, code = runCLI(t, append(g, "token", "delete", typo)...)
	if code != exitError || strings.Contains(out, "Deleted") || !strings.Contains(stderr, "no such token "+typo+" (nothing deleted)") {
		t.Fatalf("delete of a mistyped accessor: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	out, _, _ = runCLI(t, append(g, "token", "list")...)
	if !strings.Contains(out, accessor) {
		t.Fatalf("the real token is gone: %q", out)
	}
	out, stderr, code = runCLI(t, append(g, "token", "delete", accessor)...)
	if code != exitOK || !strings.Contains(out, "Deleted token "+accessor) {
		t.Fatalf("delete: exit %d %q %q", code, out, stderr)
	}
}
