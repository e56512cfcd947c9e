package cmd_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// hungListener accepts connections and never answers, like an agent paused
// with SIGSTOP once the kernel has completed the handshake.
func hungListener(t *testing.T) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = &atomic.Int64{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), conns
}

// TestAddrHungAndHealthyReachesTheHealthyAgent runs CLI commands, reads and
// writes, with --addr naming an agent that hangs and a healthy one, until
// the hung one has been tried first several times (the client starts at a
// random address): every command succeeds.
func TestAddrHungAndHealthyReachesTheHealthyAgent(t *testing.T) {
	c := agenttest.New(t, 1)
	hung, conns := hungListener(t)
	addrs := hung + "," + c.Node(0).HTTPAddr()
	ctx := context.Background()
	// Writes with a body included; a write without one (deregister) is not
	// retried elsewhere once its headers went to the hung agent (it may
	// have been applied), so it is left out.
	cmds := [][]string{
		{"register", "web", "web-1", "--address", "127.0.0.1", "--port", "8080"},
		{"status"}, {"members"}, {"discover", "web"},
	}
	for i := 0; conns.Load() < 3; i++ {
		if i == 60 {
			t.Fatalf("the hung agent was tried first %d times in 60 commands", conns.Load())
		}
		args := cmds[i%len(cmds)]
		out, errOut, err := beacon(ctx, addrs, args...)
		if err != nil {
			t.Fatalf("beacon --addr %s %s: %v\n%s%s", addrs, strings.Join(args, " "), err, out, errOut)
		}
	}
}

// TestAddrNamesEveryAgentTriedWhenNoneAnswers checks the error of a command
// no agent answered.
func TestAddrNamesEveryAgentTriedWhenNoneAnswers(t *testing.T) {
	hung, _ := hungListener(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close() // refused from now on
	_, _, err := beacon(context.Background(), hung+","+deadAddr, "--attempt-timeout", "200ms", "status")
	if err == nil || !strings.Contains(err.Error(), hung) || !strings.Contains(err.Error(), deadAddr) {
		t.Fatalf("got %v, want an error naming %s and %s", err, hung, deadAddr)
	}
}
