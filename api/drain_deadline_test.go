package api

import (
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// A drain without a deadline is told one is required; one with a deadline
// outside the allowed range is told that, with the value it gave.
func TestDrainDeadlineErrorSaysWhatIsWrong(t *testing.T) {
	cases := []struct {
		deadline time.Duration
		want     string
	}{
		{0, "is required for drain"},
		{25 * time.Hour, "25h0m0s is out of range"},
		{500 * time.Millisecond, "500ms is out of range"},
		{-5 * time.Minute, "-5m0s is out of range"},
	}
	for _, tc := range cases {
		_, err := buildMaintenance("web", "w1", &client.MaintenanceRequest{Mode: "drain", Deadline: client.Duration(tc.deadline)}, time.Unix(1000, 0))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("deadline %v: %v, want it to say %q", tc.deadline, err, tc.want)
		}
	}
}
