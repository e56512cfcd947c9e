package connlimit

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
)

// The HTTP/1.1 head reading shared by the servers that serve plain requests
// themselves before net/http (the balancer's fast path, lb/fastserve.go, and
// the API's, api/fastserve.go): each reads a request head without
// consuming it, accepts only what it is sure of, and hands anything else,
// with the bytes already read, to an http.Server through a Handoff.

var crlf = []byte("\r\n")

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// ErrNotPlain: the head is not one a fast path reads; it is for net/http.
var ErrNotPlain = errors.New("connlimit: not a plain HTTP/1.1 head")

// PeekHead returns the request head (through the empty line) without
// consuming it. ErrNotPlain: the head is longer than the buffer or has a
// line that does not end in CRLF. more, if not nil, is called once before
// the first read the head needs beyond what is buffered (to set its
// deadline: a head that came whole needs none).
func PeekHead(br *bufio.Reader, more func()) ([]byte, error) {
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		for i := from; i < len(buf); i++ {
			if buf[i] != '\n' {
				continue
			}
			if i == 0 || buf[i-1] != '\r' {
				return nil, ErrNotPlain // a bare LF: let net/http judge it
			}
			if i >= 3 && buf[i-2] == '\n' && buf[i-3] == '\r' {
				return buf[:i+1], nil
			}
		}
		from = len(buf)
		if len(buf) >= br.Size() {
			return nil, ErrNotPlain
		}
		if more != nil {
			more()
			more = nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, ErrNotPlain
			}
			return nil, err
		}
	}
}

// Preface is the HTTP/2 client connection preface (RFC 9113, section 3.4),
// the first bytes of a cleartext HTTP/2 connection with prior knowledge.
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// PeekPreface reports whether the connection br reads starts with the
// HTTP/2 client preface, without consuming anything. It waits for more
// bytes only while those read so far are a prefix of the preface: a
// request whose first bytes differ (every HTTP/1 request, however short)
// is answered false at once with what is buffered. An error is the read's
// (its deadline passed, the client left part-way through a prefix of the
// preface). br must hold at least len(Preface) bytes.
//
// net/http's server, serving cleartext HTTP/2 (Protocols.UnencryptedHTTP2),
// instead peeks the preface's first 14 bytes before reading any request:
// a connection whose whole request is shorter ("GET /\r\n\r\n") waits there
// for the read header timeout before it is answered. The fast paths sniff
// with PeekPreface and hand HTTP/1 connections to a server without
// UnencryptedHTTP2.
func PeekPreface(br *bufio.Reader) (bool, error) {
	for {
		n := min(br.Buffered(), len(Preface))
		buf, _ := br.Peek(n)
		if string(buf) != Preface[:n] {
			return false, nil
		}
		if n == len(Preface) {
			return true, nil
		}
		if _, err := br.Peek(n + 1); err != nil {
			return false, err
		}
	}
}

// NextHeader reads the header line of head starting at pos (head ends in
// the empty line): its name, its value without surrounding blanks, and
// where the next line starts. ok is false for a line the fast path does not
// pass on as it is: obs-fold, no name, a space before the colon, control
// characters in the value.
func NextHeader(head []byte, pos int) (name, value []byte, next int, ok bool) {
	end := pos + bytes.Index(head[pos:], crlf)
	line := head[pos:end]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !IsToken(line[:colon]) {
		return nil, nil, 0, false
	}
	value = bytes.Trim(line[colon+1:], " \t")
	if !FieldValue(value) {
		return nil, nil, 0, false
	}
	return line[:colon], value, end + 2, true
}

// Digits reads a length of at most max decimal Digits (no sign, no
// blanks).
func Digits(v []byte, max int) (int64, bool) {
	if len(v) == 0 || len(v) > max {
		return 0, false
	}
	n := int64(0)
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// ConnectionClose reads a Connection header: close asks to close; ok is
// false when it names anything but close and keep-alive (headers to drop,
// which net/http's path handles).
func ConnectionClose(v []byte) (close, ok bool) {
	for _, tok := range strings.Split(string(v), ",") {
		switch strings.ToLower(strings.TrimSpace(tok)) {
		case "close":
			close = true
		case "keep-alive", "":
		default:
			return false, false
		}
	}
	return close, true
}

// PlainPath: characters a path keeps as they are in net/http's path
// (url.URL.EscapedPath returns such a path unchanged); no escapes, so the
// decoded path the routes match is the path itself.
func PlainPath(p []byte) bool {
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// PlainQuery: a query net/http forwards unchanged (cleanQueryParams keeps
// it): no ';', valid escapes, printable ASCII.
func PlainQuery(q []byte) bool {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == ';', c == '#', c <= ' ', c >= 0x7f:
			return false
		case c == '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func PlainHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

func IsToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// FieldValue: visible characters, spaces, tabs and obs-text; no controls.
func FieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
