package lb

import (
	"bytes"
	"strconv"
	"strings"
)

// fastRequest is a request head the fast path proxies: parse accepts only
// heads whose meaning is beyond doubt and that forward byte for byte as the
// net/http path would forward them; for everything else it returns false
// and the connection goes to net/http, which parses, rejects or serves it
// as it always did.
type fastRequest struct {
	head   []byte // the whole head, through the empty line (peeked: valid until the reader moves)
	method string
	path   string // origin-form path: no '%', no "//", only characters sent as they are
	query  string // without '?'
	// hasQuery: the target had a '?' (perhaps with nothing after it, which
	// net/http's path sends on too).
	hasQuery bool
	host     string
	// lines are the header lines forwarded as they came (offsets into
	// head, CRLF included).
	lines   []span
	lineBuf [24]span

	contentLength int64
	hops          int
	close         bool // Connection: close
	teTrailers    bool
	idempotent    bool
	prefixSent    bool // the client sent X-Forwarded-Prefix
}

type span struct{ from, to int }

// Header kinds parse handles specially.
const (
	hdrPass = iota
	hdrDrop // hop-by-hop or a forwarding header the balancer sets itself
	hdrHost
	hdrContentLength
	hdrConnection
	hdrTe
	hdrHops
	hdrIdempotency
	hdrXIdempotency
	hdrUserAgent
	hdrPrefix
	hdrRefuse // for net/http: Transfer-Encoding, Expect, Upgrade, HTTP2-Settings
)

// lowerName returns name in lower case in buf, or nil when it is longer
// than any name the parsers treat specially.
func lowerName(name []byte, buf *[20]byte) []byte {
	if len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(name)]
}

// nextHeader reads the header line of head starting at pos (head ends in
// the empty line): its name, its value without surrounding blanks, and
// where the next line starts. ok is false for a line the fast path does not
// pass on as it is: obs-fold, no name, a space before the colon, control
// characters in the value.
func nextHeader(head []byte, pos int) (name, value []byte, next int, ok bool) {
	end := pos + bytes.Index(head[pos:], crlf)
	line := head[pos:end]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return nil, nil, 0, false
	}
	value = bytes.Trim(line[colon+1:], " \t")
	if !fieldValue(value) {
		return nil, nil, 0, false
	}
	return line[:colon], value, end + 2, true
}

// digits reads a length of at most max decimal digits (no sign, no
// blanks).
func digits(v []byte, max int) (int64, bool) {
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

// connectionClose reads a Connection header: close asks to close; ok is
// false when it names anything but close and keep-alive (headers to drop,
// which net/http's path handles).
func connectionClose(v []byte) (close, ok bool) {
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

func headerKind(name []byte) int {
	var buf [20]byte
	lower := lowerName(name, &buf)
	if lower == nil {
		return hdrPass
	}
	switch string(lower) {
	case "host":
		return hdrHost
	case "content-length":
		return hdrContentLength
	case "connection":
		return hdrConnection
	case "te":
		return hdrTe
	case "x-beacon-lb-hops":
		return hdrHops
	case "idempotency-key":
		return hdrIdempotency
	case "x-idempotency-key":
		return hdrXIdempotency
	case "user-agent":
		return hdrUserAgent
	case "x-forwarded-prefix":
		return hdrPrefix
	case "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "trailer",
		"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
		return hdrDrop
	case "transfer-encoding", "expect", "upgrade", "http2-settings":
		return hdrRefuse
	}
	return hdrPass
}

// maxFastBody is the largest request body the fast path takes (read whole
// before the request is sent, so that a retry can send it again).
const maxFastBody = 64 << 10

// parse reads head (a request head ending in an empty line, every line in
// CRLF) and reports whether the fast path may proxy it.
//
// r may be the one the connection's previous request used: parse clears it
// first, keeping only its path, query and host strings, which are used
// again when the new request has the same (saving their allocations).
func (r *fastRequest) parse(head []byte, cfg *Config) bool {
	path0, query0, host0 := r.path, r.query, r.host
	*r = fastRequest{}
	r.head = head
	r.lines = r.lineBuf[:0]
	r.contentLength = -1
	eol := bytes.Index(head, crlf)
	line := head[:eol]
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	switch string(line[:sp]) {
	case "GET":
		r.method, r.idempotent = "GET", true
	case "HEAD":
		r.method, r.idempotent = "HEAD", true
	case "POST":
		r.method = "POST"
	case "PUT":
		r.method, r.idempotent = "PUT", true
	case "DELETE":
		r.method, r.idempotent = "DELETE", true
	case "PATCH":
		r.method = "PATCH"
	case "OPTIONS":
		r.method, r.idempotent = "OPTIONS", true
	default:
		return false
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp < 0 || string(rest[sp+1:]) != "HTTP/1.1" {
		return false
	}
	target := rest[:sp]
	path, query, hasQuery := bytes.Cut(target, []byte{'?'})
	if len(path) == 0 || path[0] != '/' || bytes.Contains(path, []byte("//")) || !plainPath(path) {
		return false
	}
	if hasQuery && !plainQuery(query) {
		return false
	}
	r.path, r.query, r.hasQuery = reuseString(path, path0), reuseString(query, query0), hasQuery

	hosts, hopsSeen := 0, false
	var seen [hdrRefuse + 1]bool
	for pos := eol + 2; pos < len(head)-2; {
		name, value, next, ok := nextHeader(head, pos)
		if !ok {
			return false
		}
		from := pos
		pos = next
		kind := headerKind(name)
		switch kind {
		case hdrPass:
			r.lines = append(r.lines, span{from, pos})
		case hdrDrop:
		case hdrRefuse:
			return false
		case hdrHost:
			hosts++
			if hosts > 1 || !plainHost(value) {
				return false
			}
			r.host = reuseString(value, host0)
		case hdrContentLength:
			n, ok := digits(value, 6)
			if r.contentLength >= 0 || !ok {
				return false
			}
			r.contentLength = n
		case hdrConnection:
			close, ok := connectionClose(value)
			if !ok {
				return false
			}
			r.close = r.close || close
		case hdrTe:
			if tokenIn(string(value), "trailers") {
				r.teTrailers = true
			}
		case hdrHops:
			if hopsSeen {
				break // the first value counts, as in hops()
			}
			hopsSeen = true
			if n, err := strconv.Atoi(string(value)); err == nil && n > 0 {
				r.hops = n
			}
		case hdrIdempotency, hdrXIdempotency:
			// The first value counts, as Header.Get in idempotent().
			if !seen[kind] {
				seen[kind] = true
				if len(value) > 0 {
					r.idempotent = true
				}
			}
			r.lines = append(r.lines, span{from, pos})
		case hdrUserAgent:
			// Request.Write sends the first User-Agent only, and none
			// when it is empty.
			if !seen[hdrUserAgent] {
				seen[hdrUserAgent] = true
				if len(value) > 0 {
					r.lines = append(r.lines, span{from, pos})
				}
			}
		case hdrPrefix:
			r.prefixSent = true
			r.lines = append(r.lines, span{from, pos})
		}
	}
	if hosts != 1 {
		return false
	}
	if r.contentLength < 0 {
		r.contentLength = 0
	}
	if r.contentLength > 0 && (r.contentLength > int64(cfg.RetryBufferBytes) || r.contentLength > maxFastBody) {
		return false
	}
	if cfg.MaxHops > 0 && r.hops >= cfg.MaxHops {
		return false // net/http's path answers 508
	}
	return true
}

var crlf = []byte("\r\n")

// reuseString returns b as a string: prev when it holds the same bytes (no
// allocation: a client connection usually sends the same Host, and often
// the same path, request after request), else a new string.
func reuseString(b []byte, prev string) string {
	if string(b) == prev {
		return prev
	}
	return string(b)
}

// plainPath: characters a path keeps as they are in net/http's path
// (url.URL.EscapedPath returns such a path unchanged); no escapes, so the
// decoded path the routes match is the path itself.
func plainPath(p []byte) bool {
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

// plainQuery: a query net/http forwards unchanged (cleanQueryParams keeps
// it): no ';', valid escapes, printable ASCII.
func plainQuery(q []byte) bool {
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

func plainHost(h []byte) bool {
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

func isToken(b []byte) bool {
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

// fieldValue: visible characters, spaces, tabs and obs-text; no controls.
func fieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
