package api

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerGone reports whether the client at the far end of c has closed or
// reset its connection, from the kernel's TCP state: a connection a
// client closed is in CLOSE_WAIT (its FIN arrived), one it reset is
// CLOSED. Anything but ESTABLISHED counts as gone. It reads nothing from
// the connection, so bytes the client sent stay for the next request; a
// connection that is not TCP (a pipe in tests) is never gone.
func peerGone(c net.Conn) bool {
	tcp := tcpConnOf(c)
	if tcp == nil {
		return false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	if err := raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		gone = err != nil || info.State != unix.BPF_TCP_ESTABLISHED
	}); err != nil {
		return true // closed
	}
	return gone
}
