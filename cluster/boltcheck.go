package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
)

// checkBoltFile refuses a raft.db that bolt cannot open safely because the
// file is shorter than its own last commit says it is: its tail was lost
// (a copy cut short, a file system that lost its last blocks, an operator's
// truncate). bbolt 1.3.5 does not check this: with NoFreelistSync it walks
// every reachable page at open in a goroutine of its own and panics there
// on the first page it finds zeroed ("freepages: failed to get all
// reachable pages"), which kills the agent with a stack trace rather than
// an error that names the file. Only the two meta pages are read.
//
// A missing or empty file is bolt's to create. A file whose meta pages are
// both unreadable is refused too (it is not a bolt database, or both its
// meta pages are damaged); bolt would refuse it with "invalid database".
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cluster: open raft log %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cluster: raft log %s: %w", path, err)
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	m0, ok0 := readBoltMeta(f, 0)
	page := int64(os.Getpagesize())
	if ok0 {
		page = int64(m0.pageSize)
	}
	m1, ok1 := readBoltMeta(f, page)
	var m boltMeta
	switch {
	case ok0 && ok1:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case ok0:
		m = m0
	case ok1:
		m = m1
	default:
		return fmt.Errorf("cluster: raft log %s (%d bytes) is not a bolt database or both its meta pages are damaged; "+
			"move it away and start this server with an empty --data-dir to have it catch up from the leader", path, size)
	}
	if need := int64(m.pgid) * int64(m.pageSize); need > size {
		return fmt.Errorf("cluster: raft log %s is truncated: it holds %d bytes, its last commit (transaction %d) needs %d; "+
			"the file lost its tail, and opening it would read pages that are gone. Restore the file, or move the data dir "+
			"away and start this server with an empty --data-dir to have it catch up from the leader", path, size, m.txid, need)
	}
	return nil
}

type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// The layout of bbolt's meta page (go.etcd.io/bbolt, page.go and db.go):
// a 16-byte page header, then magic, version, page size, flags (4 bytes
// each), the root bucket (16), the freelist page (8), the high-water page
// id pgid (8), the transaction id (8) and a FNV-64a checksum (8) of the
// meta's bytes before it. Integers are in the machine's byte order; bbolt
// files are little-endian on every platform Beacon ships for.
const (
	boltPageHeader = 16
	boltMetaSize   = 64
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
)

// readBoltMeta reads and checks the meta page at off.
func readBoltMeta(f *os.File, off int64) (boltMeta, bool) {
	var b [boltPageHeader + boltMetaSize]byte
	if _, err := f.ReadAt(b[:], off); err != nil { // io.EOF too: a file cut inside the page
		return boltMeta{}, false
	}
	meta := b[boltPageHeader:]
	le := binary.LittleEndian
	if le.Uint32(meta[0:]) != boltMagic || le.Uint32(meta[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(meta[:56])
	if h.Sum64() != le.Uint64(meta[56:]) {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: le.Uint32(meta[8:]), pgid: le.Uint64(meta[40:]), txid: le.Uint64(meta[48:])}
	if m.pageSize < 512 || m.pageSize > 1<<20 {
		return boltMeta{}, false
	}
	return m, true
}
