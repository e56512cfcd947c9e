package cluster

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestJournalTakesStoresAgainOnceTheFileSystemHasSpace: a journal write the
// file system refuses for want of space (here a file size limit, EFBIG, as
// `ulimit -f` sets; a full disk's ENOSPC is handled alike) fails that store
// alone: once the space is there the next store succeeds, at the same
// offset, and everything stored is in the log after a crash. Before, the
// refusal was latched like a failed fsync and every later store failed
// until a restart: a three-node cluster whose two followers' disks had
// filled took no write after the disks were emptied.
func TestJournalTakesStoresAgainOnceTheFileSystemHasSpace(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour) // no flush into raft.db during the test
	store(t, j, run(1, 2, 1, "x"))

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	// The journal file may grow by 10 bytes: the next record does not fit.
	// The limit is the process's, so it is held only around the one store
	// below; no test of this package runs in parallel (none calls
	// t.Parallel), and Go ignores the SIGXFSZ it raises.
	j.fileMu.Lock()
	limit := uint64(j.sizes[j.active]) + 10
	j.fileMu.Unlock()
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	err := j.StoreLogs(run(3, 4, 1, "x"))
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("a store past the file size limit: no error")
	}
	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("a store past the file size limit: %v, want EFBIG", err)
	}
	if last, _ := j.LastIndex(); last != 2 {
		t.Fatalf("last index %d after the refused store, want 2", last)
	}

	store(t, j, run(3, 4, 1, "x"))
	store(t, j, run(5, 5, 1, "x"))
	wantLog(t, j, run(1, 5, 1, "x"))
	d.crash(j)
	j = d.open(time.Hour)
	wantLog(t, j, run(1, 5, 1, "x"))
}
