package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// readAll reads what io.ReadAll reads, and fails as it fails, whatever the
// size it was told and however the reader hands the bytes over.
func TestReadAllReadsAsIOReadAll(t *testing.T) {
	boom := errors.New("boom")
	for _, n := range []int{0, 1, 100, 511, 512, 513, 4096} {
		data := bytes.Repeat([]byte("abcdefg"), n/7+1)[:n]
		readers := map[string]func() io.Reader{
			"plain":    func() io.Reader { return bytes.NewReader(data) },
			"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
			"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
			"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
			"error":    func() io.Reader { return io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)) },
		}
		for name, mk := range readers {
			want, wantErr := io.ReadAll(mk())
			for _, size := range []int64{-1, 0, 1, int64(n) - 1, int64(n), int64(n) + 1, 2 << 20} {
				t.Run(fmt.Sprintf("%d bytes, %s, told %d", n, name, size), func(t *testing.T) {
					got, err := readAll(mk(), size)
					if !bytes.Equal(got, want) || !errors.Is(err, wantErr) && err != wantErr {
						t.Fatalf("read %d bytes (%v), io.ReadAll %d (%v)", len(got), err, len(want), wantErr)
					}
				})
			}
		}
	}
}
