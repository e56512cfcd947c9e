//go:build unix

package lb

import (
	"net"
	"syscall"
)

// connAlive looks, without blocking, whether the instance has closed an idle
// connection (or sent something unasked on it): either makes it unusable.
func connAlive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var b [1]byte
	// Control, not Read: the peek never waits (MSG_DONTWAIT), so it needs
	// neither the poller's state nor a deadline check; this runs on every
	// reuse of a pooled connection.
	err = rc.Control(func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Only EAGAIN is the healthy idle connection: no error is either
		// the peer's FIN or data nobody asked for.
		alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	})
	return err == nil && alive
}
