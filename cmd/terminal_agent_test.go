package cmd_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// QA's case on a real agent: a TTL report's output with an escape
// sequence, a right-to-left override and a zero-width space is stored
// escaped, and beacon checks prints it escaped.
func TestChecksPrintsHostileTTLOutputEscaped(t *testing.T) {
	c := agenttest.New(t, 1)
	addr := c.Node(0).HTTPAddr()
	mustBeacon(t, addr, "register", "web", "web-2", "--address", "127.0.0.1", "--port", "8081", "--check-ttl", "1h")
	mustBeacon(t, addr, "check", "pass", "web:web-2:ttl", "--output", "ok\x1b[31mRED\u202eFAKE\u200b")
	const want = `ok\x1b[31mRED\u202eFAKE\u200b`
	var out string
	agenttest.Eventually(t, 10*time.Second, func() bool {
		out = mustBeacon(t, addr, "checks")
		return strings.Contains(out, "passing")
	}, "the report's passing status in beacon checks")
	for _, r := range out {
		if (unicode.IsControl(r) && r != '\n') || unicode.Is(unicode.Cf, r) {
			t.Fatalf("beacon checks prints %U raw: %q", r, out)
		}
	}
	if !strings.Contains(out, want) {
		t.Fatalf("beacon checks does not show %s: %q", want, out)
	}
	// Stored escaped, as control characters already were.
	checks, _, err := c.Client(0).Checks(context.Background(), client.CheckFilter{}, nil)
	if err != nil || len(checks) != 1 || checks[0].Output != want {
		t.Fatalf("stored output: %v %+v", err, checks)
	}
}
