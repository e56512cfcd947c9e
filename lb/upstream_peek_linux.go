//go:build linux

package lb

import (
	"syscall"
	"unsafe"
)

// peekFD peeks at one byte of the socket fd without waiting and returns
// the error (nil: a byte or the end of the stream is there). The system
// call is made raw, without telling the scheduler: MSG_DONTWAIT makes it
// return at once, so it cannot hold the thread the way a blocking call
// does, and the bookkeeping of an ordinary system call (the P handed to
// sysmon's watch and taken back) is saved on every reuse of a pooled
// connection.
func peekFD(fd uintptr, b []byte) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
