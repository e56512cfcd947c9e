package chaostest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node is one `beacon agent` process in its own network namespace. The
// process is restarted with the same arguments and data dir, so it comes
// back with its Raft log. Each start is a new incarnation. A Node is safe
// for concurrent use.
type Node struct {
	// Name is the agent's --node name (n1, n2, ...); Index is its position.
	Name  string
	Index int
	// IP is the node's address; its API is at IP:8750.
	IP string

	ns      string
	bin     string
	args    []string
	dataDir string
	logPath string

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	incarnation int
	paused      bool
	killing     bool
	unexpected  []string // unexpected exits, with the end of the log
}

// HTTPAddr returns the node's API address (host:port).
func (n *Node) HTTPAddr() string { return fmt.Sprintf("%s:%d", n.IP, HTTPPort) }

// LogPath returns the file the node's stdout and stderr go to (every
// incarnation appends to it).
func (n *Node) LogPath() string { return n.logPath }

// Incarnation returns how many times the process was started (1 after the
// first start).
func (n *Node) Incarnation() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.incarnation
}

// Running reports whether the process runs (paused counts as running).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Paused reports whether the process is stopped with SIGSTOP.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// PID returns the process id, or 0 when it does not run.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Start starts the process (a new incarnation). It does not wait for the
// API; see WaitHealthy.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("chaostest: %s already runs", n.Name)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "{\"@message\":\"chaostest: starting incarnation %d\",\"@timestamp\":%q}\n", n.incarnation+1, time.Now().Format(time.RFC3339Nano))
	// `ip netns exec` execs the binary in place, so the PID is the agent's
	// and signals reach it directly.
	args := append([]string{"netns", "exec", n.ns, n.bin, "agent"}, n.args...)
	c := exec.Command("ip", args...)
	c.Stdout, c.Stderr = logf, logf
	// If the test process dies, so do its agents.
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("chaostest: start %s: %w", n.Name, err)
	}
	n.cmd, n.paused, n.killing = c, false, false
	n.incarnation++
	exited := make(chan struct{})
	n.exited = exited
	go func() {
		err := c.Wait()
		logf.Close()
		n.mu.Lock()
		if !n.killing {
			n.unexpected = append(n.unexpected, fmt.Sprintf("%s (incarnation %d) exited by itself: %v; log tail:\n%s",
				n.Name, n.incarnation, err, tailFile(n.logPath, 30)))
		}
		if n.cmd == c {
			n.cmd = nil
		}
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill() error { return n.stop(syscall.SIGKILL) }

// Terminate sends SIGTERM (a graceful shutdown, without leaving) and waits,
// falling back to SIGKILL after 30 seconds.
func (n *Node) Terminate() error { return n.stop(syscall.SIGTERM) }

func (n *Node) stop(sig syscall.Signal) error {
	n.mu.Lock()
	c, exited := n.cmd, n.exited
	if c == nil {
		n.mu.Unlock()
		return nil
	}
	n.killing = true
	paused := n.paused
	n.paused = false
	n.mu.Unlock()
	if err := c.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if paused && sig != syscall.SIGKILL {
		_ = c.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = c.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaostest: %s (pid %d) did not exit", n.Name, c.Process.Pid)
	}
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers
// nothing, like a long GC pause or a frozen VM.
func (n *Node) Pause() error { return n.signal(syscall.SIGSTOP, true) }

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT, false) }

func (n *Node) signal(sig syscall.Signal, paused bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("chaostest: %s does not run", n.Name)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return err
	}
	n.paused = paused
	return nil
}

// Unexpected returns a description of every exit the harness did not cause
// (a crash or a panic), with the end of the log.
func (n *Node) Unexpected() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.unexpected...)
}

// WaitHealthy waits until the node's API answers /healthz, or ctx ends.
func (n *Node) WaitHealthy(ctx context.Context, hc *http.Client) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+n.HTTPAddr()+"/healthz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return nil
		}
		if !n.Running() {
			return fmt.Errorf("chaostest: %s exited while starting: %s", n.Name, tailFile(n.logPath, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaostest: %s not healthy: %w (last error %v)", n.Name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tailFile returns the last lines of a file.
func tailFile(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var ring []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ring = append(ring, sc.Text())
		if len(ring) > lines {
			ring = ring[1:]
		}
	}
	return strings.Join(ring, "\n")
}

func newNode(i int, nw *Network, bin, dir string, args []string) *Node {
	name := fmt.Sprintf("n%d", i+1)
	return &Node{
		Name: name, Index: i, IP: nw.NodeIP(i), ns: nw.Namespace(i), bin: bin, args: args,
		dataDir: filepath.Join(dir, name, "data"), logPath: filepath.Join(dir, name+".log"),
	}
}
