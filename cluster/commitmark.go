package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// commitMark keeps, in <data-dir>/raft.commit, the highest log index this
// server knows was committed: what Raft staged with its last StoreLogs
// (raft.CommitTrackingLogStore) or what the catalog had applied, whichever
// is higher. Raft does not persist its commit index. Without this file a
// server restarted while no leader is reachable restores its last snapshot
// and applies nothing more until a leader tells it the commit index, so
// it answers reads (and `snapshot save --stale`) from that snapshot alone,
// an empty catalog if it never took one, although its log holds every
// committed write. With raft.Config.RestoreCommittedLogs it applies the
// entries up to the mark at start, before any leader is heard.
//
// Why a separate file, written without a sync, is safe: the mark is only
// ever written after the entries up to it are durable in the log (a
// StoreLogs that has returned, or entries the catalog applied, which Raft
// read from the log), and a committed entry is never rewritten or removed
// except by compaction behind a snapshot. So a mark is never higher than
// what the log durably holds as committed; after a power loss the file may
// hold an older mark (the page cache was not written back), which only
// means less is applied before a leader is heard, never something
// uncommitted. The mark is 8 bytes and a CRC-32C, written at offset 0; a
// torn or foreign file reads as no mark. Raft caps the mark at the log's
// last index.
type commitMark struct {
	f       *os.File
	applied func() uint64 // the catalog's applied index
	loaded  uint64        // the mark found at open

	staged atomic.Uint64 // from raft, before its StoreLogs

	mu      sync.Mutex // written, buf, f: StoreLogs and Close
	written uint64
	buf     [12]byte
	closed  bool
}

const commitMarkName = "raft.commit"

var errCommitMarkClosed = errors.New("cluster: commit mark closed")

// openCommitMark opens (or creates) dir's commit mark and reads it.
func openCommitMark(dir string, applied func() uint64) (*commitMark, error) {
	f, err := os.OpenFile(filepath.Join(dir, commitMarkName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster: open commit mark: %w", err)
	}
	m := &commitMark{f: f, applied: applied}
	var b [12]byte
	if _, err := f.ReadAt(b[:], 0); err == nil {
		m.loaded = decodeCommitMark(b)
	} else if !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("cluster: read commit mark: %w", err)
	}
	m.written = m.loaded
	return m, nil
}

func decodeCommitMark(b [12]byte) uint64 {
	if crc32.Checksum(b[:8], journalCRC) != binary.LittleEndian.Uint32(b[8:]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:8])
}

// stage notes a commit index Raft is about to store with its next entries.
func (m *commitMark) stage(idx uint64) {
	for {
		old := m.staged.Load()
		if idx <= old || m.staged.CompareAndSwap(old, idx) {
			return
		}
	}
}

// get is the mark found at open.
func (m *commitMark) get() uint64 { return m.loaded }

// persist writes the highest committed index known, when it is higher
// than the last one written. Called after the log has stored entries
// (they are durable) and at close.
func (m *commitMark) persist() error {
	idx := m.staged.Load()
	if m.applied != nil {
		idx = max(idx, m.applied())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errCommitMarkClosed
	}
	if idx <= m.written {
		return nil
	}
	binary.LittleEndian.PutUint64(m.buf[:8], idx)
	binary.LittleEndian.PutUint32(m.buf[8:], crc32.Checksum(m.buf[:8], journalCRC))
	if _, err := m.f.WriteAt(m.buf[:], 0); err != nil {
		return fmt.Errorf("cluster: write commit mark: %w", err)
	}
	m.written = idx
	return nil
}

// Close writes the last mark and closes the file. Raft must have shut
// down (the catalog's applied index is final).
func (m *commitMark) Close() error {
	err := m.persist()
	if errors.Is(err, errCommitMarkClosed) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	return err
}
