package lb

import (
	"bytes"
	"strconv"

	"github.com/beaconhq/beacon/connlimit"
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
	if len(path) == 0 || path[0] != '/' || bytes.Contains(path, []byte("//")) || !connlimit.PlainPath(path) {
		return false
	}
	if hasQuery && !connlimit.PlainQuery(query) {
		return false
	}
	r.path, r.query, r.hasQuery = reuseString(path, path0), reuseString(query, query0), hasQuery

	hosts, hopsSeen := 0, false
	var seen [hdrRefuse + 1]bool
	for pos := eol + 2; pos < len(head)-2; {
		name, value, next, ok := connlimit.NextHeader(head, pos)
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
			if hosts > 1 || !connlimit.PlainHost(value) {
				return false
			}
			r.host = reuseString(value, host0)
		case hdrContentLength:
			n, ok := connlimit.Digits(value, 6)
			if r.contentLength >= 0 || !ok {
				return false
			}
			r.contentLength = n
		case hdrConnection:
			close, ok := connlimit.ConnectionClose(value)
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
