package connlimit

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

// chunkReader hands its data out in the chunks given, then fails every
// read with errNoMore: the client has sent nothing else yet.
type chunkReader struct {
	t      *testing.T
	chunks []string
	sent   string // what was handed out so far
}

var errNoMore = errors.New("nothing more sent")

func (r *chunkReader) Read(p []byte) (int, error) {
	if !partOfPreface(r.sent) {
		// What came already tells: a read now would wait for bytes
		// that may never come.
		r.t.Fatalf("read again after %q", r.sent)
	}
	if len(r.chunks) == 0 {
		return 0, errNoMore
	}
	n := copy(p, r.chunks[0])
	r.sent += r.chunks[0][:n]
	if r.chunks[0] = r.chunks[0][n:]; r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// FuzzPeekPreface: PeekPreface says true exactly for a connection that
// opens with the HTTP/2 preface, false for any other, consumes nothing,
// and waits for (reads) more only while what came is a proper prefix of
// the preface: a short HTTP/1 request is never kept waiting for bytes
// that will not come.
func FuzzPeekPreface(f *testing.F) {
	for _, seed := range []struct {
		data string
		cuts uint64
	}{
		{Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", 0},
		{Preface, 0x0101010101010101}, // byte by byte, then in pieces
		{"GET /\r\n\r\n", 0},
		{"X\r\n\r\n", 0},
		{"GET / HTTP/1.0\r\n\r\n", 3},
		{"PRI\r\n\r\n", 1},
		{"PRI * HTTP/2.0\r\n\r\n", 0},             // a prefix: waits
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\x00", 0}, // differs at the last byte
		{"", 0},
	} {
		f.Add(seed.data, seed.cuts)
	}
	f.Fuzz(func(t *testing.T, data string, cuts uint64) {
		// cuts chooses the chunk sizes (1-8 bytes, then the rest).
		r := &chunkReader{t: t}
		for rest := data; rest != ""; cuts >>= 3 {
			n := len(rest)
			if cuts != 0 {
				n = min(n, int(cuts&7)+1)
			}
			r.chunks = append(r.chunks, rest[:n])
			rest = rest[n:]
		}
		br := bufio.NewReaderSize(r, 64)
		h2, err := PeekPreface(br)
		switch {
		case partOfPreface(data):
			if !errors.Is(err, errNoMore) {
				t.Fatalf("%q, a part of the preface: %v %v, want the read's error", data, h2, err)
			}
		case err != nil:
			t.Fatalf("%q: error %v", data, err)
		case h2 != strings.HasPrefix(data, Preface):
			t.Fatalf("%q: h2 %v", data, h2)
		}
		if got, _ := br.Peek(br.Buffered()); string(got) != r.sent {
			t.Fatalf("%q: consumed: buffered %q of %q read", data, got, r.sent)
		}
	})
}

// partOfPreface reports whether s is a proper prefix of the preface (the
// empty string included): too little to tell HTTP/2 from HTTP/1.
func partOfPreface(s string) bool {
	return len(s) < len(Preface) && strings.HasPrefix(Preface, s)
}
