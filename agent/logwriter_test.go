package agent_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/hashicorp/go-hclog"
)

// countingWriter records what it is given and how many calls it took; gate,
// when set, holds every call until it is closed.
type countingWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	calls   int
	gate    chan struct{}
	entered chan struct{} // receives once per call, when set
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.entered != nil {
		c.entered <- struct{}{}
	}
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.buf.Write(p)
}

func (c *countingWriter) snapshot() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.calls
}

// TestLogWriterKeepsEveryLineInOrder: lines from many goroutines through a
// logger arrive whole, each goroutine's in the order it wrote them, and
// Close leaves nothing pending.
func TestLogWriterKeepsEveryLineInOrder(t *testing.T) {
	out := &countingWriter{}
	w := agent.NewLogWriter(out)
	logger := hclog.New(&hclog.LoggerOptions{Name: "t", Output: w, Level: hclog.Info})
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				logger.Info("write accepted", "writer", g, "seq", i)
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, calls := out.snapshot()
	next := make([]int, writers)
	n := 0
	for line := range strings.Lines(got) {
		var g, i int
		k := strings.Index(line, "writer=")
		if k < 0 || !strings.HasSuffix(line, "\n") {
			t.Fatalf("a torn line: %q", line)
		}
		if _, err := fmt.Sscanf(line[k:], "writer=%d seq=%d", &g, &i); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
		n++
	}
	if n != writers*lines {
		t.Fatalf("%d lines arrived, want %d", n, writers*lines)
	}
	t.Logf("%d lines in %d writes", n, calls)
}

// TestLogWriterBatchesLinesWrittenDuringAWrite: while the output is busy
// with one write, the lines logged meanwhile wait and then go out together
// in one write.
func TestLogWriterBatchesLinesWrittenDuringAWrite(t *testing.T) {
	out := &countingWriter{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w := agent.NewLogWriter(out)
	defer w.Close()
	returned := func(what string, write func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { write(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			close(out.gate)
			t.Fatalf("%s waited for the output", what)
		}
	}
	returned("the first line", func() { _, _ = io.WriteString(w, "first\n") })
	select {
	case <-out.entered: // the first batch is being written, and held
	case <-time.After(10 * time.Second):
		t.Fatal("the first line was not written")
	}
	returned("100 lines logged while the output was held", func() {
		for i := range 100 {
			_, _ = fmt.Fprintf(w, "line %d\n", i)
		}
	})
	out.entered = nil
	close(out.gate)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, calls := out.snapshot()
		if strings.Count(got, "\n") == 101 {
			if calls != 2 {
				t.Fatalf("101 lines in %d writes, want 2 (the first, then the 100 written while it was held)", calls)
			}
			if !strings.HasPrefix(got, "first\nline 0\n") || !strings.HasSuffix(got, "line 99\n") {
				t.Fatalf("out of order: %q…", got[:40])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d lines of 101", strings.Count(got, "\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLogWriterBoundsWhatItHolds: with the output stalled, writes return
// until about logPendingMax (1 MiB) is pending, then wait; they go on once
// the output drains, and nothing is lost.
func TestLogWriterBoundsWhatItHolds(t *testing.T) {
	pr, pw := io.Pipe()
	w := agent.NewLogWriter(pw)
	line := strings.Repeat("x", 1023) + "\n"
	wrote := make(chan int, 4096)
	go func() {
		for i := range 3000 { // ~3 MiB
			_, _ = io.WriteString(w, line)
			wrote <- i
		}
		close(wrote)
	}()
	// Nothing reads the pipe: the writes stop after about 1 MiB pending
	// (plus the batch held in the pipe write).
	n := 0
	stalled := time.After(10 * time.Second)
wait:
	for {
		select {
		case _, ok := <-wrote:
			if !ok {
				t.Fatal("3 MiB of writes returned with nothing reading the output")
			}
			n++
		case <-time.After(200 * time.Millisecond):
			if n >= 900 {
				break wait // no write returned for a while: they wait
			}
			// A slow machine, or a bound far below 1 MiB (then the
			// deadline below fails the test).
		case <-stalled:
			t.Fatalf("after 10 s: %d lines written, and no pause after 900 or more", n)
		}
	}
	if n > 2100 {
		t.Fatalf("%d lines (KiB) written before the writes waited, want about 1,024 to 2,048", n)
	}
	// Drain: every line arrives.
	got := make(chan int, 1)
	go func() {
		c := 0
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 4096), 4096)
		for sc.Scan() {
			c++
		}
		got <- c
	}()
	for range wrote {
	}
	_ = w.Close()
	_ = pw.Close()
	select {
	case c := <-got:
		if c != 3000 {
			t.Fatalf("%d lines read, want 3000", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the output was not drained in 20 s")
	}
}

// TestLogWriterAfterClose: a write after Close goes straight out, after
// what was pending.
func TestLogWriterAfterClose(t *testing.T) {
	out := &countingWriter{}
	w := agent.NewLogWriter(out)
	_, _ = io.WriteString(w, "a\n")
	_ = w.Close()
	_ = w.Close() // twice is harmless
	_, _ = io.WriteString(w, "b\n")
	if got, _ := out.snapshot(); got != "a\nb\n" {
		t.Fatalf("got %q", got)
	}
}

// BenchmarkAuditLine measures a leader's audit line, logged from 8
// goroutines, straight to an output and through a LogWriter, into a file
// and into a pipe that another goroutine drains (Docker's log reader).
func BenchmarkAuditLine(b *testing.B) {
	for _, sink := range []string{"file", "pipe"} {
		for _, batched := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/batched=%v", sink, batched), func(b *testing.B) {
				var out io.Writer
				switch sink {
				case "file":
					f, err := os.Create(b.TempDir() + "/log")
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					out = f
				case "pipe":
					pr, pw, err := os.Pipe()
					if err != nil {
						b.Fatal(err)
					}
					drained := make(chan struct{})
					go func() {
						_, _ = io.Copy(io.Discard, pr)
						close(drained)
					}()
					defer func() { pw.Close(); <-drained; pr.Close() }()
					out = pw
				}
				var lw *agent.LogWriter
				if batched {
					lw = agent.NewLogWriter(out)
					defer lw.Close()
					out = lw
				}
				logger := hclog.New(&hclog.LoggerOptions{Name: "beacon.audit", Output: out, Level: hclog.Info, TimeFormat: time.RFC3339Nano})
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						i++
						logger.Info("write accepted", "op", "register", "index", i, "accessor", "anonymous",
							"remote", "127.0.0.1:40000", "via", "node-1", "service", "bench-1", "id", "i-1")
					}
				})
			})
		}
	}
}
