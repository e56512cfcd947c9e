package agent

import (
	"testing"
	"time"
)

func TestHealthConfigFromAgentSettings(t *testing.T) {
	c := Config{Node: "n1", CheckDenyCIDR: []string{"10.0.0.1/8", "none"}, MetricsPeriod: time.Second}
	hc, err := c.healthConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(hc.DenyCIDRs) != 1 || hc.DenyCIDRs[0].String() != "10.0.0.0/8" || hc.MetricsPeriod != time.Second {
		t.Fatalf("deny %v period %s", hc.DenyCIDRs, hc.MetricsPeriod)
	}
	c.CheckDenyCIDR = []string{"not-a-cidr"}
	if _, err := c.healthConfig(); err == nil {
		t.Fatal("a bad CIDR was accepted")
	}
	if err := c.Validate(); err == nil {
		t.Fatal("Validate accepted a bad CIDR")
	}
}

func TestMemoryIdleReleaseBounds(t *testing.T) {
	if d := DefaultConfig().MemoryIdleRelease; d != DefaultMemoryIdleRelease || d <= 0 {
		t.Fatalf("default idle release %s, want %s", d, DefaultMemoryIdleRelease)
	}
	for _, c := range []struct {
		d  time.Duration
		ok bool
	}{{0, true}, {-time.Second, false}, {time.Nanosecond, false}, {9 * time.Millisecond, false}, {10 * time.Millisecond, true}, {time.Minute, true}} {
		cfg := DefaultConfig()
		cfg.Node = "n1"
		cfg.MemoryIdleRelease = c.d
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("MemoryIdleRelease %s: Validate = %v, want ok %v", c.d, err, c.ok)
		}
	}
}
