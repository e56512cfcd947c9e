package fsm_test

import (
	"io"
	"testing"

	"github.com/beaconhq/beacon/fsm"
)

// BenchmarkSnapshotPersist measures writing a snapshot of a catalog of
// 100,000 instances shaped like the bench's (two tags, one meta key, a
// version, no checks): the work each node does every SnapshotThreshold
// entries while the catalog grows.
//
//	go test -run '^$' -bench SnapshotPersist -benchmem ./fsm/
func BenchmarkSnapshotPersist(b *testing.B) {
	const n = 100_000
	for _, tc := range catalogShapes {
		b.Run(tc.name, func(b *testing.B) {
			f := fsm.New(nil)
			applyBatches(f, 1, benchRegistrationsWith(b, n, tc.check))
			b.ReportAllocs()
			b.ResetTimer()
			var size int64
			for range b.N {
				snap, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				sink := &countingSink{}
				if err := snap.Persist(sink); err != nil {
					b.Fatal(err)
				}
				size = sink.n
			}
			b.ReportMetric(float64(size)/n, "B/instance")
		})
	}
}

type countingSink struct{ n int64 }

func (s *countingSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *countingSink) Close() error                { return nil }
func (s *countingSink) ID() string                  { return "count" }
func (s *countingSink) Cancel() error               { return nil }

var _ io.Writer = (*countingSink)(nil)
