package cluster

import (
	"os"
	"syscall"
)

// fdatasync syncs f's data and the metadata needed to read it (its size),
// not its times: what a journal append needs, and cheaper than fsync.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
