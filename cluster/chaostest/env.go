package chaostest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Env is the suite's configuration from the environment:
//
//	CHAOS_DURATION   workload time per run (default 90s)
//	CHAOS_RUNS       number of runs (default 1)
//	CHAOS_SEED       seed of the first run; run i uses seed+i (default random)
//	CHAOS_FAULTS     comma-separated fault kinds (default all)
//	CHAOS_CLIENTS    concurrent workers (default 6)
//	CHAOS_KEYS       instance ids they share (default 5)
//	CHAOS_OUT        directory for run artifacts (default a temp dir, removed
//	                 when the run passes)
//	CHAOS_KEEP       keep artifacts of passing runs too (1/true)
//	CHAOS_BINARY     use this beacon binary instead of building one
//	CHAOS_RACE       build the binary with the race detector (1/true)
//	CHAOS_LOG_LEVEL  agents' log level (default info)
//	CHAOS_SOAK       soak duration; enables TestSoak (e.g. 10m)
//	CHAOS_SAMPLE     soak sampling interval (default soak/20, at least 5s)
type Env struct {
	Duration    time.Duration
	Runs        int
	Seed        uint64
	Faults      []FaultKind
	Clients     int
	Keys        int
	Out         string
	Keep        bool
	Binary      string
	Race        bool
	LogLevel    string
	Soak        time.Duration
	SampleEvery time.Duration
}

// EnvFromOS reads the configuration, failing on malformed values.
func EnvFromOS() (Env, error) {
	e := Env{Duration: 90 * time.Second, Runs: 1, Seed: rand.Uint64() % 1_000_000_000, LogLevel: "info"}
	var err error
	dur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = time.ParseDuration(v); err == nil && *dst <= 0 {
				err = fmt.Errorf("%s must be positive", name)
			}
			if err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = strconv.Atoi(v); err == nil && *dst <= 0 {
				err = fmt.Errorf("%s must be positive", name)
			}
			if err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	flag := func(name string) bool {
		b, _ := strconv.ParseBool(os.Getenv(name))
		return b
	}
	dur("CHAOS_DURATION", &e.Duration)
	num("CHAOS_RUNS", &e.Runs)
	num("CHAOS_CLIENTS", &e.Clients)
	num("CHAOS_KEYS", &e.Keys)
	dur("CHAOS_SOAK", &e.Soak)
	dur("CHAOS_SAMPLE", &e.SampleEvery)
	if v := os.Getenv("CHAOS_SEED"); v != "" && err == nil {
		if e.Seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			err = fmt.Errorf("CHAOS_SEED=%q: %w", v, err)
		}
	}
	if err == nil {
		e.Faults, err = ParseFaults(os.Getenv("CHAOS_FAULTS"))
	}
	e.Out, e.Binary = os.Getenv("CHAOS_OUT"), os.Getenv("CHAOS_BINARY")
	e.Keep, e.Race = flag("CHAOS_KEEP"), flag("CHAOS_RACE")
	if v := os.Getenv("CHAOS_LOG_LEVEL"); v != "" {
		e.LogLevel = v
	}
	if e.SampleEvery == 0 && e.Soak > 0 {
		e.SampleEvery = max(e.Soak/20, 5*time.Second)
	}
	return e, err
}

// RequireNetns skips the test under -short, and when this machine cannot
// run the harness (not root, no namespaces); under CI=true the latter is a
// failure instead, since CI must run the suite.
func RequireNetns(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos test: skipped with -short")
	}
	if err := CheckPrivileges(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: the chaos suite must run here)", err)
		}
		t.Skipf("%v; skipping the chaos suite", err)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// Binary returns the beacon binary to test: $CHAOS_BINARY, or one built
// once per test process (with the race detector if CHAOS_RACE is set).
func Binary(t testing.TB, e Env) string {
	t.Helper()
	if e.Binary != "" {
		return e.Binary
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "beacon-chaos-bin-*")
		if binErr == nil {
			binPath, binErr = BuildBinary(binDir, e.Race)
		}
	})
	if binErr != nil {
		t.Fatalf("build beacon: %v", binErr)
	}
	return binPath
}

// live holds every running cluster, so an interrupt can clean them up.
var live = struct {
	sync.Mutex
	m map[*Cluster]struct{}
}{m: map[*Cluster]struct{}{}}

func track(c *Cluster)   { live.Lock(); live.m[c] = struct{}{}; live.Unlock() }
func untrack(c *Cluster) { live.Lock(); delete(live.m, c); live.Unlock() }

// Main runs a test binary that uses the harness: on SIGINT or SIGTERM it
// kills the agents and removes the networks before exiting, after the tests
// it removes the built binary and checks for leaked goroutines.
func Main(m *testing.M) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "chaostest: %v: cleaning up\n", s)
			live.Lock()
			cs := make([]*Cluster, 0, len(live.m))
			for c := range live.m {
				cs = append(cs, c)
			}
			live.Unlock()
			for _, c := range cs {
				c.Close()
			}
			os.Exit(2)
		case <-done:
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(done)
	<-stopped
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
