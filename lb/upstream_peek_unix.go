//go:build unix && !linux

package lb

import "syscall"

// peekFD peeks at one byte of the socket fd without waiting and returns
// the error (nil: a byte or the end of the stream is there).
func peekFD(fd uintptr, b []byte) error {
	_, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err
}
