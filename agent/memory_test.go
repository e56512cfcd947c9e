package agent

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
)

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]memoryPolicy{
		"":          {mode: MemoryLimitContainer},
		"container": {mode: MemoryLimitContainer},
		"auto":      {mode: MemoryLimitAuto},
		"AUTO":      {mode: MemoryLimitAuto},
		"off":       {mode: MemoryLimitOff},
		"512MiB":    {mode: "fixed", fixed: 512 << 20},
		"2GB":       {mode: "fixed", fixed: 2e9},
		"1 GiB":     {mode: "fixed", fixed: 1 << 30},
		"300000000": {mode: "fixed", fixed: 3e8},
	} {
		got, err := parseMemoryLimit(in)
		if err != nil || got != want {
			t.Errorf("parseMemoryLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "-1", "0", "12XB", "99999999999GiB"} {
		if _, err := parseMemoryLimit(in); err == nil {
			t.Errorf("parseMemoryLimit(%q) accepted", in)
		}
	}
	c := DefaultConfig()
	c.MemoryLimit = "lots"
	if err := c.Validate(); err == nil {
		t.Errorf("Validate accepted memory limit %q", c.MemoryLimit)
	}
}

func TestContainerLimit(t *testing.T) {
	write := func(t *testing.T, dir, name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("cgroup v2 with a limit", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "memory.max", "1073741824\n")
		if got := containerLimit(dir); got != 1<<30 {
			t.Errorf("containerLimit = %d, want %d", got, 1<<30)
		}
	})
	t.Run("cgroup v2 without a limit", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "memory.max", "max\n")
		if got := containerLimit(dir); got != 0 {
			t.Errorf("containerLimit = %d, want 0", got)
		}
	})
	t.Run("cgroup v1 with and without a limit", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "memory/memory.limit_in_bytes", "536870912\n")
		if got := containerLimit(dir); got != 512<<20 {
			t.Errorf("containerLimit = %d, want %d", got, 512<<20)
		}
		write(t, dir, "memory/memory.limit_in_bytes", "9223372036854771712\n")
		if got := containerLimit(dir); got != 0 {
			t.Errorf("containerLimit = %d, want 0 (v1's no limit)", got)
		}
	})
	t.Run("no cgroup files", func(t *testing.T) {
		if got := containerLimit(t.TempDir()); got != 0 {
			t.Errorf("containerLimit = %d, want 0", got)
		}
	})
}

func TestAutoLimitFollowsTheLiveHeap(t *testing.T) {
	for _, c := range []struct{ live, cap, want int64 }{
		{10 << 20, 0, autoFloor},          // a small heap: the floor
		{200 << 20, 0, 300 << 20},         // 1.5x the live heap
		{200 << 20, 250 << 20, 250 << 20}, // never above the container cap
	} {
		if got := autoLimit(c.live, c.cap); got != c.want {
			t.Errorf("autoLimit(%d, %d) = %d, want %d", c.live, c.cap, got, c.want)
		}
	}
}

// TestMemoryLimitModes applies each mode to the runtime of this test process
// and checks that closing the limiter puts back the limit it found.
func TestMemoryLimitModes(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT is set")
	}
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	cg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cg, "memory.max"), []byte("1073741824\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logger := hclog.NewNullLogger()
	limit := func() int64 { return debug.SetMemoryLimit(-1) }
	cgLimit := int64(1 << 30)
	cap := int64(float64(cgLimit) * containerShare)

	t.Run("off leaves the runtime alone", func(t *testing.T) {
		if m := startMemoryLimit(memoryPolicy{mode: MemoryLimitOff}, cg, time.Millisecond, logger); m != nil || limit() != orig {
			t.Errorf("limiter %v, limit %d; want none and %d", m, limit(), orig)
		}
	})
	t.Run("container is 80 percent of the cgroup's limit", func(t *testing.T) {
		m := startMemoryLimit(memoryPolicy{mode: MemoryLimitContainer}, cg, time.Millisecond, logger)
		if got, want := limit(), cap; got != want {
			t.Errorf("limit = %d, want %d", got, want)
		}
		m.close()
		if limit() != orig {
			t.Errorf("limit after close = %d, want %d", limit(), orig)
		}
	})
	t.Run("container without a cgroup limit leaves the runtime alone", func(t *testing.T) {
		if m := startMemoryLimit(memoryPolicy{mode: MemoryLimitContainer}, t.TempDir(), time.Millisecond, logger); m != nil || limit() != orig {
			t.Errorf("limiter %v, limit %d; want none and %d", m, limit(), orig)
		}
	})
	t.Run("a size is set as it is", func(t *testing.T) {
		m := startMemoryLimit(memoryPolicy{mode: "fixed", fixed: 3 << 30}, cg, time.Millisecond, logger)
		if limit() != 3<<30 {
			t.Errorf("limit = %d, want %d", limit(), 3<<30)
		}
		m.close()
	})
	t.Run("auto follows the live heap under the cap", func(t *testing.T) {
		m := startMemoryLimit(memoryPolicy{mode: MemoryLimitAuto}, cg, time.Millisecond, logger)
		wait.For(t, 30*time.Second, 5*time.Millisecond, func() (bool, string) {
			got, want := limit(), autoLimit(liveHeap(), cap)
			return got >= autoFloor && got <= cap && got == want,
				fmt.Sprintf("limit = %d, want autoLimit(live %d) = %d", got, liveHeap(), want)
		})
		m.close()
		if limit() != orig {
			t.Errorf("limit after close = %d, want %d", limit(), orig)
		}
	})
	t.Run("a limit changed by someone else is left to them", func(t *testing.T) {
		m := startMemoryLimit(memoryPolicy{mode: MemoryLimitAuto}, cg, time.Millisecond, logger)
		debug.SetMemoryLimit(math.MaxInt64 - 1)
		m.close()
		if limit() != math.MaxInt64-1 {
			t.Errorf("limit after close = %d, want the other owner's %d", limit(), int64(math.MaxInt64-1))
		}
	})
}
