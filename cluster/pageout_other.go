//go:build !linux

package cluster

import "errors"

// pageOutFile reclaims a file's mapped pages on Linux only.
func pageOutFile(string) (int64, error) {
	return 0, errors.ErrUnsupported
}
