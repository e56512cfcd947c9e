package fsm

import (
	"encoding/binary"
	"math"
)

// decodeRegister decodes the body of a register command, as Encode wrote it
// (go-msgpack: a map from field names to values), without reflection: every
// node decodes every registration it applies, and go-msgpack's reflection was
// a quarter of the FSM's time per registration (and a third of it for one
// with a check). It handles what Encode writes for a registration, its checks
// included; for anything else (a key it does not know, a key twice, a value
// of another msgpack type, trailing bytes, an int that does not fit, a
// request that is not zero to begin with) it returns false and leaves r as it
// was, and the caller decodes with go-msgpack.
// FuzzDecodeRegister holds it to go-msgpack's result.
func decodeRegister(b []byte, r *RegisterRequest) bool {
	if !r.zero() {
		return false // go-msgpack decodes into what r holds (it merges maps)
	}
	d := mpReader{b: b}
	if !d.decodeRegister(r) || len(d.b) != 0 {
		*r = RegisterRequest{}
		return false
	}
	return true
}

// decodeRegisterShared is decodeRegister for the apply path: the values that
// repeat across registrations (Service, Version, Node, Tags, Meta, and the
// checks' names, types, methods, gRPC services and initial statuses) come from
// in, the catalog's interner, without allocating when it holds them already,
// and Meta is decoded into the shared sorted pairs (r.meta) instead of a map
// when Encode wrote it (keys in increasing order, at most 16). The result is
// the request decodeRegister gives, with those values shared (r.interned),
// and Meta as pairs where it could.
func decodeRegisterShared(b []byte, r *RegisterRequest, in *interner) bool {
	if !r.zero() {
		return false
	}
	d := mpReader{b: b, in: in}
	if !d.decodeRegister(r) || len(d.b) != 0 {
		*r = RegisterRequest{}
		return false
	}
	r.interned = true
	return true
}

// zero reports whether r is the zero request.
func (r *RegisterRequest) zero() bool {
	return r.ID == "" && r.Service == "" && r.Address == "" && r.Port == 0 && r.Tags == nil &&
		r.Meta == nil && r.Version == "" && r.Weight == 0 && r.Node == "" && r.Checks == nil &&
		!r.Trusted && r.Time == 0 && r.meta == nil && !r.interned
}

func (d *mpReader) decodeRegister(r *RegisterRequest) bool {
	n, ok := d.mapLen()
	if !ok {
		return false
	}
	var seen uint16 // a key twice is left to go-msgpack (it merges maps)
	for range n {
		key, ok := d.raw() // compared in place: a key is never a new string
		if !ok {
			return false
		}
		bit := keyBit(key, registerKeys[:])
		if bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch string(key) {
		case "ID":
			r.ID, ok = d.str()
		case "Service":
			r.Service, ok = d.shared()
		case "Address":
			r.Address, ok = d.str()
		case "Port":
			r.Port, ok = d.intField()
		case "Tags":
			r.Tags, ok = d.tags()
		case "Meta":
			ok = d.meta(r)
		case "Version":
			r.Version, ok = d.shared()
		case "Weight":
			r.Weight, ok = d.intField()
		case "Node":
			r.Node, ok = d.shared()
		case "Checks":
			r.Checks, ok = d.checks()
		case "Trusted":
			r.Trusted, ok = d.bool()
		case "Time":
			r.Time, ok = d.int64()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// The keys of a RegisterRequest and of a CheckDefinition, as Encode writes
// them.
var (
	registerKeys = [...]string{"ID", "Service", "Address", "Port", "Tags", "Meta", "Version", "Weight", "Node", "Checks", "Trusted", "Time"}
	checkKeys    = [...]string{"Name", "Type", "Target", "Method", "Header", "TLSSkipVerify", "GRPCService", "Interval",
		"Timeout", "TTL", "FailuresBeforeCritical", "SuccessesBeforePassing", "InitialStatus", "DeregisterCriticalAfter", "AnyTarget"}
)

// keyBit numbers key among keys, at most 16 (0: not one of them).
func keyBit(key []byte, keys []string) uint16 {
	for i, k := range keys {
		if k == string(key) {
			return 1 << i
		}
	}
	return 0
}

// checks reads a registration's Checks: nil, or an array of definitions.
func (d *mpReader) checks() ([]CheckDefinition, bool) {
	if d.nil() {
		return nil, true
	}
	n, ok := d.arrayLen()
	if !ok {
		return nil, false
	}
	out := make([]CheckDefinition, n)
	for i := range out {
		if !d.decodeCheck(&out[i]) {
			return nil, false
		}
	}
	return out, true
}

// decodeCheck reads one CheckDefinition as Encode writes it (a map from
// field names to values) into the zero definition c.
func (d *mpReader) decodeCheck(c *CheckDefinition) bool {
	n, ok := d.mapLen()
	if !ok {
		return false
	}
	var seen uint16
	for range n {
		key, ok := d.raw()
		if !ok {
			return false
		}
		bit := keyBit(key, checkKeys[:])
		if bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		var s string
		switch string(key) {
		case "Name":
			c.Name, ok = d.shared()
		case "Type":
			s, ok = d.shared()
			c.Type = CheckType(s)
		case "Target":
			c.Target, ok = d.str()
		case "Method":
			c.Method, ok = d.shared()
		case "Header":
			c.Header, ok = d.stringsMap()
		case "TLSSkipVerify":
			c.TLSSkipVerify, ok = d.bool()
		case "GRPCService":
			c.GRPCService, ok = d.shared()
		case "Interval":
			c.Interval, ok = d.int64()
		case "Timeout":
			c.Timeout, ok = d.int64()
		case "TTL":
			c.TTL, ok = d.int64()
		case "FailuresBeforeCritical":
			c.FailuresBeforeCritical, ok = d.intField()
		case "SuccessesBeforePassing":
			c.SuccessesBeforePassing, ok = d.intField()
		case "InitialStatus":
			s, ok = d.shared()
			c.InitialStatus = Health(s)
		case "DeregisterCriticalAfter":
			c.DeregisterCriticalAfter, ok = d.int64()
		case "AnyTarget":
			c.AnyTarget, ok = d.bool()
		}
		if !ok {
			return false
		}
	}
	return true
}

// mpReader reads the msgpack values decodeRegister takes.
type mpReader struct {
	b  []byte
	in *interner // set: shared, tags and meta take repeated values from it
}

// shared reads a string, the interner's copy when there is one.
func (d *mpReader) shared() (string, bool) {
	if d.in == nil {
		return d.str()
	}
	b, ok := d.raw()
	if !ok {
		return "", false
	}
	if v, found := d.in.strs[string(b)]; found {
		return v, true // no allocation: the lookup does not copy b
	}
	return d.in.str(string(b)), true
}

// tags reads a registration's Tags: with an interner, the shared slice
// equal to them (interner.tagsOf), found without allocating when the
// interner holds it already.
func (d *mpReader) tags() ([]string, bool) {
	if d.in == nil {
		return d.strings()
	}
	start := d.b
	if d.nil() {
		return nil, true
	}
	n, ok := d.arrayLen()
	if !ok {
		return nil, false
	}
	if n > 0 {
		k := d.in.key[:0]
		for range n {
			t, ok := d.raw()
			if !ok || len(t) > internMaxLen {
				k = nil
				break
			}
			k = appendKeyPart(k, t)
		}
		if k != nil {
			d.in.key = k
			if v, found := d.in.tags[string(k)]; found {
				return v, true
			}
		}
	}
	d.b = start
	ts, ok := d.strings()
	if !ok {
		return nil, false
	}
	return d.in.tagsOf(ts), true
}

// maxSharedMeta bounds the keys meta decodes into pairs.
const maxSharedMeta = 16

// meta reads a registration's Meta into r: without an interner, as a map;
// with one, as the interner's shared sorted pairs (r.meta) when Encode
// wrote it (keys strictly increasing), found without allocating when the
// interner holds them already. Anything else (no keys, more than
// maxSharedMeta, keys out of order or twice, a long key or value) is read
// as a map.
func (d *mpReader) meta(r *RegisterRequest) bool {
	if d.in == nil {
		var ok bool
		r.Meta, ok = d.stringMap()
		return ok
	}
	start := d.b
	if d.nil() {
		return true
	}
	n, ok := d.mapLen()
	if !ok {
		return false
	}
	if n > 0 && n <= maxSharedMeta {
		var kvs [2 * maxSharedMeta][]byte
		k := d.in.key[:0]
		for i := range n {
			key, ok1 := d.raw()
			val, ok2 := d.raw()
			if !ok1 || !ok2 || len(key)+len(val) > internMaxLen || (i > 0 && string(kvs[2*i-2]) >= string(key)) {
				k = nil
				break
			}
			kvs[2*i], kvs[2*i+1] = key, val
			k = appendKeyPart(appendKeyPart(k, key), val)
		}
		if k != nil {
			d.in.key = k
			if v, found := d.in.metas[string(k)]; found {
				r.meta = v
				return true
			}
			ps := d.in.pairs[:0]
			for i := range n {
				ps = append(ps, Pair{Key: string(kvs[2*i]), Value: string(kvs[2*i+1])})
			}
			r.meta = d.in.metaOf(ps) // copies ps, sharing its strings
			clear(ps)
			d.in.pairs = ps[:0]
			return true
		}
	}
	d.b = start
	r.Meta, ok = d.stringMap()
	return ok
}

func (d *mpReader) byte() (byte, bool) {
	if len(d.b) == 0 {
		return 0, false
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c, true
}

// n reads a big-endian length or number of size bytes.
func (d *mpReader) n(size int) (uint64, bool) {
	if len(d.b) < size {
		return 0, false
	}
	var v uint64
	switch size {
	case 1:
		v = uint64(d.b[0])
	case 2:
		v = uint64(binary.BigEndian.Uint16(d.b))
	case 4:
		v = uint64(binary.BigEndian.Uint32(d.b))
	case 8:
		v = binary.BigEndian.Uint64(d.b)
	}
	d.b = d.b[size:]
	return v, true
}

// length reads a map's or an array's header: fix is the first byte of the
// fixed-size form (0x80 a map, 0x90 an array), c16 and c32 those of the 16-
// and 32-bit forms. The length is bounded by the bytes left (per: the fewest
// an element takes), so a corrupt length allocates nothing large.
func (d *mpReader) length(fix, c16, c32 byte, per int) (int, bool) {
	c, ok := d.byte()
	var v uint64
	switch {
	case !ok:
		return 0, false
	case c&0xf0 == fix:
		v = uint64(c & 0x0f)
	case c == c16:
		v, ok = d.n(2)
	case c == c32:
		v, ok = d.n(4)
	default:
		return 0, false
	}
	if !ok || v > uint64(len(d.b)/per) {
		return 0, false
	}
	return int(v), true
}

func (d *mpReader) mapLen() (int, bool)   { return d.length(0x80, 0xde, 0xdf, 2) }
func (d *mpReader) arrayLen() (int, bool) { return d.length(0x90, 0xdc, 0xdd, 1) }

// nil consumes a msgpack nil if one is next.
func (d *mpReader) nil() bool {
	if len(d.b) > 0 && d.b[0] == 0xc0 {
		d.b = d.b[1:]
		return true
	}
	return false
}

func (d *mpReader) str() (string, bool) {
	b, ok := d.raw()
	if !ok {
		return "", false
	}
	return string(b), true
}

// raw reads a msgpack string's bytes, without copying them.
func (d *mpReader) raw() ([]byte, bool) {
	c, ok := d.byte()
	if !ok {
		return nil, false
	}
	var size uint64
	switch {
	case c >= 0xa0 && c <= 0xbf:
		size = uint64(c & 0x1f)
	case c == 0xd9:
		size, ok = d.n(1)
	case c == 0xda:
		size, ok = d.n(2)
	case c == 0xdb:
		size, ok = d.n(4)
	default:
		return nil, false
	}
	if !ok || size > uint64(len(d.b)) {
		return nil, false
	}
	b := d.b[:size]
	d.b = d.b[size:]
	return b, true
}

// intField reads an int field: an int64 that fits this platform's int
// (go-msgpack refuses one that does not, on 32-bit platforms).
func (d *mpReader) intField() (int, bool) {
	v, ok := d.int64()
	if !ok || int64(int(v)) != v {
		return 0, false
	}
	return int(v), true
}

func (d *mpReader) int64() (int64, bool) {
	c, ok := d.byte()
	if !ok {
		return 0, false
	}
	switch {
	case c <= 0x7f:
		return int64(c), true
	case c >= 0xe0:
		return int64(int8(c)), true
	}
	var v uint64
	switch c {
	case 0xcc, 0xd0:
		v, ok = d.n(1)
	case 0xcd, 0xd1:
		v, ok = d.n(2)
	case 0xce, 0xd2:
		v, ok = d.n(4)
	case 0xcf, 0xd3:
		v, ok = d.n(8)
	default:
		return 0, false
	}
	if !ok {
		return 0, false
	}
	switch c {
	case 0xcc, 0xcd, 0xce:
		return int64(v), true
	case 0xcf:
		if v > math.MaxInt64 {
			// go-msgpack wraps it to a negative number; Encode never
			// writes one: left to go-msgpack.
			return 0, false
		}
		return int64(v), true
	case 0xd0:
		return int64(int8(v)), true
	case 0xd1:
		return int64(int16(v)), true
	case 0xd2:
		return int64(int32(v)), true
	}
	return int64(v), true
}

func (d *mpReader) bool() (bool, bool) {
	c, ok := d.byte()
	switch {
	case ok && c == 0xc2:
		return false, true
	case ok && c == 0xc3:
		return true, true
	}
	return false, false
}

func (d *mpReader) strings() ([]string, bool) {
	if d.nil() {
		return nil, true
	}
	n, ok := d.arrayLen()
	if !ok {
		return nil, false
	}
	out := make([]string, n)
	for i := range out {
		if out[i], ok = d.str(); !ok {
			return nil, false
		}
	}
	return out, true
}

// stringsMap reads a check's Header. A key twice is left to go-msgpack,
// which decodes the second value into the first's slice.
func (d *mpReader) stringsMap() (map[string][]string, bool) {
	if d.nil() {
		return nil, true
	}
	n, ok := d.mapLen()
	if !ok {
		return nil, false
	}
	out := make(map[string][]string, n)
	for range n {
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		if _, dup := out[k]; dup {
			return nil, false
		}
		v, ok := d.strings()
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

func (d *mpReader) stringMap() (map[string]string, bool) {
	if d.nil() {
		return nil, true
	}
	n, ok := d.mapLen()
	if !ok {
		return nil, false
	}
	out := make(map[string]string, n)
	for range n {
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		v, ok := d.str()
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}
