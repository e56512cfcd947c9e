package cluster

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the most recent log entries in memory in front of the
// raft-boltdb store, as raft.LogCache does, but bounded in bytes as well as
// in entries. Raft reads the newest entries again at once: the leader's
// replication sends what it has just stored, and every node's FSM applies
// what it has just stored or committed; those reads are served from here.
//
// raft.LogCache bounds only the number of entries. Since group commit an
// entry may hold up to maxGroupMembers writes (maxGroupBytes), so 512
// entries could pin 128 MiB on every node; with the byte bound the cache
// holds at most maxBytes of entry data, or only the newest entry when that
// one alone is larger. Reads of older entries go to the store.
//
// It also caches copies of the entries, not the raft.Log values Raft
// passes in: the leader's are fields of its apply futures, which hold the
// FSM's response to the entry.
type logCache struct {
	store    raft.LogStore
	maxBytes int

	mu    sync.RWMutex
	ring  []*raft.Log
	lo    uint64 // index of the oldest cached entry
	n     uint64 // cached entries: lo .. lo+n-1, contiguous
	bytes int    // sum of entrySize over the cached entries
	// stored, if set, counts every entry stored (the log's byte budget,
	// logbudget.go).
	stored *logStored
	// mark, if set, keeps the catalog's applied index on disk after each
	// stored batch (commitmark.go).
	mark *commitMark
}

// The cache's bounds: what raft.LogCache held before group commit (512
// entries of one write, ~0.25 MiB) and a byte bound that still holds
// about a hundred groups of 64 registrations (replication and the
// followers' FSMs read back only the newest few entries).
const (
	logCacheEntries = 512
	logCacheBytes   = 2 << 20
)

// entryOverhead approximates what a cached entry costs beyond its data
// (the raft.Log struct and the ring's pointer).
const entryOverhead = 128

func entrySize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + entryOverhead }

func newLogCache(store raft.LogStore, entries, maxBytes int) (*logCache, error) {
	if entries <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("cluster: log cache needs a positive size (%d entries, %d bytes)", entries, maxBytes)
	}
	return &logCache{store: store, maxBytes: maxBytes, ring: make([]*raft.Log, entries)}, nil
}

// IsMonotonic passes through the store's raft.MonotonicLogStore answer.
func (c *logCache) IsMonotonic() bool {
	if m, ok := c.store.(raft.MonotonicLogStore); ok {
		return m.IsMonotonic()
	}
	return false
}

func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	if c.n > 0 && idx >= c.lo && idx-c.lo < c.n {
		*log = *c.ring[idx%uint64(len(c.ring))]
		c.mu.RUnlock()
		return nil
	}
	c.mu.RUnlock()
	return c.store.GetLog(idx, log)
}

func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs writes logs to the store and, once it has, caches them. An
// entry that does not follow the newest cached one (a follower's log
// rewritten after a conflict) empties the cache first, so that the cache
// always holds one contiguous run of the store's entries.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return err
	}
	if c.mark != nil {
		// A mark that cannot be written costs only what a restart without
		// a leader applies early; the entries are stored.
		_ = c.mark.persist()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stored := 0
	for _, l := range logs {
		if c.n > 0 && l.Index != c.lo+c.n {
			c.reset()
		}
		if c.n == 0 {
			c.lo = l.Index
		}
		if c.n == uint64(len(c.ring)) {
			c.evictOldest()
		}
		// A copy: on the leader, hashicorp/raft hands StoreLogs pointers
		// into its log futures, and caching those would keep each
		// future alive with its FSM response (a group's decoded
		// commands: ~5 MB on a leader at 64 clients with raft.LogCache).
		cp := *l
		c.ring[l.Index%uint64(len(c.ring))] = &cp
		c.n++
		sz := entrySize(l)
		c.bytes += sz
		stored += sz
		for c.bytes > c.maxBytes && c.n > 1 {
			c.evictOldest()
		}
	}
	if c.stored != nil {
		c.stored.add(stored, len(logs))
	}
	return nil
}

func (c *logCache) evictOldest() {
	slot := c.lo % uint64(len(c.ring))
	c.bytes -= entrySize(c.ring[slot])
	c.ring[slot] = nil
	c.lo++
	c.n--
}

func (c *logCache) reset() {
	clear(c.ring)
	c.lo, c.n, c.bytes = 0, 0, 0
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange empties the cache when the range touches a cached entry (a
// follower's conflicting suffix); the compaction after a snapshot deletes
// entries far older than the cache's and leaves it as it is.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	if c.n > 0 && min <= c.lo+c.n-1 && max >= c.lo {
		c.reset()
	}
	c.mu.Unlock()
	if err := c.store.DeleteRange(min, max); err != nil {
		return err
	}
	if c.stored != nil {
		c.stored.compacted.Store(true)
	}
	return nil
}

// cached reports how many entries and bytes the cache holds (tests).
func (c *logCache) cached() (entries uint64, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n, c.bytes
}
