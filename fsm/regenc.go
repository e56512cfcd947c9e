package fsm

import (
	"slices"
	"strings"
)

// encodeRegister appends the msgpack encoding of r, byte for byte what
// go-msgpack writes with msgpackHandle (a map from field names, sorted as
// canonical go-msgpack sorts them, Meta's keys sorted, Trusted omitted when
// false), without
// reflection: the node that receives a registration encodes it for the log,
// and go-msgpack's reflection was about 1.5 % of that node's CPU (more for
// a request with checks). It uses the snapshot encoder's writers
// (snapenc.go). FuzzEncodeRegister holds it to go-msgpack's bytes.
func encodeRegister(b []byte, r *RegisterRequest) []byte {
	n := 11
	if r.Trusted {
		n++
	}
	b = mpMapLen(b, n)
	// Canonical go-msgpack lists a struct's fields sorted by name.
	b = mpStr(mpStr(b, "Address"), r.Address)
	b = mpStr(b, "Checks")
	if r.Checks == nil {
		b = mpNil(b)
	} else {
		b = mpArrayLen(b, len(r.Checks))
		for i := range r.Checks {
			b = appendDefinition(b, &r.Checks[i])
		}
	}
	b = mpStr(mpStr(b, "ID"), r.ID)
	b = mpStr(b, "Meta")
	if r.Meta == nil && r.meta != nil {
		// A request decodeRegisterShared decoded: its pairs are sorted.
		b = mpMapLen(b, len(r.meta))
		for _, p := range r.meta {
			b = mpStr(mpStr(b, p.Key), p.Value)
		}
	} else if r.Meta == nil {
		b = mpNil(b)
	} else {
		b = mpMapLen(b, len(r.Meta))
		var keys [16]string // no allocation for a usual Meta
		ks := keys[:0]
		for k := range r.Meta {
			ks = append(ks, k)
		}
		slices.SortFunc(ks, strings.Compare)
		for _, k := range ks {
			b = mpStr(mpStr(b, k), r.Meta[k])
		}
	}
	b = mpStr(mpStr(b, "Node"), r.Node)
	b = mpInt(mpStr(b, "Port"), int64(r.Port))
	b = mpStr(mpStr(b, "Service"), r.Service)
	b = mpStrings(mpStr(b, "Tags"), r.Tags)
	b = mpInt(mpStr(b, "Time"), r.Time)
	if r.Trusted {
		b = mpBool(mpStr(b, "Trusted"), true)
	}
	b = mpStr(mpStr(b, "Version"), r.Version)
	b = mpInt(mpStr(b, "Weight"), int64(r.Weight))
	return b
}

// appendDefinition appends the msgpack encoding of d: its fields sorted by
// name, AnyTarget omitted when false.
func appendDefinition(b []byte, d *CheckDefinition) []byte {
	n := 14
	if d.AnyTarget {
		n++
	}
	b = mpMapLen(b, n)
	if d.AnyTarget {
		b = mpBool(mpStr(b, "AnyTarget"), true)
	}
	b = mpInt(mpStr(b, "DeregisterCriticalAfter"), d.DeregisterCriticalAfter)
	b = mpInt(mpStr(b, "FailuresBeforeCritical"), int64(d.FailuresBeforeCritical))
	b = mpStr(mpStr(b, "GRPCService"), d.GRPCService)
	b = mpHeader(mpStr(b, "Header"), d.Header)
	b = mpStr(mpStr(b, "InitialStatus"), string(d.InitialStatus))
	b = mpInt(mpStr(b, "Interval"), d.Interval)
	b = mpStr(mpStr(b, "Method"), d.Method)
	b = mpStr(mpStr(b, "Name"), d.Name)
	b = mpInt(mpStr(b, "SuccessesBeforePassing"), int64(d.SuccessesBeforePassing))
	b = mpBool(mpStr(b, "TLSSkipVerify"), d.TLSSkipVerify)
	b = mpInt(mpStr(b, "TTL"), d.TTL)
	b = mpStr(mpStr(b, "Target"), d.Target)
	b = mpInt(mpStr(b, "Timeout"), d.Timeout)
	b = mpStr(mpStr(b, "Type"), string(d.Type))
	return b
}

// registerSize is about the length of r's encoding, for the buffer's
// capacity.
func registerSize(r *RegisterRequest) int {
	n := 100 + len(r.ID) + len(r.Service) + len(r.Address) + len(r.Version) + len(r.Node)
	for _, t := range r.Tags {
		n += len(t) + 5
	}
	for k, v := range r.Meta {
		n += len(k) + len(v) + 10
	}
	for _, p := range r.meta {
		n += len(p.Key) + len(p.Value) + 10
	}
	for i := range r.Checks {
		d := &r.Checks[i]
		n += 260 + len(d.Name) + len(d.Type) + len(d.Target) + len(d.Method) + len(d.GRPCService) + len(d.InitialStatus)
		for k, vs := range d.Header {
			n += len(k) + 5
			for _, v := range vs {
				n += len(v) + 5
			}
		}
	}
	return n
}
