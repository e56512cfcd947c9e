//go:build !linux

package connlimit

const rawLoopSupported = false

// ReadNow is Linux's; RawConn returns nil elsewhere, so it is not called.
func ReadNow(int, []byte) (int, error) { return 0, ErrWouldBlock }
