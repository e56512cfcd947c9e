package connlimit

import (
	"errors"
	"net"
	"syscall"
)

// The raw loop shared by the fast paths (lb/fastraw_linux.go,
// api/fastraw_linux.go) serves a connection's requests inside one
// syscall.RawConn.Read call, reading the socket with ReadNow.
//
// Why: Go's read tries the socket before it waits, so a server that reads
// the next request right after answering the last one pays a read that
// finds nothing, one system call per request. Waiting first is safe only
// when no readiness can be missed, and the poller forgets an earlier one
// each time a read or a wait starts (it resets the descriptor's state).
// Inside one RawConn.Read call it forgets nothing: the function it runs
// reads what is there, serves the requests that came whole, and after an
// answer goes back to waiting without a read; a request sent meanwhile has
// raised the readiness the wait then finds.
//
// Inside the loop the connection's read lock is held: nothing else may
// read it, and Close (which waits for the loop's call to return) must not
// be called from inside it, nor while holding a lock the loop takes.

// ErrWouldBlock is ReadNow's "nothing to read yet".
var ErrWouldBlock = errors.New("connlimit: would block")

// RawConn returns nc's raw connection, or nil when it has none (not a
// socket, a TLS connection, a platform without the raw loop). It looks
// through this package's own wrapper (Wrap's connections), which changes
// nothing of what is read; other wrappers may, so they have none.
func RawConn(nc net.Conn) syscall.RawConn {
	if !rawLoopSupported {
		return nil
	}
	if c, ok := nc.(*conn); ok {
		nc = c.Conn
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
