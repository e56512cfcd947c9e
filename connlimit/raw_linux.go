package connlimit

import (
	"io"
	"net"
	"os"
	"syscall"
)

const rawLoopSupported = true

// ReadNow reads the socket fd without waiting: ErrWouldBlock when nothing
// is there yet, io.EOF at its end.
func ReadNow(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, ErrWouldBlock
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
