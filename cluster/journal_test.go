package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// journalDir is a data directory with a raft.db, as a node has.
type journalDir struct {
	t    *testing.T
	dir  string
	bolt *raftboltdb.BoltStore
}

func newJournalDir(t *testing.T) *journalDir {
	t.Helper()
	d := &journalDir{t: t, dir: t.TempDir()}
	d.openBolt()
	t.Cleanup(func() {
		if d.bolt != nil {
			d.bolt.Close()
		}
	})
	return d
}

func (d *journalDir) openBolt() {
	d.t.Helper()
	b, err := raftboltdb.NewBoltStore(filepath.Join(d.dir, "raft.db"))
	if err != nil {
		d.t.Fatal(err)
	}
	d.bolt = b
}

// open opens the journal over raft.db with the given flush delay (an hour:
// nothing is flushed but by the test).
func (d *journalDir) open(delay time.Duration) *journalStore {
	d.t.Helper()
	_, j, err := openJournal(d.dir, d.bolt, true, delay, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { j.crash() })
	return j
}

// crash stops j as a killed process would leave it: no flush, no drain,
// the files closed as they are. raft.db is closed too, and reopened.
func (d *journalDir) crash(j *journalStore) {
	d.t.Helper()
	j.crash()
	if err := d.bolt.Close(); err != nil {
		d.t.Fatal(err)
	}
	d.openBolt()
}

// crash is Close without storing anything into bolt.
func (j *journalStore) crash() {
	j.closeOnce.Do(func() {
		close(j.stop)
		<-j.done
		j.flushMu.Lock()
		j.fileMu.Lock()
		for _, f := range j.files {
			f.Close()
		}
		j.fileMu.Unlock()
		j.flushMu.Unlock()
	})
}

func jentry(idx, term uint64, salt string) *raft.Log {
	data := []byte(fmt.Sprintf("%s-%d-%d-%s", salt, idx, term, bytes.Repeat([]byte{'x'}, int(idx%37))))
	l := &raft.Log{Index: idx, Term: term, Type: raft.LogCommand, Data: data}
	if idx%3 == 0 {
		l.Extensions = []byte(fmt.Sprint("ext", idx))
	}
	if idx%2 == 0 {
		l.AppendedAt = time.Unix(1_700_000_000, int64(idx)*1000)
	}
	if idx%11 == 0 {
		l.Type = raft.LogNoop
		l.Data = nil
	}
	return l
}

func run(from, to, term uint64, salt string) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, jentry(i, term, salt))
	}
	return logs
}

// sameLog reports how two stores differ: first and last index and every
// entry between.
func sameLog(a, b raft.LogStore) error {
	af, _ := a.FirstIndex()
	bf, _ := b.FirstIndex()
	al, _ := a.LastIndex()
	bl, _ := b.LastIndex()
	if af != bf || al != bl {
		return fmt.Errorf("first/last %d/%d, want %d/%d", af, al, bf, bl)
	}
	for i := af; i <= al && al != 0; i++ {
		var x, y raft.Log
		ea, eb := a.GetLog(i, &x), b.GetLog(i, &y)
		if (ea == nil) != (eb == nil) {
			return fmt.Errorf("entry %d: error %v, want %v", i, ea, eb)
		}
		if ea != nil {
			continue
		}
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) ||
			!bytes.Equal(x.Extensions, y.Extensions) || !x.AppendedAt.Equal(y.AppendedAt) {
			return fmt.Errorf("entry %d = %+v, want %+v", i, x, y)
		}
	}
	return nil
}

func store(t *testing.T, s raft.LogStore, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

// TestJournalActsAsBolt runs random sequences of what Raft does to its
// log (appends in batches, flushes at any moment, a follower's conflicting
// suffix replaced, compaction, a snapshot installed past the end) against
// the journal over raft.db and against a raft.db alone, and compares the
// two logs after every step, and again after a crash and a restart.
func TestJournalActsAsBolt(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			d := newJournalDir(t)
			j := d.open(time.Hour)
			model := newBoltLogs(t)
			var last, term uint64 = 0, 1
			both := func(step string, f func(s raft.LogStore) error) {
				t.Helper()
				ej, em := f(j), f(model)
				if (ej == nil) != (em == nil) {
					t.Fatalf("%s: journal %v, raft.db alone %v", step, ej, em)
				}
				if err := sameLog(j, model); err != nil {
					t.Fatalf("after %s: %v", step, err)
				}
			}
			for step := 0; step < 60; step++ {
				switch k := rng.IntN(10); {
				case k < 5: // append
					n := 1 + rng.Uint64N(8)
					logs := run(last+1, last+n, term, "a")
					both(fmt.Sprintf("append %d..%d", last+1, last+n), func(s raft.LogStore) error { return s.StoreLogs(logs) })
					last += n
				case k == 5: // flush now
					if err := j.flush(); err != nil {
						t.Fatal(err)
					}
				case k == 6 && last > 2: // a new leader's suffix: delete, store with a newer term
					from := last - rng.Uint64N(last/2+1)
					first, _ := model.FirstIndex()
					from = max(from, first)
					term++
					both(fmt.Sprintf("delete %d..%d", from, last), func(s raft.LogStore) error { return s.DeleteRange(from, last) })
					logs := run(from, from+rng.Uint64N(4), term, "b")
					both(fmt.Sprintf("store %d..", from), func(s raft.LogStore) error { return s.StoreLogs(logs) })
					last = logs[len(logs)-1].Index
				case k == 7 && last > 4: // compaction
					first, _ := model.FirstIndex()
					if first == 0 || first >= last {
						continue
					}
					to := first + rng.Uint64N(last-first)
					both(fmt.Sprintf("compact %d..%d", first, to), func(s raft.LogStore) error { return s.DeleteRange(first, to) })
				case k == 8: // a snapshot installed past the end: entries after a gap
					from := last + 2 + rng.Uint64N(5)
					logs := run(from, from+rng.Uint64N(3), term, "s")
					both(fmt.Sprintf("store after a gap %d..", from), func(s raft.LogStore) error { return s.StoreLogs(logs) })
					last = logs[len(logs)-1].Index
				case k == 9: // an overwrite of stored indexes without a delete (raft does not, bolt allows it)
					if last == 0 {
						continue
					}
					first, _ := model.FirstIndex()
					from := max(first, last-rng.Uint64N(3))
					logs := run(from, last, term, "o")
					both(fmt.Sprintf("overwrite %d..%d", from, last), func(s raft.LogStore) error { return s.StoreLogs(logs) })
				}
			}
			d.crash(j)
			j = d.open(time.Hour)
			if err := sameLog(j, model); err != nil {
				t.Fatalf("after a crash and a restart: %v", err)
			}
		})
	}
}

// TestJournalEntriesSurviveACrash: what StoreLogs acknowledged is there
// after a crash that left it in the journal alone (no flush ran), in both
// files, whichever turn holds what.
func TestJournalEntriesSurviveACrash(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	model := newBoltLogs(t)
	var last uint64
	for round := 0; round < 5; round++ {
		for range 4 {
			logs := run(last+1, last+3, 1, "c")
			store(t, j, logs)
			store(t, model, logs)
			last += 3
		}
		if round < 4 {
			if err := j.flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if bl, _ := d.bolt.LastIndex(); bl >= last {
		t.Fatalf("raft.db holds up to %d before the crash; the test wants entries in the journal alone", bl)
	}
	d.crash(j)
	if bl, _ := d.bolt.LastIndex(); bl >= last {
		t.Fatalf("raft.db holds up to %d before the restart", bl)
	}
	j = d.open(time.Hour)
	if err := sameLog(j, model); err != nil {
		t.Fatal(err)
	}
	if err := sameLog(d.bolt, model); err != nil {
		t.Fatalf("raft.db after the replay: %v", err)
	}
	for i := range j.files {
		if st, err := j.files[i].Stat(); err != nil || st.Size() != 0 {
			t.Fatalf("journal file %d after the replay: %v, %d bytes; want empty", i, err, st.Size())
		}
	}
}

// TestJournalReplayStopsAtATornRecord: a record cut anywhere, or with a
// byte changed, and everything after it, is not replayed; every record
// before it is.
func TestJournalReplayStopsAtATornRecord(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	for i := uint64(0); i < 3; i++ {
		store(t, j, run(i*4+1, i*4+4, 1, "t"))
	}
	name := j.files[j.active].Name()
	d.crash(j)
	whole, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, recs := decodeJournal(whole); len(recs) != 3 {
		t.Fatalf("the journal holds %d records, want 3", len(recs))
	}
	start := 0 // of the third record
	for range 2 {
		start += journalHeader + int(binary.LittleEndian.Uint32(whole[start:]))
	}
	cases := map[string][]byte{}
	for cut := start; cut < len(whole); cut += 1 + (len(whole)-start)/40 {
		cases[fmt.Sprintf("cut at %d", cut)] = whole[:cut]
	}
	for _, at := range []int{start, start + 5, start + 9, start + journalHeader + 2, len(whole) - 1} {
		b := bytes.Clone(whole)
		b[at] ^= 0x40
		cases[fmt.Sprintf("byte %d changed", at)] = b
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			d := newJournalDir(t)
			if err := os.WriteFile(filepath.Join(d.dir, journalName+".0"), content, 0o600); err != nil {
				t.Fatal(err)
			}
			j := d.open(time.Hour)
			last, _ := j.LastIndex()
			if last != 8 {
				t.Fatalf("last index after the replay %d, want 8 (two whole records)", last)
			}
			wantLog(t, j, run(1, 4, 1, "t"), run(5, 8, 1, "t"))
		})
	}
}

// TestJournalIgnoresAnEarlierTurnLeftBehind: a file's next turn writes
// over its last one from offset 0, so the file holds the records of its
// current turn followed by what is left of an earlier one. Only the
// records of the file's first generation are replayed.
func TestJournalIgnoresAnEarlierTurnLeftBehind(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	store(t, j, run(1, 4, 1, "old"))
	gen := j.gen
	name := j.files[j.active].Name()
	d.crash(j)
	stale, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	// The next turn of the same file: a newer generation's record (entry
	// 1..2 with term 2) written at the start, the stale bytes after it.
	rec := appendEntries(make([]byte, journalHeader), run(1, 2, 2, "new"))
	sealRecord(rec, gen+2, newNonce())
	content := append(rec, stale...)
	if err := os.WriteFile(name, content, 0o600); err != nil {
		t.Fatal(err)
	}
	j = d.open(time.Hour)
	wantLog(t, j, run(1, 2, 2, "new"))
}

// TestJournalIgnoresARecordOfAnotherTurn: a well-formed record of the
// right generation behind the turn's records (one an earlier turn left,
// or one forged inside client data an old record holds) is not the turn's
// unless it carries the turn's random nonce.
func TestJournalIgnoresARecordOfAnotherTurn(t *testing.T) {
	d := newJournalDir(t)
	rec := appendEntries(make([]byte, journalHeader), run(1, 2, 1, "real"))
	sealRecord(rec, 7, 1111)
	forged := appendEntries(make([]byte, journalHeader), run(3, 3, 1, "forged"))
	sealRecord(forged, 7, 2222)
	if err := os.WriteFile(filepath.Join(d.dir, journalName+".0"), append(rec, forged...), 0o600); err != nil {
		t.Fatal(err)
	}
	j := d.open(time.Hour)
	wantLog(t, j, run(1, 2, 1, "real"))
}

// TestJournalDeleteRangeLeavesNothingBehind: entries a follower deleted
// (a conflicting suffix) and replaced never come back from the journal
// after a crash, wherever they were when the delete came (journal or bolt).
func TestJournalDeleteRangeLeavesNothingBehind(t *testing.T) {
	for _, flushed := range []bool{false, true} {
		t.Run(fmt.Sprint("flushed=", flushed), func(t *testing.T) {
			d := newJournalDir(t)
			j := d.open(time.Hour)
			store(t, j, run(1, 10, 1, "a"))
			if flushed {
				if err := j.flush(); err != nil {
					t.Fatal(err)
				}
			}
			store(t, j, run(11, 20, 1, "a"))
			if err := j.DeleteRange(6, 20); err != nil {
				t.Fatal(err)
			}
			store(t, j, run(6, 8, 2, "b"))
			d.crash(j)
			j = d.open(time.Hour)
			wantLog(t, j, run(1, 5, 1, "a"), run(6, 8, 2, "b"))
		})
	}
}

// TestJournalReadsWhileFlushing: every entry stored is readable at every
// moment, while flushes move entries into raft.db under the readers.
func TestJournalReadsWhileFlushing(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(200 * time.Microsecond)
	var stored atomic.Uint64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				last := stored.Load()
				if last == 0 {
					continue
				}
				idx := 1 + rng.Uint64N(last)
				var l raft.Log
				if err := j.GetLog(idx, &l); err != nil || l.Index != idx || !bytes.Equal(l.Data, jentry(idx, 1, "r").Data) {
					errs <- fmt.Errorf("GetLog(%d) of %d stored: %v, index %d", idx, last, err, l.Index)
					return
				}
				if first, err := j.FirstIndex(); err != nil || first != 1 {
					errs <- fmt.Errorf("FirstIndex = %d, %v; want 1", first, err)
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	var last uint64
	for last < 3000 && time.Now().Before(deadline) {
		logs := run(last+1, last+1+uint64(last%5), 1, "r")
		if err := j.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		last = logs[len(logs)-1].Index
		stored.Store(last)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if bl, _ := d.bolt.LastIndex(); bl == 0 {
		t.Fatal("no flush stored anything into raft.db")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if bl, _ := d.bolt.LastIndex(); bl != last {
		t.Fatalf("after Close raft.db holds up to %d, want %d", bl, last)
	}
}

// TestJournalFlushesOnItsOwn: with nothing else happening, the flusher
// stores the journal into raft.db after its delay and empties the file.
func TestJournalFlushesOnItsOwn(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Millisecond)
	store(t, j, run(1, 5, 1, "f"))
	wait.For(t, 30*time.Second, time.Millisecond, func() (bool, string) {
		bl, _ := d.bolt.LastIndex()
		j.fileMu.Lock()
		sizes := j.sizes
		j.fileMu.Unlock()
		return bl == 5 && sizes == [2]int64{}, fmt.Sprintf("raft.db holds up to %d and the journal's turns %v bytes", bl, sizes)
	})
}

// TestJournalOffReplaysWhatAnEarlierRunLeft: a node started without the
// journal still replays the journal files of a run that crashed with it,
// and removes them.
func TestJournalOffReplaysWhatAnEarlierRunLeft(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	store(t, j, run(1, 7, 1, "off"))
	d.crash(j)
	s, jj, err := openJournal(d.dir, d.bolt, false, 0, nil)
	if err != nil || jj != nil {
		t.Fatalf("openJournal(off) = %v, %v", jj, err)
	}
	wantLog(t, s, run(1, 7, 1, "off"))
	for i := range 2 {
		if _, err := os.Stat(filepath.Join(d.dir, fmt.Sprintf("%s.%d", journalName, i))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("journal file %d still there: %v", i, err)
		}
	}
}

// TestJournalRetriesAFailedFlush: when raft.db refuses a flush (a full
// disk), the entries stay readable and in the journal, the store keeps
// taking entries, a crash meanwhile loses none, and the flusher stores
// them all once raft.db takes them again.
func TestJournalRetriesAFailedFlush(t *testing.T) {
	d := newJournalDir(t)
	j, bad := d.openFailing(time.Hour)
	store(t, j, run(1, 3, 1, "l"))
	bad.fail.Store(true)
	if err := j.flush(); err == nil {
		t.Fatal("flush into a failing raft.db: no error")
	}
	store(t, j, run(4, 6, 1, "l"))
	if err := j.flush(); err == nil {
		t.Fatal("second flush into a failing raft.db: no error")
	}
	store(t, j, run(7, 7, 1, "l"))
	wantLog(t, j, run(1, 7, 1, "l"))

	// A crash now: both files' turns are replayed.
	d.crash(j)
	j = d.open(time.Hour)
	wantLog(t, j, run(1, 7, 1, "l"))
	wantLog(t, d.bolt, run(1, 7, 1, "l"))

	// Without a crash: the flusher retries on its own.
	j.crash()
	j, bad = d.openFailing(time.Millisecond)
	bad.fail.Store(true)
	store(t, j, run(8, 9, 1, "l"))
	wait.Until(t, 30*time.Second, "a flush into the failing raft.db", func() bool { return bad.refused.Load() > 0 })
	bad.fail.Store(false)
	wait.Until(t, 30*time.Second, "raft.db to get entries 8..9 once it takes flushes again", func() bool {
		last, _ := d.bolt.LastIndex()
		return last == 9
	})
	wantLog(t, j, run(1, 9, 1, "l"))
}

// TestJournalStopsTakingPastItsBound: while raft.db refuses flushes, a
// store past journalFlushBytes pending fails and takes nothing; once
// raft.db takes flushes again, the next store goes through.
func TestJournalStopsTakingPastItsBound(t *testing.T) {
	d := newJournalDir(t)
	j, bad := d.openFailing(time.Hour)
	bad.fail.Store(true)
	big := &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{'b'}, journalFlushBytes)}
	store(t, j, []*raft.Log{big})
	if err := j.StoreLogs(run(2, 2, 1, "b")); err == nil {
		t.Fatal("a store past the bound while raft.db refuses flushes: no error")
	}
	if last, _ := j.LastIndex(); last != 1 {
		t.Fatalf("last index %d after the refused store, want 1", last)
	}
	bad.fail.Store(false)
	store(t, j, run(2, 2, 1, "b"))
	wantLog(t, d.bolt, []*raft.Log{big})
	wantLog(t, j, []*raft.Log{big}, run(2, 2, 1, "b"))
}

// TestJournalDrainsAFailedTurn: a delete after a failed flush stores the
// refused turn into raft.db with what is pending before it empties the
// files.
func TestJournalDrainsAFailedTurn(t *testing.T) {
	d := newJournalDir(t)
	j, bad := d.openFailing(time.Hour)
	store(t, j, run(1, 3, 1, "d"))
	bad.fail.Store(true)
	if err := j.flush(); err == nil {
		t.Fatal("flush into a failing raft.db: no error")
	}
	store(t, j, run(4, 5, 1, "d"))
	bad.fail.Store(false)
	if err := j.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	wantLog(t, j, run(2, 5, 1, "d"))
	d.crash(j)
	j = d.open(time.Hour)
	wantLog(t, j, run(2, 5, 1, "d"))
}

// TestJournalLatchesAFailedAppend: a journal write that fails (here: its
// file closed under it) fails every later store, as an fsync error must.
func TestJournalLatchesAFailedAppend(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	store(t, j, run(1, 2, 1, "x"))
	j.files[j.active].Close()
	if err := j.StoreLogs(run(3, 3, 1, "x")); err == nil {
		t.Fatal("a store into a closed journal file: no error")
	}
	if err := j.StoreLogs(run(3, 3, 1, "x")); err == nil {
		t.Fatal("a store after a failed one: no error")
	}
	if last, _ := j.LastIndex(); last != 2 {
		t.Fatalf("last index %d after failed stores, want 2", last)
	}
}

// openFailing opens the journal over raft.db through a failingStore.
func (d *journalDir) openFailing(delay time.Duration) (*journalStore, *failingStore) {
	d.t.Helper()
	bad := &failingStore{LogStore: d.bolt}
	_, j, err := openJournal(d.dir, bad, true, delay, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(j.crash)
	return j, bad
}

type failingStore struct {
	raft.LogStore
	fail    atomic.Bool
	refused atomic.Int64
}

func (s *failingStore) StoreLogs(logs []*raft.Log) error {
	if s.fail.Load() {
		s.refused.Add(1)
		return errors.New("disk full")
	}
	return s.LogStore.StoreLogs(logs)
}

// FuzzJournalDecode: any bytes decode without a panic into whole records
// only, and what appendEntries writes decodes to the same entries.
func FuzzJournalDecode(f *testing.F) {
	rec := appendEntries(make([]byte, journalHeader), run(1, 3, 1, "z"))
	sealRecord(rec, 5, 77)
	f.Add(rec, uint64(1), uint8(3))
	f.Add([]byte{}, uint64(0), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, first uint64, n uint8) {
		if gen, recs := decodeJournal(b); len(recs) > 0 {
			for _, r := range recs {
				if len(r) == 0 {
					t.Fatalf("an empty record of generation %d", gen)
				}
			}
		}
		if n == 0 || first == 0 || first > 1<<62 {
			return
		}
		logs := run(first, first+uint64(n)-1, 3, string(b[:min(len(b), 16)]))
		enc := appendEntries(make([]byte, journalHeader), logs)
		sealRecord(enc, 9, 1234)
		gen, recs := decodeJournal(append(enc, b...))
		if gen != 9 || len(recs) == 0 || len(recs[0]) != len(logs) {
			t.Fatalf("decoded generation %d, %d records", gen, len(recs))
		}
		for i, l := range recs[0] {
			w := logs[i]
			if l.Index != w.Index || l.Term != w.Term || l.Type != w.Type || !bytes.Equal(l.Data, w.Data) ||
				!bytes.Equal(l.Extensions, w.Extensions) || !l.AppendedAt.Equal(w.AppendedAt) {
				t.Fatalf("entry %d = %+v, want %+v", i, l, w)
			}
		}
	})
}

// TestJournalTurnsWriteOverEachOther: each file's next turn writes over
// its last from offset 0, a shorter turn leaving the end of a longer one
// behind it; a crash at any turn replays exactly the log. A file a burst
// made larger than journalKeepBytes is cut back after its turn.
func TestJournalTurnsWriteOverEachOther(t *testing.T) {
	d := newJournalDir(t)
	j := d.open(time.Hour)
	model := newBoltLogs(t)
	var last uint64
	for turn, n := range []uint64{40, 30, 5, 2, 1, 12} {
		for range n {
			logs := run(last+1, last+2, 1, "w")
			store(t, j, logs)
			store(t, model, logs)
			last += 2
		}
		if turn < 5 {
			if err := j.flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := j.files[0].Stat()
	if err != nil {
		t.Fatal(err)
	}
	if j.sizes[0] >= st.Size() {
		t.Fatalf("file 0: the current turn wrote %d bytes of %d; want it to end before what its first turn left", j.sizes[0], st.Size())
	}
	d.crash(j)
	j = d.open(time.Hour)
	if err := sameLog(j, model); err != nil {
		t.Fatal(err)
	}

	// A burst: one turn past journalKeepBytes is truncated after it.
	big := &raft.Log{Index: last + 1, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{'b'}, journalKeepBytes+1)}
	store(t, j, []*raft.Log{big})
	f := j.files[j.active]
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 0 {
		t.Fatalf("after a %d-byte turn the file holds %d bytes (%v); want it cut back", journalKeepBytes+1, st.Size(), err)
	}
}

// wantLog fails the test unless s holds exactly the runs, stored in order
// into a raft.db alone.
func wantLog(t *testing.T, s raft.LogStore, runs ...[]*raft.Log) {
	t.Helper()
	model := newBoltLogs(t)
	for _, r := range runs {
		store(t, model, r)
	}
	if err := sameLog(s, model); err != nil {
		t.Fatal(err)
	}
}
