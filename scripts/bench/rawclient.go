package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// rawConn is the load loops' HTTP/1.1 client (-client raw, the default): one
// keep-alive connection per worker, the request written from a reused buffer
// and the answer's status line and headers parsed just enough to find where
// its body ends (Content-Length or chunked), the body discarded. On two
// cores the load generator shares the CPU with the servers, so a cheaper
// client leaves more of it to them: with the same servers and the same
// server CPU per read, Beacon's reads on one follower went from 17,500/s
// with net/http's client to 21,600/s with this one (etcd's from 7,850 to
// 8,500). Every system measured gets the same client. -client go keeps
// net/http's.
type rawConn struct {
	c    net.Conn
	br   *bufio.Reader
	wb   []byte
	host string
}

// maxRawHeader bounds the answer's header section.
const maxRawHeader = 64 << 10

// rawTarget splits an absolute http:// URL, as the bench's request makers
// build them, into its host:port and request-target.
func rawTarget(raw string) (host, target string, err error) {
	rest, ok := strings.CutPrefix(raw, "http://")
	if !ok {
		return "", "", fmt.Errorf("raw client: %q is not an http:// URL", raw)
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return "", "", fmt.Errorf("raw client: %q has no host", raw)
	}
	return host, "/" + path, nil
}

// do sends one request and reads its answer; it returns the status. A
// connection error, a deadline or an answer that ends the connection closes
// it; the next call dials again.
func (r *rawConn) do(ctx context.Context, method, rawURL string, body []byte) (int, error) {
	host, target, err := rawTarget(rawURL)
	if err != nil {
		return 0, err
	}
	if r.c != nil && r.host != host {
		r.close()
	}
	// A request in flight when the phase ends is let finish (the loop
	// stops after it): a deadline at the phase's end would fail it and count
	// it as a failure before the context reports the end.
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Add(2*time.Second).Before(deadline) {
		deadline = d.Add(2 * time.Second)
	}
	if r.c == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", host)
		if err != nil {
			return 0, err
		}
		r.c, r.host = c, host
		if r.br == nil {
			r.br = bufio.NewReaderSize(c, 16<<10)
		} else {
			r.br.Reset(c)
		}
	}
	if err := r.c.SetDeadline(deadline); err != nil {
		r.close()
		return 0, err
	}
	w := r.wb[:0]
	w = append(w, method...)
	w = append(w, ' ')
	w = append(w, target...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, host...)
	w = append(w, "\r\nUser-Agent: beacon-bench\r\n"...)
	if body != nil {
		w = append(w, "Content-Type: application/json\r\nContent-Length: "...)
		w = strconv.AppendInt(w, int64(len(body)), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, "\r\n"...)
	w = append(w, body...)
	r.wb = w
	if _, err := r.c.Write(w); err != nil {
		r.close()
		return 0, err
	}
	status, keep, err := readRawResponse(r.br)
	if err != nil || !keep {
		r.close()
	}
	return status, err
}

func (r *rawConn) close() {
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
}

var errRawFraming = errors.New("raw client: malformed answer")

// readRawResponse reads one HTTP/1.1 answer from br and discards its body;
// keep says whether the connection can carry the next request.
func readRawResponse(br *bufio.Reader) (status int, keep bool, err error) {
	line, err := rawLine(br)
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, errRawFraming
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errRawFraming
	}
	keep = line[7] == '1'
	length, chunked := int64(-1), false
	total := len(line)
	for {
		h, err := rawLine(br)
		if err != nil {
			return status, false, err
		}
		if total += len(h); total > maxRawHeader {
			return status, false, errRawFraming
		}
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return status, false, errRawFraming
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(v), 10, 64)
			if err != nil || length < 0 {
				return status, false, errRawFraming
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			}
		}
	}
	switch {
	case status == 204 || status == 304 || status/100 == 1:
	case chunked:
		if err := discardChunked(br); err != nil {
			return status, false, err
		}
	case length >= 0:
		if _, err := br.Discard(int(length)); err != nil {
			return status, false, err
		}
	default: // the body ends with the connection
		_, _ = io.Copy(io.Discard, br)
		keep = false
	}
	return status, keep, nil
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := rawLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return errRawFraming
		}
		if n == 0 {
			for { // trailers, then the blank line
				t, err := rawLine(br)
				if err != nil {
					return err
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n)); err != nil {
			return err
		}
		if crlf, err := rawLine(br); err != nil || len(crlf) != 0 {
			return errRawFraming
		}
	}
}

// rawLine reads one CRLF-terminated line, without it; the slice is valid
// until the next read.
func rawLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errRawFraming
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}
