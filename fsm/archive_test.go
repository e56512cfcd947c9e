package fsm_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

var archiveTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func writeArchive(t testing.TB, s *fsm.Store, index uint64) ([]byte, fsm.ArchiveInfo) {
	t.Helper()
	var buf bytes.Buffer
	info, err := s.WriteArchive(&buf, fsm.ArchiveMeta{Index: index, Node: "s1", Created: archiveTime})
	if err != nil {
		t.Fatalf("WriteArchive: %v", err)
	}
	return buf.Bytes(), info
}

func TestArchiveRoundTripRestoresEveryRecordAtTheIndexAskedFor(t *testing.T) {
	src := populate(t)
	want := dumpStore(src.Store())
	b, info := writeArchive(t, src.Store(), src.AppliedIndex())

	if !bytes.HasPrefix(b, []byte(fsm.ArchiveMagic)) {
		t.Fatalf("archive starts with %q", b[:min(len(b), 20)])
	}
	wantCounts := fsm.ArchiveCounts{Services: len(want.Services), Instances: len(want.Instances),
		Checks: len(want.Checks), Nodes: len(want.Nodes), Tokens: len(want.Tokens)}
	if info.Format != fsm.ArchiveFormat || info.Index != src.AppliedIndex() || info.Node != "s1" ||
		!info.Created.Equal(archiveTime) || info.Counts != wantCounts || info.Compression != "gzip" {
		t.Fatalf("info = %+v, want counts %+v", info, wantCounts)
	}

	ar, err := fsm.ReadArchive(bytes.NewReader(b), 0)
	if err != nil {
		t.Fatalf("ReadArchive: %v", err)
	}
	if ar.Info != info {
		t.Fatalf("read info %+v, written %+v", ar.Info, info)
	}
	if got, err := ar.Counts(); err != nil || got != wantCounts {
		t.Fatalf("Counts() = %+v, %v; want %+v", got, err, wantCounts)
	}

	// Restored through the Raft snapshot stream at a later index, as a
	// cluster-wide restore does: same records, and the new applied index.
	var stream bytes.Buffer
	if err := ar.WriteSnapshot(&stream, 5000); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(t)
	fsmtest.MustApply(t, dst, 1, fsmtest.Register(t, "stale-1", "stale"))
	abandoned := dst.Store().AbandonCh()
	restore(t, dst, stream.Bytes())
	assertSameStore(t, want, dumpStore(dst.Store()))
	if dst.AppliedIndex() != 5000 {
		t.Fatalf("applied index after restore = %d, want 5000", dst.AppliedIndex())
	}
	select {
	case <-abandoned:
	default:
		t.Fatal("readers blocked on the old store were not woken")
	}
}

func TestArchiveOfAnEmptyStoreRestoresAnEmptyStore(t *testing.T) {
	b, info := writeArchive(t, newFSM(t).Store(), 1)
	if info.Counts != (fsm.ArchiveCounts{}) {
		t.Fatalf("counts of an empty store: %+v", info.Counts)
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(b), 0)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := ar.WriteSnapshot(&stream, 9); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(t)
	fsmtest.MustApply(t, dst, 1, fsmtest.Register(t, "web-1", "web"))
	restore(t, dst, stream.Bytes())
	if _, insts := dst.Store().Instances(nil); len(insts) != 0 {
		t.Fatalf("instances after restoring an empty archive: %d", len(insts))
	}
}

// reseal rewrites an archive's JSON line with edit applied, keeping the
// payload (and so its checksum) as it is.
func reseal(t *testing.T, b []byte, edit func(info map[string]any)) []byte {
	t.Helper()
	rest := b[len(fsm.ArchiveMagic):]
	nl := bytes.IndexByte(rest, '\n')
	var info map[string]any
	if err := json.Unmarshal(rest[:nl], &info); err != nil {
		t.Fatal(err)
	}
	edit(info)
	line, _ := json.Marshal(info)
	out := append([]byte(fsm.ArchiveMagic), line...)
	out = append(out, '\n')
	return append(out, rest[nl+1:]...)
}

// withPayload replaces an archive's payload and seals it with a correct
// size and checksum, so only the payload's content is wrong.
func withPayload(t *testing.T, b, payload []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(payload)
	out := reseal(t, b, func(info map[string]any) {
		info["size"] = len(payload)
		info["sha256"] = hex.EncodeToString(sum[:])
	})
	headerEnd := len(fsm.ArchiveMagic) + bytes.IndexByte(out[len(fsm.ArchiveMagic):], '\n') + 1
	return append(bytes.Clone(out[:headerEnd]), payload...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// An archive saved before instances were keyed by service (stream version
// 1) is read and converted, and written again as version 2.
func TestReadArchiveReadsAVersion1Stream(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "snapshot-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	index := populate(t).AppliedIndex() // the fixture was taken from populate
	good, _ := writeArchive(t, newFSM(t).Store(), index)
	file := reseal(t, withPayload(t, good, gz(v1)), func(i map[string]any) { i["stream_version"] = 1 })
	a, err := fsm.ReadArchive(bytes.NewReader(file), 0)
	if err != nil {
		t.Fatalf("ReadArchive: %v", err)
	}
	var stream bytes.Buffer
	if err := a.WriteSnapshot(&stream, index+10); err != nil {
		t.Fatal(err)
	}
	f := newFSM(t)
	restore(t, f, stream.Bytes())
	if c := f.Store().Check(nil, "web:web-1:full"); c == nil || c.Service != "web" || c.Instance != "web-1" {
		t.Fatalf("check web:web-1:full = %+v, want the converted version-1 check web-1:full", c)
	}
	var got header
	snapshotHeaderOf(t, stream.Bytes(), &got)
	if got.Version != fsm.SnapshotVersion || got.Index != index+10 {
		t.Fatalf("rewritten stream header %+v, want version %d at index %d", got, fsm.SnapshotVersion, index+10)
	}
}

// snapshotHeaderOf decodes the header that opens a snapshot stream.
func snapshotHeaderOf(t *testing.T, stream []byte, h *header) {
	t.Helper()
	hd := &codec.MsgpackHandle{}
	if err := codec.NewDecoderBytes(stream, hd).Decode(h); err != nil {
		t.Fatalf("snapshot header: %v", err)
	}
}

func TestReadArchiveRefusesDamagedOrForeignFilesSayingWhy(t *testing.T) {
	good, _ := writeArchive(t, populate(t).Store(), 40)
	headerEnd := len(fsm.ArchiveMagic) + bytes.IndexByte(good[len(fsm.ArchiveMagic):], '\n') + 1
	flipped := bytes.Clone(good)
	flipped[len(flipped)-10] ^= 0x40

	cases := []struct {
		name    string
		file    []byte
		maxSize int64
		want    string
	}{
		{"an empty file is refused", nil, 0, "empty"},
		{"a foreign file is refused by its magic", []byte("PK\x03\x04 this is a zip file, not a snapshot"), 0, "not a beacon snapshot archive"},
		{"a file shorter than the magic is refused", []byte("beacon-sn"), 0, "not a beacon snapshot archive"},
		{"a file cut inside its header line is refused", good[:len(fsm.ArchiveMagic)+20], 0, "ends before its end of line"},
		{"a header line that is not JSON is refused", append([]byte(fsm.ArchiveMagic), "format=1\n"...), 0, "archive header"},
		{"a header line longer than 4 KiB is refused", append([]byte(fsm.ArchiveMagic), strings.Repeat("x", 5000)+"\n"...), 0, "longer than"},
		{"a file cut inside its payload is refused as truncated", good[:len(good)-100], 0, "truncated"},
		{"a file cut right after its header is refused as truncated", good[:headerEnd], 0, "truncated"},
		{"bytes after the payload are refused", append(bytes.Clone(good), "extra"...), 0, "unexpected bytes"},
		{"a changed payload byte fails the checksum", flipped, 0, "checksum mismatch"},
		{"a future archive format is refused", reseal(t, good, func(i map[string]any) { i["format"] = 2 }), 0, "archive format 2 is not supported"},
		{"a future stream version is refused", reseal(t, good, func(i map[string]any) { i["stream_version"] = 7 }), 0, "stream version 7"},
		{"an unknown compression is refused", reseal(t, good, func(i map[string]any) { i["compression"] = "zstd" }), 0, `compression "zstd"`},
		{"a malformed checksum is refused", reseal(t, good, func(i map[string]any) { i["sha256"] = "xyz" }), 0, "bad sha256"},
		{"a payload above the size limit is refused before it is read", good, 16, "more than the limit of 16"},
		{"a payload that is not gzip is refused", withPayload(t, good, []byte("not gzip at all")), 0, "decompress"},
		{"a gzip payload that is not a snapshot stream is refused", withPayload(t, good, gz([]byte("\x01\x02garbage"))), 0, "bad snapshot"},
		{"a header index that disagrees with the stream is refused", reseal(t, good, func(i map[string]any) { i["index"] = 41 }), 0, "differs from the header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fsm.ReadArchive(bytes.NewReader(tc.file), tc.maxSize)
			if err == nil {
				t.Fatal("ReadArchive accepted the file")
			}
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestWriteArchiveIsConsistentUnderConcurrentApplies takes archives while
// registrations are applied (run with -race): each archive must read back
// and hold a prefix of the registrations, never a torn state.
func TestWriteArchiveIsConsistentUnderConcurrentApplies(t *testing.T) {
	f := newFSM(t)
	const n = 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= n; i++ {
			fsmtest.MustApply(t, f, uint64(i), fsmtest.Register(t, fmt.Sprintf("web-%03d", i), "web"))
		}
	}()
	for range 20 {
		b, info := writeArchive(t, f.Store(), f.AppliedIndex())
		ar, err := fsm.ReadArchive(bytes.NewReader(b), 0)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := ar.Counts()
		if c.Instances < int(info.Index) || (c.Instances > 0 && c.Services != 1) {
			t.Fatalf("archive at index %d holds %+v", info.Index, c)
		}
	}
	wg.Wait()
}

// BenchmarkWriteArchive measures saving a catalog of n instances (each with
// tags, meta, a version and one HTTP check, in services of 100 instances)
// and reports the archive's size. Reading it back (ReadArchive checks and
// decodes every record) is BenchmarkReadArchive.
func BenchmarkWriteArchive(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		f := archiveBenchFSM(b, n)
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			var size int
			for b.Loop() {
				var buf bytes.Buffer
				if _, err := f.Store().WriteArchive(&buf, fsm.ArchiveMeta{Index: f.AppliedIndex()}); err != nil {
					b.Fatal(err)
				}
				size = buf.Len()
			}
			b.ReportMetric(float64(size), "archive-bytes")
			b.ReportMetric(float64(size)/float64(n), "bytes/instance")
		})
	}
}

func BenchmarkReadArchive(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		f := archiveBenchFSM(b, n)
		var buf bytes.Buffer
		if _, err := f.Store().WriteArchive(&buf, fsm.ArchiveMeta{Index: f.AppliedIndex()}); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := fsm.ReadArchive(bytes.NewReader(buf.Bytes()), 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func archiveBenchFSM(b *testing.B, n int) *fsm.FSM {
	b.Helper()
	f := fsm.New(nil)
	for i := range n {
		svc := fmt.Sprintf("service-%03d", i/100)
		id := fmt.Sprintf("%s-%05d", svc, i)
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		fsmtest.MustApply(b, f, uint64(i+1), fsmtest.Register(b, id, svc, func(r *fsm.RegisterRequest) {
			r.Address, r.Port, r.Version, r.Time = addr, 8080, "1.4.2", t0
			r.Tags = []string{"prod", "v1"}
			r.Meta = map[string]string{"zone": "eu-west-1a", "team": "payments"}
			r.Checks = []fsm.CheckDefinition{fsmtest.HTTPCheck("http", "http://"+addr+":8080/healthz", fsm.Passing)}
		}))
	}
	return f
}
