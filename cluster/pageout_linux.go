package cluster

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pageOutFile asks the kernel to reclaim this process's resident pages of
// every mapping of the file at path (madvise MADV_PAGEOUT), and returns
// the bytes of mapping advised. path must be as /proc/self/maps shows it:
// absolute, symbolic links resolved.
//
// MADV_PAGEOUT never loses data, which is what makes it safe beside a
// bolt that may remap its file at any moment (raft-boltdb does not expose
// bolt's remap lock): clean file pages are dropped and read again on the
// next access, dirty ones written back first, anonymous ones swapped out
// or, without swap, left alone. So if the range read from /proc/self/maps
// was unmapped and something else mapped there before the madvise, that
// mapping loses nothing either. (MADV_DONTNEED would zero an anonymous
// mapping that took the address.) A kernel before 5.4 answers EINVAL.
func pageOutFile(path string) (int64, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var advised int64
	for line := range bytes.Lines(maps) {
		start, end, ok := mappingOf(bytes.TrimSuffix(line, []byte{'\n'}), path)
		if !ok {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT); errno != 0 {
			return advised, fmt.Errorf("madvise(MADV_PAGEOUT) %s: %w", path, errno)
		}
		advised += int64(end - start)
	}
	return advised, nil
}

// mappingOf parses one line of /proc/self/maps ("start-end perms offset
// dev inode   path") and reports the mapping's range if it maps path.
func mappingOf(line []byte, path string) (start, end uintptr, ok bool) {
	fields := line
	var f [5][]byte
	for i := range f {
		fields = bytes.TrimLeft(fields, " ")
		j := bytes.IndexByte(fields, ' ')
		if j < 0 {
			return 0, 0, false // no path: an anonymous mapping
		}
		f[i], fields = fields[:j], fields[j:]
	}
	if string(bytes.TrimLeft(fields, " ")) != path {
		return 0, 0, false
	}
	lo, hi, found := bytes.Cut(f[0], []byte{'-'})
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(string(lo), 16, 64)
	e, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
