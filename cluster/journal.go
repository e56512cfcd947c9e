package cluster

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// journalStore puts a write-ahead journal in front of the raft-boltdb log
// store, so that storing entries costs one fdatasync instead of a bolt
// commit's two.
//
// A bolt commit writes its dirty pages, syncs, writes the meta page and
// syncs again: two fdatasyncs in series for every StoreLogs. Raft waits for
// StoreLogs on the leader before it sends the entries to the followers, and
// on each follower before it answers, so a lone writer waited for four
// fdatasyncs in series. Here StoreLogs appends its entries as one record to
// a journal file, syncs it once, and returns; the entries are durable from
// then on. A background flush stores what the journal holds into bolt in
// one commit (two fdatasyncs for every entry stored in the interval, not
// for every StoreLogs), after journalFlushDelay, and then empties that
// journal file.
//
// Two files take turns: raft.journal.0 and raft.journal.1. StoreLogs
// appends to the active one; a flush makes the other one active (its
// next turn writes from offset 0, over what its last turn left), and
// stores the first one's entries into bolt. Every record carries the
// generation of its file's turn, the turn's random nonce and a CRC; on
// start the records of both files are stored into bolt again in
// generation order, each file up to its first torn record or the first of
// another turn, and the files are emptied. Storing an entry bolt already holds again is harmless: it holds
// the same bytes (below).
//
// Why replaying is always right: raft changes an entry it has stored only
// through DeleteRange (a follower's conflicting suffix, the compaction
// after a snapshot). DeleteRange first stores everything pending into bolt
// and truncates both journal files durably, so no record older than the
// newest DeleteRange survives a crash. Every surviving record therefore
// holds exactly what bolt holds, or should hold, at its index. A StoreLogs
// that does not simply append after the last entry (it happens after a
// snapshot was installed, or never) goes the same way: pending entries to
// bolt, then straight into bolt with its own commit.
//
// Entries are readable at once: those not in bolt yet are served from
// memory (pending, and flushing while a flush runs).
//
// Errors: a journal write or sync that fails makes every later store fail
// (after a failed fsync the kernel may have dropped the data: Raft must
// not count it stored), except a write the file system refused for want of
// space (noSpace), which fails that store alone. A flush that bolt refuses (a full disk) leaves its
// turn in memory and in its file, which is not written over; the flusher
// tries again every journalRetry, stores keep going to the active file
// (until journalFlushBytes are pending: then they wait for a flush, and
// fail with it), and the store recovers when bolt does.
type journalStore struct {
	bolt  raft.LogStore
	dir   string
	delay time.Duration

	flushMu sync.Mutex // one flush, drain or direct store at a time; taken before fileMu

	fileMu sync.Mutex // the files: appends and turns; taken before mu
	files  [2]*os.File
	sizes  [2]int64 // what the current turn wrote
	high   [2]int64 // the files' sizes
	active int
	gen    uint64 // generation of the active file's records
	nonce  uint64 // the active turn's random nonce
	buf    []byte

	mu            sync.RWMutex
	pending       []*raft.Log // in the active file, not in bolt yet; contiguous
	pendingBytes  int
	flushing      []*raft.Log // being stored into bolt (or refused by it); contiguous, just before pending
	flushingBytes int
	last          uint64 // the log's last index
	err           error  // latched: a journal or bolt write failed; the store is unusable
	refusedWrite  bool   // the last journal write was refused for want of space (logged once)

	flushFile int  // the file whose turn flushing holds (flushMu)
	failing   bool // the last flush failed (flushMu): logged once
	logger    hclog.Logger

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

const (
	// journalFlushDelay is how long the journal gathers entries before a
	// flush stores them into bolt: the longer, the fewer bolt commits (and
	// fdatasyncs) per entry, and the more entries a crash leaves to
	// replay. 10, 30 and 100 ms measured alike; 0 and 2 ms cost more CPU
	// per write (docs/benchmarks.md).
	journalFlushDelay = 30 * time.Millisecond
	// journalFlushBytes: past this much pending entry data a flush starts
	// at once.
	journalFlushBytes = 8 << 20
	// journalKeepBytes: a journal file larger than this after its turn is
	// truncated; a smaller one is written over by its next turn.
	journalKeepBytes = 4 << 20
	// journalRetry is how often a flush raft.db refused is tried again.
	journalRetry = time.Second
	// journalMaxRecord bounds one record (one StoreLogs call): hashicorp/raft
	// stores at most MaxAppendEntries entries at once, each at most a
	// group (256 KiB) or a client's command.
	journalMaxRecord = 1 << 30

	journalName = "raft.journal"
	// A record: payload length (4), CRC-32C of generation, nonce and
	// payload (4), generation (8), nonce (8), then the payload: entry count
	// (4) and the entries. The nonce is random for each turn: a record
	// left behind by an earlier turn, or one forged inside the data of
	// an old record (client bytes), cannot pass for the current turn's.
	journalHeader = 24
)

var journalCRC = crc32.MakeTable(crc32.Castagnoli)

// errJournalClosed is returned by a journal store used after Close.
var errJournalClosed = errors.New("cluster: raft journal closed")

// openJournal replays any journal files in dir into bolt, empties them and,
// when enabled, returns a journalStore in front of bolt. When not enabled
// it returns bolt itself (after the replay: entries a journal holds from an
// earlier run are never left behind).
func openJournal(dir string, bolt raft.LogStore, enabled bool, delay time.Duration, logger hclog.Logger) (raft.LogStore, *journalStore, error) {
	var files [2]*os.File
	created := false
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("%s.%d", journalName, i))
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if !enabled {
				continue
			}
			created = true
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("cluster: open raft journal: %w", err)
		}
		files[i] = f
	}
	gen, replayed, err := replayJournal(files, bolt)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	if replayed > 0 && logger != nil {
		logger.Info("stored the raft journal's entries into raft.db (the last run did not stop cleanly)", "entries", replayed)
	}
	if created {
		if err := syncDir(dir); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	if !enabled {
		closeAll()
		for i := range files {
			if files[i] != nil {
				_ = os.Remove(files[i].Name())
			}
		}
		return bolt, nil, nil
	}
	last, err := bolt.LastIndex()
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("cluster: raft journal: %w", err)
	}
	if delay <= 0 {
		delay = journalFlushDelay
	}
	j := &journalStore{
		bolt: bolt, dir: dir, delay: delay, files: files, gen: gen + 1, nonce: newNonce(), last: last, logger: logger,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go j.flusher()
	return j, j, nil
}

// replayJournal stores the records of files into bolt, in generation
// order, empties the files durably and returns the highest generation seen
// and how many entries it stored.
func replayJournal(files [2]*os.File, bolt raft.LogStore) (top uint64, entries int, err error) {
	type turn struct {
		gen  uint64
		recs [][]*raft.Log
	}
	var turns []turn
	for _, f := range files {
		if f == nil {
			continue
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			return 0, 0, fmt.Errorf("cluster: read raft journal: %w", err)
		}
		gen, recs := decodeJournal(b)
		if len(recs) > 0 {
			turns = append(turns, turn{gen, recs})
		}
	}
	sort.Slice(turns, func(a, b int) bool { return turns[a].gen < turns[b].gen })
	for _, t := range turns {
		// A turn's records in one bolt commit (two fdatasyncs), not one each.
		var all []*raft.Log
		for _, rec := range t.recs {
			all = append(all, rec...)
		}
		if err := bolt.StoreLogs(all); err != nil {
			return 0, 0, fmt.Errorf("cluster: replay raft journal into raft.db: %w", err)
		}
		entries += len(all)
		top = max(top, t.gen)
	}
	for _, f := range files {
		if f == nil {
			continue
		}
		if err := truncateSync(f); err != nil {
			return 0, 0, err
		}
	}
	return top, entries, nil
}

// decodeJournal returns the records at the start of b that are whole, pass
// their CRC and belong to the generation of the first one: what follows a
// torn record, and what an earlier turn of the file left behind the
// current one's records, is not the journal's.
func decodeJournal(b []byte) (gen uint64, recs [][]*raft.Log) {
	var nonce uint64
	for len(b) >= journalHeader {
		n := binary.LittleEndian.Uint32(b[0:4])
		sum := binary.LittleEndian.Uint32(b[4:8])
		g := binary.LittleEndian.Uint64(b[8:16])
		nc := binary.LittleEndian.Uint64(b[16:24])
		if n > journalMaxRecord || uint64(len(b)-journalHeader) < uint64(n) {
			break
		}
		if crc32.Checksum(b[8:journalHeader+int(n)], journalCRC) != sum {
			break
		}
		if len(recs) > 0 && (g != gen || nc != nonce) {
			break
		}
		logs, ok := decodeEntries(b[journalHeader : journalHeader+int(n)])
		if !ok {
			break
		}
		gen, nonce = g, nc
		recs = append(recs, logs)
		b = b[journalHeader+int(n):]
	}
	return gen, recs
}

// sealRecord fills in the header of rec (journalHeader bytes, then the
// payload): its length, generation, nonce and CRC.
func sealRecord(rec []byte, gen, nonce uint64) {
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-journalHeader))
	binary.LittleEndian.PutUint64(rec[8:], gen)
	binary.LittleEndian.PutUint64(rec[16:], nonce)
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], journalCRC))
}

// newNonce is a turn's nonce: random, never shown outside the files.
func newNonce() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return binary.LittleEndian.Uint64(b[:])
}

// An entry: index (8), term (8), type (1), appended-at Unix nanoseconds or
// 0 (8), data length (4), data, extensions length (4), extensions.
const entryHeader = 8 + 8 + 1 + 8 + 4

func appendEntries(dst []byte, logs []*raft.Log) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(logs)))
	for _, l := range logs {
		dst = binary.LittleEndian.AppendUint64(dst, l.Index)
		dst = binary.LittleEndian.AppendUint64(dst, l.Term)
		dst = append(dst, byte(l.Type))
		var at int64
		if !l.AppendedAt.IsZero() {
			at = l.AppendedAt.UnixNano()
		}
		dst = binary.LittleEndian.AppendUint64(dst, uint64(at))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(l.Data)))
		dst = append(dst, l.Data...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(l.Extensions)))
		dst = append(dst, l.Extensions...)
	}
	return dst
}

func decodeEntries(b []byte) ([]*raft.Log, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if n == 0 || uint64(n) > uint64(len(b))/entryHeader {
		return nil, false
	}
	logs := make([]*raft.Log, 0, n)
	for range n {
		if len(b) < entryHeader {
			return nil, false
		}
		l := &raft.Log{
			Index: binary.LittleEndian.Uint64(b[0:]),
			Term:  binary.LittleEndian.Uint64(b[8:]),
			Type:  raft.LogType(b[16]),
		}
		if at := int64(binary.LittleEndian.Uint64(b[17:])); at != 0 {
			l.AppendedAt = time.Unix(0, at)
		}
		dl := binary.LittleEndian.Uint32(b[25:])
		b = b[entryHeader:]
		if uint64(dl) > uint64(len(b)) {
			return nil, false
		}
		l.Data = b[:dl:dl]
		b = b[dl:]
		if len(b) < 4 {
			return nil, false
		}
		el := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(el) > uint64(len(b)) {
			return nil, false
		}
		if el > 0 {
			l.Extensions = b[:el:el]
		}
		b = b[el:]
		logs = append(logs, l)
	}
	if len(b) != 0 {
		return nil, false
	}
	return logs, true
}

// appends reports whether logs continue the log after last, one index
// after another (an empty log takes any start).
func appends(logs []*raft.Log, last uint64) bool {
	if last != 0 && logs[0].Index != last+1 {
		return false
	}
	for i := 1; i < len(logs); i++ {
		if logs[i].Index != logs[i-1].Index+1 {
			return false
		}
	}
	return true
}

func (j *journalStore) StoreLog(l *raft.Log) error { return j.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends logs to the journal and syncs it; they are durable
// when it returns. Logs that do not simply append go into bolt directly.
// hashicorp/raft stores from one goroutine only (its main loop): the check
// that logs append and the append are not one atomic step.
func (j *journalStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	j.mu.RLock()
	full := j.pendingBytes+j.flushingBytes >= journalFlushBytes
	j.mu.RUnlock()
	if full {
		// Past the bound a store waits for a flush, and fails with it
		// without taking anything: memory stays bounded while raft.db
		// refuses flushes.
		if err := j.flush(); err != nil {
			return err
		}
	}
	j.fileMu.Lock()
	j.mu.RLock()
	err, last := j.err, j.last
	j.mu.RUnlock()
	if err != nil {
		j.fileMu.Unlock()
		return err
	}
	if !appends(logs, last) {
		j.fileMu.Unlock()
		return j.storeDirect(logs)
	}
	j.buf = appendEntries(append(j.buf[:0], make([]byte, journalHeader)...), logs) // the header is filled in below
	rec := j.buf
	if len(rec)-journalHeader > journalMaxRecord {
		j.buf = nil
		j.fileMu.Unlock()
		return j.storeDirect(logs)
	}
	sealRecord(rec, j.gen, j.nonce)
	f := j.files[j.active]
	if _, err := f.WriteAt(rec, j.sizes[j.active]); err != nil {
		j.fileMu.Unlock()
		err = fmt.Errorf("cluster: write raft journal: %w", err)
		if noSpace(err) {
			// The file system refused the space (a full disk, a quota, a
			// file size limit): nothing before this record changed, and
			// the next store writes over what part of it went in, at the
			// same offset, then syncs. Failing this store alone lets the
			// server take stores again once space is freed; latched, it
			// refused every store until a restart, and a cluster whose
			// followers' disks had filled stayed without writes after
			// they were emptied.
			j.noteRefusedWrite(err)
			return err
		}
		return j.fail(err)
	}
	if err := fdatasync(f); err != nil {
		j.fileMu.Unlock()
		return j.fail(fmt.Errorf("cluster: sync raft journal: %w", err))
	}
	j.sizes[j.active] += int64(len(rec))
	j.high[j.active] = max(j.high[j.active], j.sizes[j.active])
	if cap(j.buf) > 1<<20 {
		j.buf = nil // do not keep a large record's buffer
	}
	j.mu.Lock()
	size := 0
	for _, l := range logs {
		cp := *l // the leader's logs are fields of its apply futures
		j.pending = append(j.pending, &cp)
		size += len(l.Data) + len(l.Extensions)
	}
	j.pendingBytes += size
	j.last = logs[len(logs)-1].Index
	refused := j.refusedWrite
	j.refusedWrite = false
	j.mu.Unlock()
	j.fileMu.Unlock()
	if refused && j.logger != nil {
		j.logger.Info("raft journal takes writes again")
	}
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return nil
}

// storeDirect stores logs into bolt itself, after everything pending.
func (j *journalStore) storeDirect(logs []*raft.Log) error {
	return j.drained(func() error { return j.bolt.StoreLogs(logs) })
}

// drained runs change on bolt with the journal drained (everything
// pending in bolt, both files emptied durably) and no append or flush
// running, then reads the log's last index again.
func (j *journalStore) drained(change func() error) error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	j.fileMu.Lock()
	defer j.fileMu.Unlock()
	if err := j.drainLocked(); err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	return j.refreshLastLocked()
}

func (j *journalStore) refreshLastLocked() error {
	last, err := j.bolt.LastIndex()
	if err != nil {
		return err
	}
	j.mu.Lock()
	j.last = last
	j.mu.Unlock()
	return nil
}

// noteRefusedWrite logs the first of a run of journal writes the file
// system refused for want of space.
func (j *journalStore) noteRefusedWrite(err error) {
	j.mu.Lock()
	first := !j.refusedWrite
	j.refusedWrite = true
	j.mu.Unlock()
	if first && j.logger != nil {
		j.logger.Error("raft journal: the file system refused a write; this server stores no raft entries until it has space", "error", err)
	}
}

// noSpace reports whether err is a write the file system refused for want
// of space: ENOSPC, EDQUOT, or EFBIG (a file size limit, ulimit -f).
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

func (j *journalStore) fail(err error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
	}
	return j.err
}

// flusher runs flushes: one journalFlushDelay after entries arrive, and
// again every journalRetry while a flush fails.
func (j *journalStore) flusher() {
	defer close(j.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	wait := func(d time.Duration) bool {
		t.Reset(d)
		select {
		case <-j.stop:
			t.Stop()
			return false
		case <-t.C:
			return true
		}
	}
	for {
		select {
		case <-j.stop:
			return
		case <-j.kick:
		}
		if !wait(j.delay) {
			return
		}
		for j.flush() != nil {
			if !wait(journalRetry) {
				return
			}
		}
	}
}

// flush stores what the active file holds into bolt: the other file
// becomes active and the entries go into bolt in one commit. A turn whose
// entries bolt refused (a full disk, say) stays as it is, its file not
// written over, and goes first at the next flush: the store keeps taking
// entries into the active file meanwhile, and recovers when bolt does.
func (j *journalStore) flush() error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	j.mu.RLock()
	retry, err := j.flushing, j.err
	j.mu.RUnlock()
	if err != nil {
		return err
	}
	if retry != nil {
		if err := j.storeTurn(retry, j.flushFile); err != nil {
			return err
		}
	}
	j.fileMu.Lock()
	j.mu.Lock()
	if len(j.pending) == 0 {
		j.mu.Unlock()
		j.fileMu.Unlock()
		return nil
	}
	batch := j.pending
	j.flushing, j.flushingBytes, j.pending, j.pendingBytes = batch, j.pendingBytes, nil, 0
	old := j.active
	j.flushFile = old
	j.active = 1 - old // its last turn is in bolt: written over from offset 0
	j.gen++
	j.nonce = newNonce()
	j.mu.Unlock()
	j.fileMu.Unlock()
	return j.storeTurn(batch, old)
}

// storeTurn stores the entries of file old's turn into bolt and, once it
// has, lets the file's next turn write over it. The caller holds flushMu.
func (j *journalStore) storeTurn(batch []*raft.Log, old int) error {
	if err := j.bolt.StoreLogs(batch); err != nil {
		// The entries stay in the journal (replayed on the next start)
		// and readable here (flushing).
		err = fmt.Errorf("cluster: store raft journal into raft.db: %w", err)
		if !j.failing && j.logger != nil {
			j.logger.Error("raft journal: raft.db refused a flush; retrying", "error", err)
		}
		j.failing = true
		return err
	}
	if j.failing && j.logger != nil {
		j.logger.Info("raft journal: raft.db takes flushes again")
	}
	j.failing = false
	j.fileMu.Lock()
	// The file's next turn writes over it from the start: overwriting
	// blocks the file already has makes an fdatasync cheaper than
	// growing the file (no size or extent to commit). A file a burst made
	// large is cut back (not synced: what it held is in bolt now; a
	// failure leaves it to be written over).
	if j.high[old] > journalKeepBytes {
		if err := j.files[old].Truncate(0); err == nil {
			j.high[old] = 0
		}
	}
	j.sizes[old] = 0
	j.fileMu.Unlock()
	j.mu.Lock()
	j.flushing, j.flushingBytes = nil, 0
	j.mu.Unlock()
	return nil
}

// drainLocked stores everything the journal holds into bolt (a turn a
// failed flush left, then what is pending) and empties both files
// durably. The caller holds flushMu and fileMu (no flush runs, no append).
func (j *journalStore) drainLocked() error {
	j.mu.RLock()
	batch, err := append(slices.Clip(j.flushing), j.pending...), j.err
	j.mu.RUnlock()
	if err != nil {
		return err
	}
	if len(batch) > 0 {
		if err := j.bolt.StoreLogs(batch); err != nil {
			return fmt.Errorf("cluster: store raft journal into raft.db: %w", err)
		}
	}
	j.mu.Lock()
	j.flushing, j.flushingBytes, j.pending, j.pendingBytes = nil, 0, nil, 0
	j.mu.Unlock()
	for i, f := range j.files {
		if err := truncateSync(f); err != nil {
			return err
		}
		j.sizes[i], j.high[i] = 0, 0
	}
	return nil
}

// DeleteRange stores what is pending into bolt, empties the journal
// durably, then deletes the range from bolt (see the type's comment).
func (j *journalStore) DeleteRange(min, max uint64) error {
	return j.drained(func() error { return j.bolt.DeleteRange(min, max) })
}

// find returns the entry idx of a contiguous run, or nil.
func find(run []*raft.Log, idx uint64) *raft.Log {
	if len(run) == 0 || idx < run[0].Index || idx-run[0].Index >= uint64(len(run)) {
		return nil
	}
	return run[idx-run[0].Index]
}

func (j *journalStore) GetLog(idx uint64, log *raft.Log) error {
	j.mu.RLock()
	l := find(j.pending, idx)
	if l == nil {
		l = find(j.flushing, idx)
	}
	if l != nil {
		*log = *l
		j.mu.RUnlock()
		return nil
	}
	j.mu.RUnlock()
	// A flush moves entries into bolt before it drops them from flushing,
	// so an entry not found above is in bolt if it is anywhere.
	return j.bolt.GetLog(idx, log)
}

func (j *journalStore) FirstIndex() (uint64, error) {
	// Under the lock: entries leave memory only once bolt holds them, and
	// a delete comes only after a drain has taken the lock, so while it is
	// held bolt can gain entries but not lose them.
	j.mu.RLock()
	defer j.mu.RUnlock()
	var mem uint64
	if len(j.flushing) > 0 {
		mem = j.flushing[0].Index
	} else if len(j.pending) > 0 {
		mem = j.pending[0].Index
	}
	first, err := j.bolt.FirstIndex()
	if err != nil || first != 0 {
		return first, err
	}
	return mem, nil
}

func (j *journalStore) LastIndex() (uint64, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.last, nil
}

// IsMonotonic passes through the store's raft.MonotonicLogStore answer.
func (j *journalStore) IsMonotonic() bool {
	if m, ok := j.bolt.(raft.MonotonicLogStore); ok {
		return m.IsMonotonic()
	}
	return false
}

// Close stops the flusher, stores what is pending into bolt, empties the
// journal and closes its files (not bolt). Raft must have shut down.
func (j *journalStore) Close() error {
	var err error
	j.closeOnce.Do(func() {
		close(j.stop)
		<-j.done
		j.flushMu.Lock()
		defer j.flushMu.Unlock()
		j.fileMu.Lock()
		defer j.fileMu.Unlock()
		err = j.drainLocked()
		for _, f := range j.files {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		j.mu.Lock()
		if j.err == nil {
			j.err = errJournalClosed
		}
		j.mu.Unlock()
	})
	return err
}

func truncateSync(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("cluster: truncate raft journal: %w", err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("cluster: sync raft journal: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cluster: sync %s: %w", dir, err)
	}
	return nil
}
