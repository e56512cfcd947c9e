package lb

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// clientReader is what the fast path's bufio.Reader reads: the client
// connection, after a byte the watch read, if any.
// Inside the raw loop (connlimit.Loop) it reads the socket without
// waiting.
type clientReader struct {
	c       *fastConn
	pending []byte
	buf     [1]byte
}

func (r *clientReader) Read(p []byte) (int, error) {
	if len(r.pending) > 0 && len(p) > 0 {
		p[0] = r.pending[0]
		r.pending = nil
		return 1, nil
	}
	return r.c.raw.Read(r.c.nc, p)
}

// clientWatch notices a client that leaves while its request waits on an
// instance, as net/http's server does with a read in the background from
// the start of every request. Here only requests that have run for
// watchAfter are watched (a quick answer pays two atomic stores): the
// server's scan (fastServer.scanWatches) starts a goroutine that reads one
// byte of the client connection (on Linux it peeks at a copy of the socket
// instead, runWatchDup, since the raw loop holds the connection's reads).
// EOF or an error means the client is gone:
// the instance connection is cut and the request ends, not counted against
// the instance. A byte is the start of the client's next request, kept for
// the reader. stopWatch ends the watch before the connection is read again.
type clientWatch struct {
	state atomic.Int32
	start atomic.Int64 // when the request began (UnixNano)
	gone  atomic.Bool
	mu    sync.Mutex // orders the watch's deadline changes with stopWatch's
	done  chan struct{}
	file  *os.File // runWatchDup's copy of the socket while it waits (under mu)
}

const (
	watchIdle = iota
	watchArmed
	watchRunning
	watchStopping
)

// watchAfter is how long a request runs before the balancer watches its
// client; watchScan how often the server looks.
const (
	watchAfter = 50 * time.Millisecond
	watchScan  = 25 * time.Millisecond
)

func (c *fastConn) startWatch() {
	w := &c.watch
	if w.gone.Load() {
		w.gone.Store(false)
	}
	w.start.Store(time.Now().UnixNano())
	w.state.Store(watchArmed)
}

// maybeWatch starts the watch of a request that has run long enough.
func (c *fastConn) maybeWatch(now int64) {
	w := &c.watch
	if w.state.Load() != watchArmed || now-w.start.Load() < int64(watchAfter) {
		return
	}
	w.done = make(chan struct{})
	if !w.state.CompareAndSwap(watchArmed, watchRunning) {
		return
	}
	if c.raw.On() {
		go c.runWatchDup(w.done)
		return
	}
	go c.runWatch(w.done)
}

func (c *fastConn) runWatch(done chan struct{}) {
	defer close(done)
	w := &c.watch
	w.mu.Lock()
	if w.state.Load() != watchRunning {
		w.mu.Unlock()
		return
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	w.mu.Unlock()
	n, err := c.nc.Read(c.cr.buf[:])
	w.mu.Lock()
	defer w.mu.Unlock()
	if n == 1 {
		c.cr.pending = c.cr.buf[:1]
		return
	}
	if err != nil {
		c.watchSawGone()
	}
}

// watchSawGone records, under the watch's mutex, that the client left
// while the watch ran: the instance connection is cut and the request
// ends.
func (c *fastConn) watchSawGone() {
	if c.watch.state.Load() != watchRunning {
		return
	}
	c.watch.gone.Store(true)
	c.mu.Lock()
	if c.up != nil {
		c.up.Close()
	}
	c.mu.Unlock()
}

// stopWatch ends the watch (waiting for its read to stop, if it started).
func (c *fastConn) stopWatch() {
	w := &c.watch
	if w.state.CompareAndSwap(watchArmed, watchIdle) {
		return
	}
	w.mu.Lock()
	w.state.Store(watchStopping)
	if c.raw.On() {
		// The watch waits on its own copy of the socket (runWatchDup),
		// if it has started.
		if w.file != nil {
			_ = w.file.SetReadDeadline(aLongTimeAgo)
		}
	} else {
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
	}
	done := w.done
	w.mu.Unlock()
	<-done
	w.state.Store(watchIdle)
}
