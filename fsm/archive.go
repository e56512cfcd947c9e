package fsm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-memdb"
)

// A snapshot archive is the file `beacon snapshot save` writes and
// `beacon snapshot restore` reads: a copy of the whole catalog that can be
// checked before anything is replaced. It is three parts:
//
//	beacon-snapshot\n                     ArchiveMagic (16 bytes)
//	{"format":1,...,"sha256":"..."}\n    ArchiveInfo as one JSON line (at most 4 KiB)
//	<Size bytes>                          the gzip-compressed snapshot stream
//
// The stream is exactly what FSM.Snapshot persists for Raft (a versioned
// header, then the records), so an archive restores through Raft's own
// snapshot machinery. The JSON line makes a file readable with `head -2`;
// Size and SHA256 let a reader refuse a truncated, extended or altered file
// before it touches the catalog.

// ArchiveMagic opens every snapshot archive.
const ArchiveMagic = "beacon-snapshot\n"

// ArchiveFormat is the version of the archive layout described above.
const ArchiveFormat = 1

// maxArchiveInfo bounds the JSON line, so a foreign file is refused after
// reading a few KiB rather than all of it.
const maxArchiveInfo = 4 << 10

// ArchiveInfo is the JSON line of a snapshot archive.
type ArchiveInfo struct {
	// Format is ArchiveFormat when written.
	Format int `json:"format"`
	// StreamVersion is the SnapshotVersion of the compressed stream.
	StreamVersion int `json:"stream_version"`
	// Index is a Raft index the catalog had applied when the archive was
	// taken; the archive contains every write up to it (and possibly a few
	// more that were applied while it was being taken).
	Index uint64 `json:"index"`
	// Node is the node that wrote the archive.
	Node string `json:"node,omitempty"`
	// Created is when the archive was written.
	Created time.Time `json:"created"`
	// Compression of the stream: "gzip".
	Compression string `json:"compression"`
	// Size is the length of the compressed stream in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the compressed stream.
	SHA256 string `json:"sha256"`
	// Counts says how many records of each kind the archive holds.
	Counts ArchiveCounts `json:"counts"`
}

// ArchiveCounts counts an archive's records by kind.
type ArchiveCounts struct {
	Services  int `json:"services"`
	Instances int `json:"instances"`
	Checks    int `json:"checks"`
	Nodes     int `json:"nodes"`
	Tokens    int `json:"tokens"`
}

// ArchiveMeta is what the caller of WriteArchive says about the archive.
type ArchiveMeta struct {
	// Index is an index the store has applied (for example one obtained
	// from a consistent read); see ArchiveInfo.Index.
	Index   uint64
	Node    string
	Created time.Time
}

// WriteArchive writes a snapshot archive of the store's current state to w.
// It reads one consistent generation of the store (a single read
// transaction) and is safe for concurrent use with applies. The archive is
// assembled in memory first, because the JSON line carries the size and
// checksum of what follows.
func (s *Store) WriteArchive(w io.Writer, meta ArchiveMeta) (ArchiveInfo, error) {
	snap := &snapshot{tx: s.read(nil), index: meta.Index}
	var payload bytes.Buffer
	zw := gzip.NewWriter(&payload)
	if err := snap.write(zw); err != nil {
		return ArchiveInfo{}, err
	}
	counts, err := countRecords(snap.tx)
	if err != nil {
		return ArchiveInfo{}, err
	}
	if err := zw.Close(); err != nil {
		return ArchiveInfo{}, fmt.Errorf("fsm: archive: compress: %w", err)
	}
	sum := sha256.Sum256(payload.Bytes())
	info := ArchiveInfo{
		Format: ArchiveFormat, StreamVersion: SnapshotVersion, Index: meta.Index,
		Node: meta.Node, Created: meta.Created.UTC(), Compression: "gzip",
		Size: int64(payload.Len()), SHA256: hex.EncodeToString(sum[:]), Counts: counts,
	}
	line, err := json.Marshal(info)
	if err != nil {
		return ArchiveInfo{}, err
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(ArchiveMagic)
	bw.Write(line)
	bw.WriteByte('\n')
	bw.Write(payload.Bytes())
	if err := bw.Flush(); err != nil {
		return ArchiveInfo{}, fmt.Errorf("fsm: archive: write: %w", err)
	}
	return info, nil
}

// countRecords counts the records of each kind that tx sees.
func countRecords(tx *memdb.Txn) (ArchiveCounts, error) {
	var out ArchiveCounts
	for _, t := range []struct {
		table string
		n     *int
	}{
		{tableServices, &out.Services},
		{tableNodes, &out.Nodes}, {tableTokens, &out.Tokens},
	} {
		it, err := tx.Get(t.table, "id")
		if err != nil {
			return out, err
		}
		for o := it.Next(); o != nil; o = it.Next() {
			*t.n++
		}
	}
	eachSet(tx, func(s *serviceSet) bool {
		out.Instances += s.set.Len()
		return true
	})
	eachCheck(tx, func(*Check) bool {
		out.Checks++
		return true
	})
	return out, nil
}

// Archive is a snapshot archive that was read and checked in full: its
// records are loaded in a store of their own, apart from the live catalog.
type Archive struct {
	// Info is the archive's JSON line.
	Info  ArchiveInfo
	state *storeState
}

// ReadArchive reads a snapshot archive from r and checks it completely: the
// magic, the format, that the stream is exactly Size bytes long with the
// recorded SHA-256, and that every record decodes into a store. maxSize
// bounds the compressed stream (0: no bound). Every problem is an error
// wrapping ErrBadSnapshot that says what is wrong.
func ReadArchive(r io.Reader, maxSize int64) (*Archive, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(ArchiveMagic))
	if n, err := io.ReadFull(br, magic); err != nil || string(magic) != ArchiveMagic {
		if n == 0 {
			return nil, fmt.Errorf("%w: the file is empty", ErrBadSnapshot)
		}
		return nil, fmt.Errorf("%w: not a beacon snapshot archive (it does not start with %q)", ErrBadSnapshot, ArchiveMagic)
	}
	line, err := readLine(br, maxArchiveInfo)
	if err != nil {
		return nil, fmt.Errorf("%w: archive header: %v", ErrBadSnapshot, err)
	}
	var info ArchiveInfo
	if err := json.Unmarshal(line, &info); err != nil {
		return nil, fmt.Errorf("%w: archive header: %v", ErrBadSnapshot, err)
	}
	switch {
	case info.Format != ArchiveFormat:
		return nil, fmt.Errorf("%w: archive format %d is not supported (this build reads format %d)", ErrBadSnapshot, info.Format, ArchiveFormat)
	case info.StreamVersion < OldestSnapshotVersion || info.StreamVersion > SnapshotVersion:
		return nil, fmt.Errorf("%w: snapshot stream version %d is not supported (this build reads versions %d to %d)", ErrBadSnapshot, info.StreamVersion, OldestSnapshotVersion, SnapshotVersion)
	case info.Compression != "gzip":
		return nil, fmt.Errorf("%w: compression %q is not supported", ErrBadSnapshot, info.Compression)
	case info.Size <= 0:
		return nil, fmt.Errorf("%w: archive header: size %d", ErrBadSnapshot, info.Size)
	case maxSize > 0 && info.Size > maxSize:
		return nil, fmt.Errorf("%w: the snapshot is %d bytes, more than the limit of %d", ErrBadSnapshot, info.Size, maxSize)
	}
	want, err := hex.DecodeString(info.SHA256)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("%w: archive header: bad sha256 %q", ErrBadSnapshot, info.SHA256)
	}
	payload := make([]byte, info.Size)
	if n, err := io.ReadFull(br, payload); err != nil {
		return nil, fmt.Errorf("%w: truncated: the archive holds %d of the %d bytes its header announces", ErrBadSnapshot, n, info.Size)
	}
	if n, _ := io.Copy(io.Discard, io.LimitReader(br, 1<<20)); n > 0 {
		return nil, fmt.Errorf("%w: %d unexpected bytes after the %d announced", ErrBadSnapshot, n, info.Size)
	}
	if got := sha256.Sum256(payload); !bytes.Equal(got[:], want) {
		return nil, fmt.Errorf("%w: checksum mismatch: the archive was altered or damaged", ErrBadSnapshot)
	}
	zr, err := gzip.NewReader(bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %v", ErrBadSnapshot, err)
	}
	st, index, err := readSnapshot(zr)
	if err != nil {
		return nil, err
	}
	if index != info.Index {
		return nil, fmt.Errorf("%w: stream index %d differs from the header's %d", ErrBadSnapshot, index, info.Index)
	}
	return &Archive{Info: info, state: st}, nil
}

// readLine reads up to and including '\n', at most limit bytes.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			return nil, errors.New("ends before its end of line")
		}
		if b == '\n' {
			return line, nil
		}
		if len(line) >= limit {
			return nil, fmt.Errorf("longer than %d bytes", limit)
		}
		line = append(line, b)
	}
}

// Counts counts the archive's records as loaded (not as its header claims).
func (a *Archive) Counts() (ArchiveCounts, error) {
	return countRecords(a.state.db.Txn(false))
}

// WriteSnapshot writes the archive's records as a Raft snapshot stream (what
// FSM.Restore reads) whose header says index. A node that restores it
// reports index as its applied index, so a restore through Raft can make the
// catalog's index agree with the Raft index of the restore.
func (a *Archive) WriteSnapshot(w io.Writer, index uint64) error {
	return (&snapshot{tx: a.state.db.Txn(false), index: index}).write(w)
}
