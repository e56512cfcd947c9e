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

	"github.com/hashicorp/raft"
)

// commitMark keeps, in <data-dir>/raft.commit, the highest log index this
// server's catalog had applied, so the server knows at its next start that
// the log up to there was committed. Raft does not persist its commit
// index: without the mark a server restarted while no leader is reachable
// restores its last Raft snapshot and applies nothing more until a leader
// tells it the commit index, so it answers reads (and `snapshot save
// --stale`) from that snapshot alone, an empty catalog if it never took
// one, although its log holds every committed write. With the mark, the
// server turns its last snapshot and its log up to the mark into a new
// Raft snapshot before Raft starts (catchUpToMark), and Raft restores that.
//
// raft's own Config.RestoreCommittedLogs (with raft.CommitTrackingLogStore)
// is not used: in raft 1.8.0 NewRaft applies the log up to the saved index
// and then reads configuration entries only after it, so a restarted
// server came up with an empty Raft configuration (no elections, no leave).
// A snapshot carries its configuration.
//
// Why a separate file, written without a sync, is safe: the catalog
// applies only committed entries, read from this server's own durable log,
// and a committed entry is never rewritten (only compaction behind a
// snapshot removes it), so the file never names an index the log does not
// durably hold as committed. A power loss may leave an older mark (the page
// was not written back), which only means less is applied before a leader
// is heard. The mark is 8 bytes and a CRC-32C, written at offset 0 after
// each batch the log stores and at close; a torn or foreign file reads as
// no mark.
type commitMark struct {
	f       *os.File
	applied func() uint64 // the catalog's applied index
	loaded  uint64        // the mark found at open

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

// get is the mark found at open.
func (m *commitMark) get() uint64 { return m.loaded }

// persist writes the catalog's applied index when it is higher than the
// last mark written. Called after the log has stored a batch and at close.
func (m *commitMark) persist() error {
	var idx uint64
	if m.applied != nil {
		idx = m.applied()
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

// catchUpToMark makes a Raft snapshot at mark when mark is past the latest
// snapshot: the latest snapshot (or an empty catalog) restored into a
// scratch FSM, the log's commands up to mark applied to it, and the
// configuration as of mark (the snapshot's, then each configuration entry
// up to mark). Raft then restores it at start, as it would any snapshot,
// and reads the configuration entries after it. Nothing is done when the
// log no longer holds every entry after the latest snapshot (it always
// does: compaction keeps trailing entries) or holds no configuration.
func catchUpToMark(mark uint64, scratch raft.FSM, logs raft.LogStore, snaps raft.SnapshotStore, trans raft.Transport) (uint64, error) {
	last, err := logs.LastIndex()
	if err != nil {
		return 0, err
	}
	mark = min(mark, last)
	var from, term, cfgIndex uint64
	var cfg raft.Configuration
	metas, err := snaps.List()
	if err != nil {
		return 0, err
	}
	if len(metas) > 0 {
		meta := metas[0]
		if mark <= meta.Index {
			return 0, nil
		}
		_, rc, err := snaps.Open(meta.ID)
		if err != nil {
			return 0, err
		}
		err = scratch.Restore(rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("restore snapshot %s: %w", meta.ID, err)
		}
		from, term, cfg, cfgIndex = meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex
	}
	if mark <= from {
		return 0, nil
	}
	if first, err := logs.FirstIndex(); err != nil || first == 0 || first > from+1 {
		return 0, err
	}
	for idx := from + 1; idx <= mark; idx++ {
		var e raft.Log
		if err := logs.GetLog(idx, &e); err != nil {
			return 0, fmt.Errorf("read log entry %d: %w", idx, err)
		}
		term = e.Term
		switch e.Type {
		case raft.LogCommand:
			scratch.Apply(&e)
		case raft.LogConfiguration:
			cfg, cfgIndex = raft.DecodeConfiguration(e.Data), idx
		}
	}
	if cfgIndex == 0 {
		return 0, nil
	}
	snap, err := scratch.Snapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Release()
	sink, err := snaps.Create(raft.SnapshotVersionMax, mark, term, cfg, cfgIndex, trans)
	if err != nil {
		return 0, err
	}
	// Persist closes the sink, or cancels it on an error.
	if err := snap.Persist(sink); err != nil {
		return 0, err
	}
	return mark, nil
}
