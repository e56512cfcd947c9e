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
	ok := d.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "address":
			v.Address, ok = d.strValue()
		case "port":
			v.Port, ok = d.int()
		case "tags":
			v.Tags, ok = d.strings()
		case "meta":
			v.Meta, ok = d.meta()
		case "version":
			v.Version, ok = d.strValue()
		case "weight":
			v.Weight, ok = d.int()
		case "node":
			v.Node, ok = d.strValue()
		case "checks":
			v.Checks, ok = d.checks()
		default:
			return 0, false
		}
		return keyBit(registrationKeys, key), ok
	})
	return ok && d.end()
}

// The keys fastRegistration and check take, each standing for its bit in
// object's record of the keys seen.
var (
	registrationKeys = []string{"address", "port", "tags", "meta", "version", "weight", "node", "checks"}
	checkKeys        = []string{"name", "type", "http", "method", "tls_skip_verify", "tcp", "grpc", "grpc_service",
		"ttl", "interval", "timeout", "failures_before_critical", "successes_before_passing", "initial_status",
		"deregister_critical_after"}
)

// keyBit returns the bit of key in keys.
func keyBit(keys []string, key []byte) uint16 {
	for i, k := range keys {
		if k == string(key) {
			return 1 << i
		}
	}
	return 0
}

// object reads an object of known keys. field is called with each key,
// once its colon is read, to read the value; it returns the key's bit and
// whether it read the value. An unknown key, a key twice or a bad value
// fails the object.
func (d *regDecoder) object(field func(key []byte) (uint16, bool)) bool {
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
		bit, ok := field(key)
		if !ok || bit == 0 || seen&bit != 0 {
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
	return d.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "name":
			c.Name, ok = d.strValue()
		case "type":
			c.Type, ok = d.strValue()
		case "http":
			c.HTTP, ok = d.strValue()
		case "method":
			c.Method, ok = d.strValue()
		case "tls_skip_verify":
			c.TLSSkipVerify, ok = d.bool()
		case "tcp":
			c.TCP, ok = d.strValue()
		case "grpc":
			c.GRPC, ok = d.strValue()
		case "grpc_service":
			c.GRPCService, ok = d.strValue()
		case "ttl":
			c.TTL, ok = d.duration()
		case "interval":
			c.Interval, ok = d.duration()
		case "timeout":
			c.Timeout, ok = d.duration()
		case "failures_before_critical":
			c.FailuresBeforeCritical, ok = d.int()
		case "successes_before_passing":
			c.SuccessesBeforePassing, ok = d.int()
		case "initial_status":
			c.InitialStatus, ok = d.strValue()
		case "deregister_critical_after":
			c.DeregisterCriticalAfter, ok = d.duration()
		default:
			return 0, false
		}
		return keyBit(checkKeys, key), ok
	})
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
