package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

func TestLogLimits(t *testing.T) {
	const snap, trail = defaultLogSnapshotBytes, defaultLogTrailingBytes
	for _, tc := range []struct {
		name         string
		avg          float64
		wantThr      uint64
		wantTrailing uint64
	}{
		{"nothing stored yet", 0, 8192, 4096},
		{"single writes (~300 B)", 300, 8192, 4096},
		{"1 KB entries fill the trailing count exactly", 1024, 8192, 4096},
		{"64 clients' registrations (3.7 KB)", 3700, 8192, 1133},
		{"64 clients' registrations with a check (7 KB)", 7000, 8192, 599},
		{"8 KB entries fill the snapshot threshold exactly", 8192, 8192, 512},
		{"16 KB entries", 16 << 10, 4096, 256},
		{"full groups (256 KiB)", 256 << 10, 256, minTrailingEntries},
		{"entries beyond the budget", 128 << 20, minSnapshotEntries, minTrailingEntries},
	} {
		t.Run(tc.name, func(t *testing.T) {
			thr, tr := logLimits(tc.avg, snap, trail, 8192, 4096)
			if thr != tc.wantThr || tr != tc.wantTrailing {
				t.Fatalf("logLimits(%v) = %d, %d; want %d, %d", tc.avg, thr, tr, tc.wantThr, tc.wantTrailing)
			}
		})
	}
	// Configured counts below the floors are kept as they are.
	if thr, tr := logLimits(1<<30, snap, trail, 16, 8); thr != 16 || tr != 8 {
		t.Fatalf("with counts of 16 and 8 configured: %d, %d", thr, tr)
	}
}

func TestLogLimitMoved(t *testing.T) {
	for _, tc := range []struct {
		cur, want, configured uint64
		moved                 bool
	}{
		{8192, 8192, 8192, false},
		{5000, 5400, 8192, false}, // within an eighth: no reload for a mean that wobbles
		{5000, 5700, 8192, true},
		{5000, 4300, 8192, true},
		{8000, 8192, 8192, true}, // back to the configured count, however close
		{64, 64, 8192, false},
	} {
		if got := logLimitMoved(tc.cur, tc.want, tc.configured); got != tc.moved {
			t.Errorf("logLimitMoved(%d, %d, %d) = %v, want %v", tc.cur, tc.want, tc.configured, got, tc.moved)
		}
	}
}

// TestEntryMeanWeighsEntries: a first period of a few small entries (a
// new leader's configuration and no-op) must not hold the mean of the large
// entries that follow far down, as a mean of each period's means did (it
// took 13 periods to come within 2 %); and the mean follows a change of
// size, as old periods decay, within ten.
func TestEntryMeanWeighsEntries(t *testing.T) {
	var m entryMean
	m.add(3*250, 3)
	if got := m.add(300*16600, 300); got < 16400 {
		t.Fatalf("mean after 3 entries of 250 B and 300 of 16,600 B: %.0f, want within ~1 %% of 16,600", got)
	}
	var got float64
	for range 10 {
		got = m.add(100*1000, 100)
	}
	if got > 2000 {
		t.Fatalf("mean after ten periods of 100 entries of 1,000 B: %.0f, want under 2,000", got)
	}
}

// TestLargeEntriesKeepTheLogSmall writes entries of 16 KiB to a node whose
// log budget is 1 MiB (and 512 KiB after a snapshot): Raft's limits must
// come down near the floors, and the log be compacted long before the
// configured 8,192 entries, which entries counted alone never reach here.
//
// The limits follow a mean taken once a second over what was stored, so
// the writes go on (bounded) until the limits have come down however fast
// the machine writes, then 150 more make Raft snapshot with them.
func TestLargeEntriesKeepTheLogSmall(t *testing.T) {
	tn := newTestNodes(t, 1, func(i int, c *Config) {
		c.LogSnapshotBytes, c.LogTrailingBytes = 1<<20, 512<<10
		c.SnapshotInterval = 200 * time.Millisecond
	})
	n := tn.nodes[0]
	if rc := n.raft.ReloadableConfig(); rc.SnapshotThreshold != 8192 || rc.TrailingLogs != 4096 {
		t.Fatalf("limits before any write: %d, %d; want the configured 8192, 4096", rc.SnapshotThreshold, rc.TrailingLogs)
	}
	blob := strings.Repeat("x", 16<<10)
	writes := 0
	write := func(k int) {
		t.Helper()
		for range k {
			cmd := fsmtest.Register(t, fmt.Sprintf("big-%d", writes), "big", func(r *fsm.RegisterRequest) {
				r.Meta = map[string]string{"blob": blob}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := n.Apply(ctx, cmd)
			cancel()
			if err != nil {
				t.Fatalf("write %d: %v", writes, err)
			}
			writes++
		}
	}
	// 1 MiB of 16.6 KB entries is 63 of them, 512 KiB 31: the floors. The
	// mean may sit a little under the entries' size while the node's first
	// small entries still weigh in it; twice the floors is plenty to tell
	// the budget from the configured 8,192 and 4,096.
	lowered := func() bool {
		rc := n.raft.ReloadableConfig()
		return rc.SnapshotThreshold <= 2*minSnapshotEntries && rc.TrailingLogs <= 2*minTrailingEntries
	}
	for deadline := time.Now().Add(60 * time.Second); !lowered(); {
		if time.Now().After(deadline) || writes >= 2000 {
			rc := n.raft.ReloadableConfig()
			t.Fatalf("after %d writes of 16 KiB the limits are %d, %d; want at most %d, %d",
				writes, rc.SnapshotThreshold, rc.TrailingLogs, 2*minSnapshotEntries, 2*minTrailingEntries)
		}
		write(20)
	}
	write(150)
	// Raft snapshots at its next check once the threshold's entries follow
	// the last snapshot, and keeps the trailing ones: after the writes the
	// log holds at most those and fewer than a threshold more.
	eventually(t, 30*time.Second, func() bool {
		first, err1 := n.logs.FirstIndex()
		last, err2 := n.logs.LastIndex()
		return err1 == nil && err2 == nil && first > 1 && last-first+1 <= 2*(2*minSnapshotEntries+2*minTrailingEntries)
	}, "the log compacted to its byte budget")
	if _, got := tn.fsms[0].Store().ServiceInstances(nil, "big"); len(got) != writes {
		t.Fatalf("%d instances after the compaction, want %d", len(got), writes)
	}
}

func TestPageOutSchedule(t *testing.T) {
	type period struct {
		compacted bool
		stored    int64
		want      bool
	}
	const q, b = pageOutQuietBytes, pageOutBusyBytes
	for _, tc := range []struct {
		name    string
		periods []period
	}{
		{"idle: never", []period{{false, 0, false}, {false, 0, false}}},
		{"a compaction: at once", []period{{true, 0, true}, {false, 0, false}}},
		{"a compaction while writing", []period{{false, 100, false}, {true, 100, true}, {false, 0, false}}},
		{"writes then a pause: once", []period{{false, q / 2, false}, {false, q / 2, false}, {false, 0, true}, {false, 0, false}}},
		{"a few writes then a pause: never", []period{{false, q - 1, false}, {false, 0, false}, {false, 0, false}}},
		{"sparse writes add up", []period{{false, q / 2, false}, {false, 0, false}, {false, q / 2, false}, {false, 0, true}}},
		{"writes that never pause: every busy budget", []period{{false, b / 2, false}, {false, b / 2, true}, {false, b / 2, false}, {false, b / 2, true}}},
		{"the count starts again after a compaction", []period{{false, q, false}, {true, 0, true}, {false, 0, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s pageOutSchedule
			for i, p := range tc.periods {
				if got := s.due(p.compacted, p.stored); got != p.want {
					t.Fatalf("period %d (compacted %v, stored %d): due %v, want %v", i, p.compacted, p.stored, got, p.want)
				}
			}
		})
	}
}
