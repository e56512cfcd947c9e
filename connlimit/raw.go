package connlimit

import (
	"bufio"
	"errors"
	"net"
	"syscall"
)

// Loop is the raw loop of the fast paths (lb/fastraw_linux.go,
// api/fastraw.go): it serves a connection's requests inside one
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
type Loop struct {
	rc       syscall.RawConn // nil: no raw loop for this connection
	step     func(fd uintptr) bool
	s        LoopServer
	br       *bufio.Reader
	fd       int // the socket while the loop runs; -1 otherwise
	out      LoopEnd
	headWait bool // LoopHeadWait was called for the head being read
}

// LoopEnd says why the loop returned.
type LoopEnd int

const (
	LoopClose    LoopEnd = iota // close the connection (an error, a timeout, shutdown)
	LoopSlow                    // a request is buffered that the ordinary path serves
	LoopAnswered                // LoopServe's answer ended the connection's loop (the server says what next)
)

// LoopServer is what a fast path gives the loop. Its methods run inside the
// loop: they must not read the connection but through the reader the loop
// was run with, nor close it.
type LoopServer interface {
	// LoopIdle readies the wait for the next request: the answers still
	// buffered go out, the connection counts as idle, its idle deadline
	// is set. false: close.
	LoopIdle() bool
	// LoopSkip drops what may come before a head (the CR LF some clients
	// send after a body) and reports whether nothing is left to read.
	LoopSkip() bool
	// LoopActive marks the connection busy: a request's bytes are there.
	// false: close.
	LoopActive() bool
	// LoopHeadWait readies the wait for the rest of a head: its read
	// header deadline. false: close.
	LoopHeadWait() bool
	// LoopServe serves the request of head (whole in the reader, not
	// consumed) if it can without waiting on the client: go on (true), or
	// the loop ends with end (false), leaving the request in the reader
	// when end is LoopSlow.
	LoopServe(head []byte) (end LoopEnd, ok bool)
}

// ErrWouldBlock is ReadNow's "nothing to read yet".
var ErrWouldBlock = errors.New("connlimit: would block")

// Init readies l for nc, served by s. Where nc has no raw connection (not
// a socket, a TLS connection, a platform without the raw loop), l stays
// off and every request takes the ordinary path.
func (l *Loop) Init(nc net.Conn, s LoopServer) {
	l.fd = -1
	if l.rc = RawConn(nc); l.rc != nil {
		l.s = s
		l.step = func(fd uintptr) bool { return l.run(int(fd)) }
	}
}

// On reports whether the connection has a raw loop.
func (l *Loop) On() bool { return l.rc != nil }

// Read reads p from the connection: inside the loop from the socket
// without waiting, otherwise from nc. The connection's bufio.Reader reads
// through it.
func (l *Loop) Read(nc net.Conn, p []byte) (int, error) {
	if l.fd >= 0 {
		return ReadNow(l.fd, p)
	}
	return nc.Read(p)
}

// Run serves requests from br, which reads through l.Read, until one needs
// the ordinary path or the loop ends.
func (l *Loop) Run(br *bufio.Reader) LoopEnd {
	l.br, l.out, l.headWait = br, LoopClose, false
	err := l.rc.Read(l.step)
	l.fd = -1
	if err != nil {
		return LoopClose // the read deadline passed, or the connection was closed
	}
	return l.out
}

// run is the loop's body, run by RawConn.Read with the socket: false waits
// for the socket to be readable (then run runs again), true ends the loop
// with l.out.
func (l *Loop) run(fd int) bool {
	l.fd = fd
	answered := false
	for {
		if l.br.Buffered() == 0 {
			if !answered {
				// Woken (or just started): read what is there.
				if _, err := l.br.Peek(1); err != nil && !errors.Is(err, ErrWouldBlock) {
					return l.end(LoopClose)
				}
			}
			// After an answer no read is tried: a request sent since the
			// last read has made the socket ready, and the wait returns
			// at once.
			if l.br.Buffered() == 0 {
				if !l.s.LoopIdle() {
					return l.end(LoopClose)
				}
				return false
			}
		}
		answered = false
		if l.s.LoopSkip() {
			continue
		}
		if !l.s.LoopActive() {
			return l.end(LoopClose)
		}
		head, err := PeekHead(l.br, nil)
		if errors.Is(err, ErrWouldBlock) {
			// The rest of the head is due within the read header timeout
			// of its first bytes.
			if !l.headWait {
				l.headWait = true
				if !l.s.LoopHeadWait() {
					return l.end(LoopClose)
				}
			}
			return false
		}
		l.headWait = false
		switch {
		case errors.Is(err, ErrNotPlain):
			return l.end(LoopSlow)
		case err != nil:
			return l.end(LoopClose)
		}
		if end, ok := l.s.LoopServe(head); !ok {
			return l.end(end)
		}
		answered = true
	}
}

func (l *Loop) end(e LoopEnd) bool {
	l.out = e
	l.fd = -1
	return true
}

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
