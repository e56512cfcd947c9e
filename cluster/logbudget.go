package cluster

import (
	"context"
	"math"
	"path/filepath"
	"sync/atomic"
	"time"
)

// The Raft log's size in bytes.
//
// hashicorp/raft bounds its log in entries only: a snapshot once
// SnapshotThreshold entries were appended since the last one, and
// TrailingLogs entries kept after it. Since group commit an entry holds from
// one write to maxGroupMembers of them (up to maxGroupBytes), so those
// bounds let the log hold from a few megabytes to gigabytes: 64 clients
// writing registrations make entries of ~3.7 KB, and 8,192 + 4,096 of them
// are 45 MB; groups at maxGroupBytes would make the same counts 3 GB.
// raft.db never shrinks below the largest log it held, and the pages of it
// that bolt reads count in the process's RSS (a compaction walks every
// leaf it deletes, and the kernel maps the cached pages around each fault):
// after 45 s of writes at 64 clients one node's raft.db was 52 MB, 38 MB of
// it resident, and still growing.
//
// So each node also bounds its log in bytes: every logBudgetPeriod it takes
// the mean size of the entries it stored lately and lowers
// SnapshotThreshold and TrailingLogs (never above the configured counts)
// to what holds about Config.LogSnapshotBytes and LogTrailingBytes
// (default 64 and 4 MiB), through raft.ReloadConfig.
//
// The two differ because they cost differently. A lower threshold means
// more snapshots, each a walk of the whole catalog, and a compaction after
// each, which makes most of raft.db resident (a fill of 100,000
// registrations with a TTL check each, entries of ~7 KB, left 51-54 MB of
// file pages in two nodes' RSS with a 32 MiB budget, 22 MB without). At 64
// MiB, entries of up to 8 KB keep the configured 8,192 (64 clients'
// registrations make ~3.7 KB entries, with a check ~7 KB), so no load
// snapshots more often than before unless its entries are larger. Fewer
// trailing entries only mean that a follower that fell further behind gets
// a snapshot instead of the entries it missed: 4 MiB is ~1,100 entries of
// 64 clients' groups, ~25,000 registrations.
const (
	defaultLogSnapshotBytes = 64 << 20
	defaultLogTrailingBytes = 4 << 20
	// The lowest counts the budget sets: a snapshot costs a walk of the
	// whole catalog, so it is not taken more often than every 64 entries
	// however large they are.
	minSnapshotEntries = 64
	minTrailingEntries = 32
	logBudgetPeriod    = time.Second
)

// logStored counts what a node's log store stored: entrySize bytes over
// entries, since the last take.
type logStored struct {
	bytes, entries atomic.Int64
	// compacted is set when entries were deleted from the store (the
	// compaction after a snapshot), so the loop pages the log's file out.
	compacted atomic.Bool
}

// add counts a store of entries holding bytes.
func (s *logStored) add(bytes, entries int) {
	s.bytes.Add(int64(bytes))
	s.entries.Add(int64(entries))
}

// take returns the counts and resets them.
func (s *logStored) take() (bytes, entries int64) {
	return s.bytes.Swap(0), s.entries.Swap(0)
}

// logLimits returns the snapshot threshold and trailing logs that hold about
// snapBytes and trailBytes of entries of mean size avg, within [min, the
// configured count].
func logLimits(avg float64, snapBytes, trailBytes int64, threshold, trailing uint64) (uint64, uint64) {
	fit := func(budget float64, lo, hi uint64) uint64 {
		if avg <= 0 || hi <= lo {
			return hi
		}
		n := budget / avg
		if n >= float64(hi) || math.IsNaN(n) {
			return hi
		}
		return max(lo, uint64(n))
	}
	return fit(float64(snapBytes), minSnapshotEntries, threshold), fit(float64(trailBytes), minTrailingEntries, trailing)
}

// logBudgetLoop applies the byte budget (see above), and pages the log's
// file out when pageOuts says (see pageOutLog), until ctx ends.
func (n *Node) logBudgetLoop(ctx context.Context) {
	if n.stored == nil {
		return // an in-memory log: nothing on disk to bound
	}
	t := time.NewTicker(logBudgetPeriod)
	defer t.Stop()
	var mean entryMean
	var pageOuts pageOutSchedule
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		compacted := n.stored.compacted.Swap(false)
		bytes, entries := n.stored.take()
		if pageOuts.due(compacted, bytes) {
			n.pageOutLog()
		}
		if entries == 0 {
			continue
		}
		n.applyLogLimits(mean.add(bytes, entries))
	}
}

// When the log's file is paged out (see pageOutLog): after each
// compaction; once the writes pause (a period that stored nothing) after
// pageOutQuietBytes or more were stored since the last time; and under
// writes that do not pause, every pageOutBusyBytes. Each bolt commit reads
// the last leaf and its branches, which it just wrote elsewhere in the
// file, through the mapping, and each such fault maps the cached pages
// around it: the file's resident share grows with what is written (at 64
// clients' registrations, ~1 MB a second, up to the whole file). A page-out
// also takes those few hot pages out of the page cache, and the next
// commit reads them from the disk: so not after every write, and a node
// written to now and then pages out only after a megabyte of them.
const (
	pageOutQuietBytes = 1 << 20
	pageOutBusyBytes  = 16 << 20
)

// pageOutSchedule decides, once a period, whether to page the log out.
type pageOutSchedule struct {
	since int64 // bytes stored since the last page-out
}

// due reports whether to page out now, given whether the store was
// compacted and how many bytes it stored in the period just ended.
func (p *pageOutSchedule) due(compacted bool, stored int64) bool {
	p.since += stored
	if compacted || p.since >= pageOutBusyBytes || stored == 0 && p.since >= pageOutQuietBytes {
		p.since = 0
		return true
	}
	return false
}

// entryMean is the mean entry size over decayed sums of bytes and entries:
// each period's entries weigh by their number, so a period of a few small
// entries (a new leader's no-op) does not hold the mean down while large
// ones follow, and one odd entry does not move it.
type entryMean struct{ bytes, entries float64 }

// logBudgetDecay is what a period's entries still weigh one period later.
const logBudgetDecay = 0.7

// add takes a period's counts (entries > 0) and returns the mean.
func (m *entryMean) add(bytes, entries int64) float64 {
	m.bytes = logBudgetDecay*m.bytes + float64(bytes)
	m.entries = logBudgetDecay*m.entries + float64(entries)
	return m.bytes / m.entries
}

// applyLogLimits sets Raft's snapshot threshold and trailing logs for entries
// of mean size avg, when they differ from the current ones by more than an
// eighth (or return to the configured counts).
func (n *Node) applyLogLimits(avg float64) {
	snapBytes, trailBytes := n.cfg.LogSnapshotBytes, n.cfg.LogTrailingBytes
	if snapBytes <= 0 {
		snapBytes = defaultLogSnapshotBytes
	}
	if trailBytes <= 0 {
		trailBytes = defaultLogTrailingBytes
	}
	thr, trail := logLimits(avg, snapBytes, trailBytes, n.cfg.SnapshotThreshold, n.cfg.TrailingLogs)
	rc := n.raft.ReloadableConfig()
	if !logLimitMoved(rc.SnapshotThreshold, thr, n.cfg.SnapshotThreshold) && !logLimitMoved(rc.TrailingLogs, trail, n.cfg.TrailingLogs) {
		return
	}
	rc.SnapshotThreshold, rc.TrailingLogs = thr, trail
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.logger.Warn("cannot apply the raft log's byte budget", "snapshot_threshold", thr, "trailing_logs", trail, "error", err)
		return
	}
	n.logger.Debug("raft log limits for its byte budget", "mean_entry_bytes", int(avg), "snapshot_threshold", thr, "trailing_logs", trail)
}

// logLimitMoved says whether a limit should go from cur to want: by more than
// an eighth, or back to the configured count.
func logLimitMoved(cur, want, configured uint64) bool {
	if cur == want {
		return false
	}
	if want == configured {
		return true
	}
	diff := max(cur, want) - min(cur, want)
	return diff*8 > cur
}

// pageOutLog asks the kernel to take raft.db's pages out of this process's
// resident set. bolt reads its file through a shared mapping, and the
// kernel maps the cached pages around each page read, so the mapping's
// resident pages only grow: a compaction reads every leaf it deletes, and
// after one nearly the whole file, as large as the largest log it held,
// counted in the node's RSS for good (43-47 MB on every node after 100,000
// TTL checks were each reported once); each commit reads the leaf it wrote
// last (see pageOutSchedule). Those pages hold entries that are gone or
// applied, read again only for a follower that fell behind; what is read
// again soon (bolt's meta and branch pages, the last leaf) comes back from
// the disk on its next access. See cluster/DESIGN.md, "raft.db out of the
// resident set".
func (n *Node) pageOutLog() {
	if n.logPath == "" {
		return
	}
	advised, err := pageOutFile(n.logPath)
	if err != nil {
		n.logger.Debug("raft log not paged out", "path", n.logPath, "error", err)
		return
	}
	n.logger.Debug("raft log paged out", "mapped_bytes", advised)
}

// resolvedPath is path absolute with its symbolic links resolved, as the
// kernel names a mapped file; path itself if that fails.
func resolvedPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}
