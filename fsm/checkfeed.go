package fsm

import (
	"slices"
	"sync"
)

// MaxCheckFeedPending bounds the check IDs a CheckFeed holds for its reader.
// Past it the feed drops them and tells its reader to read every check
// instead (Take's complete is false): a reader that far behind would spend
// more reading the IDs than the checks.
const MaxCheckFeedPending = 1 << 16

// CheckFeed tells its reader which checks changed (were created, updated or
// deleted) since it last asked, so that the leader's health coordinator
// reads those checks rather than all of them each time one changes. The
// IDs are handed over after the transaction that changed them committed:
// a reader that takes an ID and then reads the check sees the change (or a
// later one). An ID may come more than once, and the reader must treat a
// check it cannot find as deleted. It is safe for concurrent use.
type CheckFeed struct {
	s     *Store
	ready chan struct{} // holds a token while IDs (or a loss) wait

	mu   sync.Mutex
	ids  []string
	lost bool // IDs were dropped: the reader must read every check
}

// WatchChecks starts a feed of the checks that change from now on. Its first
// Take reports it incomplete, so that the reader starts from a full read of
// the checks; changes that commit after WatchChecks returns are in the feed.
// Close it when done.
func (s *Store) WatchChecks() *CheckFeed {
	f := &CheckFeed{s: s, ready: make(chan struct{}, 1), lost: true}
	f.ready <- struct{}{}
	s.feedsMu.Lock()
	s.feeds = append(s.feeds, f)
	s.feedsMu.Unlock()
	return f
}

// Ready returns a channel that receives when the feed has something to take.
func (f *CheckFeed) Ready() <-chan struct{} { return f.ready }

// Take returns the IDs of the checks changed since the last Take, in the
// order they changed; the feed keeps buf for the next ones (pass the IDs of
// the previous Take when done with them). complete is false when the feed
// lost track (it started, overflowed MaxCheckFeedPending or the store was
// restored from a snapshot): the reader must then read every check.
func (f *CheckFeed) Take(buf []string) (ids []string, complete bool) {
	// The feed's list goes to the reader and buf (emptied) becomes the
	// feed's: no copy, and no allocation once both have grown.
	clear(buf[:cap(buf)])
	buf = buf[:0]
	if cap(buf) > 4096 {
		buf = nil // a burst's backing array is not kept for the next one
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ids, f.ids = f.ids, buf
	complete = !f.lost
	f.lost = false
	return ids, complete
}

// Close stops the feed.
func (f *CheckFeed) Close() {
	s := f.s
	s.feedsMu.Lock()
	defer s.feedsMu.Unlock()
	for i, g := range s.feeds {
		if g == f {
			s.feeds = slices.Delete(s.feeds, i, i+1)
			return
		}
	}
}

func (f *CheckFeed) add(ids []string, lost bool) {
	f.mu.Lock()
	switch {
	case lost || f.lost || len(f.ids)+len(ids) > MaxCheckFeedPending:
		f.lost = true
		clear(f.ids)
		f.ids = nil
	default:
		f.ids = append(f.ids, ids...)
	}
	f.mu.Unlock()
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

// publishChecks hands ids, changed by a committed transaction, to every
// feed; lost tells them instead that they lost track (a restore).
func (s *Store) publishChecks(ids []string, lost bool) {
	if len(ids) == 0 && !lost {
		return
	}
	s.feedsMu.Lock()
	defer s.feedsMu.Unlock()
	for _, f := range s.feeds {
		f.add(ids, lost)
	}
}
