package cluster

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Raft indexes travel in RPC answers (a forwarded write's index, a read
// index, a restore's index) as a number: a zero byte, then the index as a
// uvarint. Nodes of earlier releases answered decimal text, which never
// starts with a zero byte, so parseIndex reads both while a cluster is
// upgraded one node at a time.

// appendIndex appends the encoding of idx to b.
func appendIndex(b []byte, idx uint64) []byte {
	return binary.AppendUvarint(append(b, 0), idx)
}

// parseIndex decodes an index encoded by appendIndex (or decimal text).
func parseIndex(b []byte) (uint64, error) {
	if len(b) > 0 && b[0] == 0 {
		idx, n := binary.Uvarint(b[1:])
		if n <= 0 || n != len(b)-1 || n != len(binary.AppendUvarint(nil, idx)) {
			return 0, fmt.Errorf("cluster: bad index %x", b)
		}
		return idx, nil
	}
	idx, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cluster: bad index %q", b)
	}
	return idx, nil
}
