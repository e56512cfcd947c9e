package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestCallsToAPeerThatStoppedReadingEnd: a peer that stops reading its
// cluster connection (frozen) lets the kernel's buffers and then the
// connection's frame queue fill. Calls sent to it after that end with
// their own context (before 2026-12-08 they waited for room in the queue
// whatever their deadline said, for as long as the peer stayed frozen),
// and the connection itself is given up once a write has been stuck for
// rpcWriteTimeout (before, never: the writer waited on the socket).
func TestCallsToAPeerThatStoppedReadingEnd(t *testing.T) {
	rpcWriteTimeoutForTest.Store(int64(20 * time.Second))
	t.Cleanup(func() { rpcWriteTimeoutForTest.Store(0) })
	tn := newTestNodes(t, 3, nil)
	tn.waitForLeader(30 * time.Second)
	from, to := tn.nodes[0], tn.nodes[1]
	addr := to.ClusterAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := from.pool.call(ctx, addr, opStatus, nil, time.Second); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	cancel()
	conn := from.pool.client(addr).live()
	if conn == nil {
		t.Fatal("no live connection after the warm-up call")
	}
	tn.pause(1)

	// Big frames first, more than the sockets' buffers hold, then small
	// calls (which wait long for their answers) until the frame queue is
	// full: the writer is stuck on the socket.
	const unknownOp Op = 60
	big := make([]byte, 8<<20)
	var pending sync.WaitGroup
	longCtx, cancelLong := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelLong()
	launch := func(payload []byte) {
		pending.Add(1)
		go func() {
			defer pending.Done()
			_, _ = from.pool.call(longCtx, addr, unknownOp, payload, time.Second)
		}()
	}
	// 96 MiB: more than a loopback connection absorbs here (the
	// receiver's buffer up to tcp_rmem's 32 MiB, the sender's 4 MiB, one
	// read of the paused peer).
	for range 12 {
		launch(big)
	}
	for i := 0; len(conn.w.ch) < cap(conn.w.ch); i++ {
		if i >= 5000 {
			t.Fatalf("the frame queue holds %d of %d after %d calls", len(conn.w.ch), cap(conn.w.ch), i)
		}
		launch([]byte("x"))
		time.Sleep(time.Millisecond) // pacing the launches, not a wait for a condition
	}

	// Calls now find no room in the queue: each ends with its own
	// deadline, its frame never queued.
	var late sync.WaitGroup
	errs := make(chan error, 20)
	start := time.Now()
	for range 20 {
		late.Add(1)
		go func() {
			defer late.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := from.pool.call(ctx, addr, unknownOp, []byte("y"), time.Second)
			errs <- err
		}()
	}
	done := make(chan struct{})
	go func() { late.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("calls to a peer that stopped reading still wait after 2 minutes")
	}
	t.Logf("20 calls finding the queue full ended in %s; the queue holds %d", time.Since(start), len(conn.w.ch))
	select {
	case <-conn.broken:
		// Before the fix they ended only here: the stuck write's timeout
		// broke the connection and its queue was drained.
		t.Fatalf("the calls finding the queue full ended only once the connection was given up (after %s)", time.Since(start))
	default:
	}
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a call finding the queue full: %v, want its own deadline", err)
		}
	}
	// The stuck write gives the connection up.
	eventually(t, 60*time.Second, func() bool {
		select {
		case <-conn.broken:
			return true
		default:
			return false
		}
	}, "the connection to the frozen peer given up")
	cancelLong()
	pending.Wait() // every call waiting for an answer ends with the connection
}
