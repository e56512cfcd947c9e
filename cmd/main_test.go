package cmd_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves goroutines behind: every
// agent a test starts must shut down completely.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
