package fsm

import (
	"encoding/binary"
	"math"
	"slices"
)

// The snapshot's instance and check records are written by the functions
// below instead of go-msgpack's reflection: on a growing catalog every node
// encodes its whole catalog every SnapshotThreshold entries, and reflection
// made that most of the CPU a snapshot took (docs/benchmarks.md). The bytes
// are exactly those go-msgpack writes with msgpackHandle, so a snapshot reads
// back with the same decoder as before and nodes of either build agree:
// structs as maps with their fields sorted by name (embedded fields
// flattened, omitempty fields left out when false), strings as msgpack str
// (str8 allowed), integers in the smallest encoding of their sign, nil
// slices, maps and pointers as nil, map keys sorted. TestSnapshotEncoderMatchesCodec
// and FuzzSnapshotEncoderMatchesCodec hold them to it; a field added to
// Instance or Check fails TestSnapshotEncoderKnowsEveryField until it is
// written here too.

func mpNil(b []byte) []byte { return append(b, 0xc0) }

func mpBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// mpInt is go-msgpack's EncodeInt without PositiveIntUnsigned.
func mpInt(b []byte, i int64) []byte {
	switch {
	case i > math.MaxInt8:
		switch {
		case i <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(i))
		case i <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(i))
		default:
			return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(i))
		}
	case i >= -32:
		return append(b, byte(i))
	case i >= math.MinInt8:
		return append(b, 0xd0, byte(i))
	case i >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(i))
	case i >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(i))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(i))
	}
}

// mpUint is go-msgpack's EncodeUint.
func mpUint(b []byte, u uint64) []byte {
	switch {
	case u <= math.MaxInt8:
		return append(b, byte(u))
	case u <= math.MaxUint8:
		return append(b, 0xcc, byte(u))
	case u <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(u))
	case u <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(u))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), u)
	}
}

func mpFloat64(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(f))
}

// mpStr writes s as msgpack str: fixstr, str8, str16 or str32.
func mpStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	case n < 65536:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// mpLen writes a container length: fix below 16, else 16 or 32 bits
// (msgpack has no 8-bit array or map length).
func mpLen(b []byte, fix, b16, b32 byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n < 65536:
		return binary.BigEndian.AppendUint16(append(b, b16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, b32), uint32(n))
	}
}

func mpArrayLen(b []byte, n int) []byte { return mpLen(b, 0x90, 0xdc, 0xdd, n) }
func mpMapLen(b []byte, n int) []byte   { return mpLen(b, 0x80, 0xde, 0xdf, n) }

func mpStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return mpNil(b)
	}
	b = mpArrayLen(b, len(ss))
	for _, s := range ss {
		b = mpStr(b, s)
	}
	return b
}

// mpSortedKeys returns m's keys in the order a canonical encoding lists
// them (byte order of the strings).
func mpSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendInstance appends the msgpack encoding of i.
func appendInstance(b []byte, i *Instance) []byte {
	n := 18
	if i.Trusted {
		n++
	}
	b = mpMapLen(b, n)
	b = mpStr(mpStr(b, "Address"), i.Address)
	b = mpUint(mpStr(b, "CreateIndex"), i.CreateIndex)
	b = mpStr(b, "Drain")
	if d := i.Drain; d == nil {
		b = mpNil(b)
	} else {
		b = mpMapLen(b, 2)
		b = mpInt(mpStr(b, "Deadline"), d.Deadline)
		b = mpInt(mpStr(b, "Since"), d.Since)
	}
	b = mpInt(mpStr(b, "HealthySince"), i.HealthySince)
	b = mpStr(mpStr(b, "ID"), i.ID)
	b = mpStr(b, "Maintenance")
	if m := i.Maintenance; m == nil {
		b = mpNil(b)
	} else {
		b = mpMapLen(b, 2)
		b = mpStr(mpStr(b, "Reason"), m.Reason)
		b = mpInt(mpStr(b, "Since"), m.Since)
	}
	b = mpStr(b, "Meta")
	if i.Meta == nil {
		b = mpNil(b)
	} else {
		b = mpArrayLen(b, len(i.Meta))
		for _, p := range i.Meta {
			b = mpMapLen(b, 2)
			b = mpStr(mpStr(b, "Key"), p.Key)
			b = mpStr(mpStr(b, "Value"), p.Value)
		}
	}
	b = mpStr(b, "Metrics")
	if i.Metrics == nil {
		b = mpNil(b)
	} else {
		b = mpMapLen(b, len(i.Metrics))
		for _, k := range mpSortedKeys(i.Metrics) {
			b = mpFloat64(mpStr(b, k), i.Metrics[k])
		}
	}
	b = mpUint(mpStr(b, "ModifyIndex"), i.ModifyIndex)
	b = mpStr(mpStr(b, "Node"), i.Node)
	b = mpBool(mpStr(b, "NodeFailed"), i.NodeFailed)
	b = mpInt(mpStr(b, "Port"), int64(i.Port))
	b = mpStr(mpStr(b, "Service"), i.Service)
	b = mpStr(mpStr(b, "Status"), string(i.Status))
	b = mpStrings(mpStr(b, "Tags"), i.Tags)
	b = mpStr(b, "Transitions")
	if i.Transitions == nil {
		b = mpNil(b)
	} else {
		b = mpArrayLen(b, len(i.Transitions))
		for _, t := range i.Transitions {
			b = mpMapLen(b, 5)
			b = mpStr(mpStr(b, "Check"), t.Check)
			b = mpStr(mpStr(b, "From"), string(t.From))
			b = mpStr(mpStr(b, "Output"), t.Output)
			b = mpInt(mpStr(b, "Time"), t.Time)
			b = mpStr(mpStr(b, "To"), string(t.To))
		}
	}
	if i.Trusted {
		b = mpBool(mpStr(b, "Trusted"), true)
	}
	b = mpStr(mpStr(b, "Version"), i.Version)
	b = mpInt(mpStr(b, "Weight"), int64(i.Weight))
	return b
}

// mpHeader appends a check's Header: nil, or a map with sorted keys.
func mpHeader(b []byte, h map[string][]string) []byte {
	if h == nil {
		return mpNil(b)
	}
	b = mpMapLen(b, len(h))
	for _, k := range mpSortedKeys(h) {
		b = mpStrings(mpStr(b, k), h[k])
	}
	return b
}

// appendCheck appends the msgpack encoding of c (CheckDefinition's fields
// flattened into it, as go-msgpack does with an embedded struct).
func appendCheck(b []byte, c *Check) []byte {
	d := c.CheckDefinition
	if d == nil {
		d = &CheckDefinition{} // only a test's zero Check
	}
	n := 26
	if d.AnyTarget {
		n++
	}
	b = mpMapLen(b, n)
	if d.AnyTarget {
		b = mpBool(mpStr(b, "AnyTarget"), true)
	}
	b = mpUint(mpStr(b, "CreateIndex"), c.CreateIndex)
	b = mpInt(mpStr(b, "DeregisterCriticalAfter"), d.DeregisterCriticalAfter)
	b = mpInt(mpStr(b, "FailuresBeforeCritical"), int64(d.FailuresBeforeCritical))
	b = mpInt(mpStr(b, "FlapLevel"), int64(c.FlapLevel))
	b = mpInt(mpStr(b, "FlapUntil"), c.FlapUntil)
	b = mpBool(mpStr(b, "Flapping"), c.Flapping)
	b = mpStr(mpStr(b, "GRPCService"), d.GRPCService)
	b = mpHeader(mpStr(b, "Header"), d.Header)
	b = mpStr(mpStr(b, "ID"), c.ID)
	b = mpStr(mpStr(b, "InitialStatus"), string(d.InitialStatus))
	b = mpStr(mpStr(b, "Instance"), c.Instance)
	b = mpInt(mpStr(b, "Interval"), d.Interval)
	b = mpStr(mpStr(b, "Method"), d.Method)
	b = mpUint(mpStr(b, "ModifyIndex"), c.ModifyIndex)
	b = mpStr(mpStr(b, "Name"), d.Name)
	b = mpStr(mpStr(b, "Output"), c.Output)
	b = mpStr(mpStr(b, "Owner"), c.Owner)
	b = mpStr(mpStr(b, "Service"), c.Service)
	b = mpStr(mpStr(b, "Status"), string(c.Status))
	b = mpInt(mpStr(b, "StatusSince"), c.StatusSince)
	b = mpInt(mpStr(b, "SuccessesBeforePassing"), int64(d.SuccessesBeforePassing))
	b = mpBool(mpStr(b, "TLSSkipVerify"), d.TLSSkipVerify)
	b = mpInt(mpStr(b, "TTL"), d.TTL)
	b = mpStr(mpStr(b, "Target"), c.Target)
	b = mpInt(mpStr(b, "Timeout"), d.Timeout)
	b = mpStr(mpStr(b, "Type"), string(d.Type))
	return b
}
