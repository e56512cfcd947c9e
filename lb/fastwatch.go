package lb

import (
	"sync"
	"sync/atomic"
	"time"
)

// clientReader is what the fast path's bufio.Reader reads: the client
// connection, after a byte the watch read, if any.
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
	return r.c.nc.Read(p)
}

// clientWatch notices a client that leaves while its request waits on an
// instance, as net/http's server does with a read in the background from
// the start of every request. Here the watch starts only once a request
// has taken watchAfter (a quick answer pays nothing): a goroutine reads one
// byte of the client connection. EOF or an error means the client is gone:
// the instance connection is cut and the request ends, not counted against
// the instance. A byte is the start of the client's next request, kept for
// the reader. stopWatch ends the watch before the connection is read again.
type clientWatch struct {
	timer *time.Timer
	mu    sync.Mutex
	state int
	done  chan struct{}
	gone  atomic.Bool
}

const (
	watchIdle = iota
	watchArmed
	watchRunning
	watchStopping
)

// watchAfter is how long a request runs before the balancer watches its
// client.
const watchAfter = 50 * time.Millisecond

func (c *fastConn) startWatch() {
	w := &c.watch
	w.mu.Lock()
	w.state = watchArmed
	w.gone.Store(false)
	w.mu.Unlock()
	if w.timer == nil {
		w.timer = time.AfterFunc(watchAfter, c.runWatch)
	} else {
		w.timer.Reset(watchAfter)
	}
}

func (c *fastConn) runWatch() {
	w := &c.watch
	w.mu.Lock()
	if w.state != watchArmed {
		w.mu.Unlock()
		return
	}
	w.state = watchRunning
	w.done = make(chan struct{})
	_ = c.nc.SetReadDeadline(time.Time{})
	w.mu.Unlock()
	n, err := c.nc.Read(c.cr.buf[:])
	w.mu.Lock()
	defer w.mu.Unlock()
	defer close(w.done)
	if n == 1 {
		c.cr.pending = c.cr.buf[:1]
		return
	}
	if err != nil && w.state == watchRunning {
		w.gone.Store(true)
		c.mu.Lock()
		if c.up != nil {
			c.up.Close()
		}
		c.mu.Unlock()
	}
}

// stopWatch ends the watch (waiting for its read to stop, if it started).
func (c *fastConn) stopWatch() {
	w := &c.watch
	w.timer.Stop()
	w.mu.Lock()
	if w.state != watchRunning {
		w.state = watchIdle
		w.mu.Unlock()
		return
	}
	w.state = watchStopping
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	done := w.done
	w.mu.Unlock()
	<-done
	w.mu.Lock()
	w.state = watchIdle
	w.mu.Unlock()
}
