package api

import (
	"bytes"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// decodeRegistration decodes a registration body: the common shape on a
// hand-written path, anything else on decodeJSON's.
//
// decodeJSON runs two passes over a body (checkJSON's scan, then
// encoding/json's reflection) and was about 7 % of a node's CPU under a
// registration load (docs/benchmarks.md). Most bodies are one flat object of
// the fields address, port, tags, meta, version, weight and node, in ASCII
// without escapes: fastRegistration decodes exactly those, and gives up on
// anything else (another or a differently cased key, a duplicate, an
// escape, a non-ASCII byte, null, a number that is not a plain integer, a
// check's header, ...), which then goes through decodeJSON from the start. So every
// error, and every body the fast path does not know, gets decodeJSON's
// answer; FuzzFastRegistration holds the fast path to decodeJSON's result
// wherever it answers.
func decodeRegistration(body []byte, v *client.Registration) error {
	var fast client.Registration
	if fastRegistration(body, &fast) {
		*v = fast
		return nil
	}
	return decodeJSON(body, v)
}

// maxFastMeta bounds the meta entries the fast path takes (they are checked
// pairwise for keys equal but for case, which checkJSON refuses).
const maxFastMeta = 32

// fastRegistration decodes body into v and reports true only when
// decodeJSON(body, v) would give the same v and no error. On false, v may
// hold part of the body and must be dropped.
func fastRegistration(body []byte, v *client.Registration) bool {
	d := regDecoder{b: body}
	d.space()
	if !d.take('{') {
		return false
	}
	var seen uint8
	d.space()
	if d.take('}') {
		return d.end()
	}
	for {
		d.space()
		key, ok := d.str()
		if !ok {
			return false
		}
		d.space()
		if !d.take(':') {
			return false
		}
		d.space()
		var bit uint8
		switch string(key) {
		case "address":
			bit = 1
			v.Address, ok = d.strValue()
		case "port":
			bit = 2
			v.Port, ok = d.int()
		case "tags":
			bit = 4
			v.Tags, ok = d.strings()
		case "meta":
			bit = 8
			v.Meta, ok = d.meta()
		case "version":
			bit = 16
			v.Version, ok = d.strValue()
		case "weight":
			bit = 32
			v.Weight, ok = d.int()
		case "node":
			bit = 64
			v.Node, ok = d.strValue()
		case "checks":
			bit = 128
			v.Checks, ok = d.checks()
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		d.space()
		if d.take('}') {
			return d.end()
		}
		if !d.take(',') {
			return false
		}
	}
}

// regDecoder walks a body for fastRegistration; every method reports false
// on anything outside the fast path's subset of JSON.
type regDecoder struct {
	b []byte
	i int
}

func (d *regDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *regDecoder) take(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// end reports whether only whitespace follows.
func (d *regDecoder) end() bool {
	d.space()
	return d.i == len(d.b)
}

// str reads a string of printable ASCII without escapes and returns its
// bytes (in body).
func (d *regDecoder) str() ([]byte, bool) {
	if !d.take('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		d.i++
	}
	return nil, false
}

func (d *regDecoder) strValue() (string, bool) {
	s, ok := d.str()
	return string(s), ok
}

// int reads an integer without fraction or exponent, of at most 18 digits
// (no overflow of an int64).
func (d *regDecoder) int() (int, bool) {
	neg := d.take('-')
	start := d.i
	n := 0
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		n = n*10 + int(d.b[d.i]-'0')
		d.i++
	}
	digits := d.i - start
	if digits == 0 || digits > 18 || (digits > 1 && d.b[start] == '0') {
		return 0, false
	}
	// A fraction or an exponent would follow; JSON allows no other byte
	// after a number but a separator, which the caller checks.
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// strings reads an array of strings; [] gives an empty slice, as
// encoding/json does.
func (d *regDecoder) strings() ([]string, bool) {
	if !d.take('[') {
		return nil, false
	}
	out := []string{}
	d.space()
	if d.take(']') {
		return out, true
	}
	for {
		d.space()
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, string(s))
		d.space()
		if d.take(']') {
			return out, true
		}
		if !d.take(',') {
			return nil, false
		}
	}
}

// meta reads an object of strings; {} gives an empty map, as encoding/json
// does. Keys equal but for case (checkJSON's duplicates) and more than
// maxFastMeta entries are left to decodeJSON.
func (d *regDecoder) meta() (map[string]string, bool) {
	if !d.take('{') {
		return nil, false
	}
	var keys [maxFastMeta][]byte
	var vals [maxFastMeta][]byte
	n := 0
	d.space()
	if !d.take('}') {
		for {
			if n == maxFastMeta {
				return nil, false
			}
			d.space()
			k, ok := d.str()
			if !ok {
				return nil, false
			}
			for _, prev := range keys[:n] {
				if bytes.EqualFold(prev, k) {
					return nil, false
				}
			}
			d.space()
			if !d.take(':') {
				return nil, false
			}
			d.space()
			val, ok := d.str()
			if !ok {
				return nil, false
			}
			keys[n], vals[n] = k, val
			n++
			d.space()
			if d.take('}') {
				break
			}
			if !d.take(',') {
				return nil, false
			}
		}
	}
	m := make(map[string]string, n)
	for j := range n {
		m[string(keys[j])] = string(vals[j])
	}
	return m, true
}

// maxFastChecks bounds the checks the fast path takes.
const maxFastChecks = 16

// checks reads an array of check objects; [] gives an empty slice, as
// encoding/json does.
func (d *regDecoder) checks() ([]client.CheckDefinition, bool) {
	if !d.take('[') {
		return nil, false
	}
	out := []client.CheckDefinition{}
	d.space()
	if d.take(']') {
		return out, true
	}
	for len(out) < maxFastChecks {
		d.space()
		out = append(out, client.CheckDefinition{})
		if !d.check(&out[len(out)-1]) {
			return nil, false
		}
		d.space()
		if d.take(']') {
			return out, true
		}
		if !d.take(',') {
			return nil, false
		}
	}
	return nil, false
}

// check reads one check object. A header map is left to decodeJSON.
func (d *regDecoder) check(c *client.CheckDefinition) bool {
	if !d.take('{') {
		return false
	}
	var seen uint16
	d.space()
	if d.take('}') {
		return true
	}
	for {
		d.space()
		key, ok := d.str()
		if !ok {
			return false
		}
		d.space()
		if !d.take(':') {
			return false
		}
		d.space()
		var bit uint16
		switch string(key) {
		case "name":
			bit = 1 << 0
			c.Name, ok = d.strValue()
		case "type":
			bit = 1 << 1
			c.Type, ok = d.strValue()
		case "http":
			bit = 1 << 2
			c.HTTP, ok = d.strValue()
		case "method":
			bit = 1 << 3
			c.Method, ok = d.strValue()
		case "tls_skip_verify":
			bit = 1 << 4
			c.TLSSkipVerify, ok = d.bool()
		case "tcp":
			bit = 1 << 5
			c.TCP, ok = d.strValue()
		case "grpc":
			bit = 1 << 6
			c.GRPC, ok = d.strValue()
		case "grpc_service":
			bit = 1 << 7
			c.GRPCService, ok = d.strValue()
		case "ttl":
			bit = 1 << 8
			c.TTL, ok = d.duration()
		case "interval":
			bit = 1 << 9
			c.Interval, ok = d.duration()
		case "timeout":
			bit = 1 << 10
			c.Timeout, ok = d.duration()
		case "failures_before_critical":
			bit = 1 << 11
			c.FailuresBeforeCritical, ok = d.int()
		case "successes_before_passing":
			bit = 1 << 12
			c.SuccessesBeforePassing, ok = d.int()
		case "initial_status":
			bit = 1 << 13
			c.InitialStatus, ok = d.strValue()
		case "deregister_critical_after":
			bit = 1 << 14
			c.DeregisterCriticalAfter, ok = d.duration()
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		d.space()
		if d.take('}') {
			return true
		}
		if !d.take(',') {
			return false
		}
	}
}

// bool reads true or false.
func (d *regDecoder) bool() (bool, bool) {
	switch {
	case bytes.HasPrefix(d.b[d.i:], []byte("true")):
		d.i += 4
		return true, true
	case bytes.HasPrefix(d.b[d.i:], []byte("false")):
		d.i += 5
		return false, true
	}
	return false, false
}

// duration reads a string that time.ParseDuration takes, as
// client.Duration's UnmarshalJSON does.
func (d *regDecoder) duration() (client.Duration, bool) {
	s, ok := d.str()
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(string(s))
	if err != nil {
		return 0, false
	}
	return client.Duration(v), true
}
