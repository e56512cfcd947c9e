package consul_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

func strconvU(i uint64) string { return strconv.FormatUint(i, 10) }

func hexHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
