package lb

import (
	"os"
	"syscall"

	"github.com/beaconhq/beacon/connlimit"
)

// runWatchDup is runWatch for a connection in the raw loop, which holds
// the connection's read lock: it waits on a copy of the socket (dup) that
// it registers with the poller, and it peeks instead of reading, so the
// client's next bytes stay where the loop reads them. The copy is made
// only for a request that runs long (watchAfter); it costs a few system
// calls then.
func (c *fastConn) runWatchDup(done chan struct{}) {
	defer close(done)
	w := &c.watch
	w.mu.Lock()
	if w.state.Load() != watchRunning {
		w.mu.Unlock()
		return
	}
	f := c.dupSocket()
	if f == nil {
		w.mu.Unlock()
		return
	}
	w.file = f
	w.mu.Unlock()
	c.s.dupWaits.Add(1)
	gone := false
	if rc, err := f.SyscallConn(); err == nil {
		var b [1]byte
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				switch err {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false
				}
				// EOF or an error: the client left. A byte: the client
				// is there and has sent its next request.
				gone = err != nil || n == 0
				if !gone {
					c.s.dupSawNext.Add(1)
				}
				return true
			}
		})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.file = nil
	f.Close()
	if gone {
		c.watchSawGone()
	}
}

// dupSocket returns a copy of the connection's socket, non-blocking and
// registered with the poller like the original, or nil.
func (c *fastConn) dupSocket() *os.File {
	nfd := -1
	rc := connlimit.RawConn(c.nc)
	if rc == nil {
		return nil
	}
	err := rc.Control(func(fd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e == 0 {
			nfd = int(r)
		}
	})
	if err != nil || nfd < 0 {
		return nil
	}
	return os.NewFile(uintptr(nfd), "client")
}
