package fsm

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// interner makes the records of one store generation share the strings and
// the tag and meta slices that repeat across them: service names, tags,
// meta keys and values, versions, node names, check types and methods, and
// check definitions (definition). A catalog of 100k instances of 100
// services holds a few hundred distinct such values, each decoded anew from
// every command or snapshot record without it.
//
// Shared slices are never changed in place: a record is immutable once
// inserted, and a new version replaces Tags or Meta whole (Instance.Clone
// keeps sharing them). Only the goroutine that writes the store (Raft's
// apply, or a restore building its own generation aside) uses an interner.
//
// The tables only grow, so they are bounded: at internLimit entries they are
// dropped and started again (the records keep what they share; later ones
// share anew), and strings longer than internMaxLen, which rarely repeat,
// are left alone.
type interner struct {
	strs  map[string]string
	tags  map[string][]string
	metas map[string][]Pair
	defs  map[defKey]*CheckDefinition
	key   []byte // scratch for building tag and meta keys
	pairs []Pair // scratch for sorting a meta map
}

const (
	internLimit  = 1 << 16
	internMaxLen = 256
)

func newInterner() *interner {
	return &interner{strs: map[string]string{}, tags: map[string][]string{}, metas: map[string][]Pair{}, defs: map[defKey]*CheckDefinition{}}
}

func (in *interner) full() bool {
	return len(in.strs)+len(in.tags)+len(in.metas)+len(in.defs) >= internLimit
}

func (in *interner) reset() {
	in.strs, in.tags, in.metas, in.defs = map[string]string{}, map[string][]string{}, map[string][]Pair{}, map[defKey]*CheckDefinition{}
}

// appendKeyPart appends s to a tags or meta key, its length first: a
// separator byte would let tags that contain it collide (["a\x00", "b"] and
// ["a", "\x00b"]).
func appendKeyPart[S ~string | ~[]byte](k []byte, s S) []byte {
	return append(binary.AppendUvarint(k, uint64(len(s))), s...)
}

// str returns the table's copy of s.
func (in *interner) str(s string) string {
	if s == "" || len(s) > internMaxLen {
		return s
	}
	if v, ok := in.strs[s]; ok {
		return v
	}
	if in.full() {
		in.reset()
	}
	in.strs[s] = s
	return s
}

// health returns h as one of the package's constants when it is one, so
// that no record holds its own copy of "passing".
func health(h Health) Health {
	switch h {
	case Passing:
		return Passing
	case Warning:
		return Warning
	case Critical:
		return Critical
	}
	return h
}

func checkType(t CheckType) CheckType {
	switch t {
	case CheckHTTP:
		return CheckHTTP
	case CheckTCP:
		return CheckTCP
	case CheckGRPC:
		return CheckGRPC
	case CheckTTL:
		return CheckTTL
	}
	return t
}

// tagsOf returns a shared slice equal to tags (tags itself when empty, so
// that nil and empty stay as they were).
func (in *interner) tagsOf(tags []string) []string {
	if len(tags) == 0 {
		return tags
	}
	k := in.key[:0]
	for _, t := range tags {
		if len(t) > internMaxLen {
			return tags
		}
		k = appendKeyPart(k, t)
	}
	in.key = k
	if v, ok := in.tags[string(k)]; ok {
		return v
	}
	if in.full() {
		in.reset()
	}
	v := make([]string, len(tags))
	for i, t := range tags {
		v[i] = in.str(t)
	}
	in.tags[string(k)] = v
	return v
}

// metaOfMap returns the sorted pairs of m as a shared slice (nil for none).
func (in *interner) metaOfMap(m map[string]string) []Pair {
	if len(m) == 0 {
		return nil
	}
	ps := in.pairs[:0]
	for k, v := range m {
		ps = append(ps, Pair{Key: k, Value: v})
	}
	slices.SortFunc(ps, func(a, b Pair) int { return cmp.Compare(a.Key, b.Key) })
	in.pairs = ps
	out := in.metaOf(ps)
	clear(in.pairs) // drop the references to the command's strings
	return out
}

// metaOf returns a shared slice equal to the sorted pairs ps (ps itself
// when empty). A non-empty ps is not kept.
func (in *interner) metaOf(ps []Pair) []Pair {
	if len(ps) == 0 {
		return ps
	}
	k := in.key[:0]
	for _, p := range ps {
		if len(p.Key)+len(p.Value) > internMaxLen {
			return slices.Clone(ps)
		}
		k = appendKeyPart(appendKeyPart(k, p.Key), p.Value)
	}
	in.key = k
	if v, ok := in.metas[string(k)]; ok {
		return v
	}
	if in.full() {
		in.reset()
	}
	v := make([]Pair, len(ps))
	for i, p := range ps {
		v[i] = Pair{Key: in.str(p.Key), Value: in.str(p.Value)}
	}
	in.metas[string(k)] = v
	return v
}

// definition returns the shared definition of the checks that declare d
// (Target aside, which a check keeps as its own field): a read-only record
// equal to d with an empty Target, the table's when one is there. A
// definition with headers is not shared (a map is not a key); it gets a
// copy of its own. d is not changed.
func (in *interner) definition(d *CheckDefinition) *CheckDefinition {
	if d.Header == nil {
		k := defKey{
			Name: d.Name, Type: d.Type, Method: d.Method, TLSSkipVerify: d.TLSSkipVerify,
			AnyTarget: d.AnyTarget, GRPCService: d.GRPCService, Interval: d.Interval,
			Timeout: d.Timeout, TTL: d.TTL, FailuresBeforeCritical: d.FailuresBeforeCritical,
			SuccessesBeforePassing: d.SuccessesBeforePassing, InitialStatus: d.InitialStatus,
			DeregisterCriticalAfter: d.DeregisterCriticalAfter,
		}
		if v, ok := in.defs[k]; ok {
			return v
		}
		v := in.ownDefinition(d)
		if in.full() {
			in.reset()
		}
		in.defs[k] = v
		return v
	}
	return in.ownDefinition(d)
}

// ownDefinition copies d without its target, its repeated fields interned.
func (in *interner) ownDefinition(d *CheckDefinition) *CheckDefinition {
	v := *d
	v.Target = ""
	v.Name = in.str(v.Name)
	v.Type = checkType(v.Type)
	v.Method = in.str(v.Method)
	v.GRPCService = in.str(v.GRPCService)
	v.InitialStatus = health(v.InitialStatus)
	return &v
}

// defKey is a CheckDefinition without Target and Header: a comparable key.
type defKey struct {
	Name                    string
	Type                    CheckType
	Method                  string
	TLSSkipVerify           bool
	AnyTarget               bool
	GRPCService             string
	Interval                int64
	Timeout                 int64
	TTL                     int64
	FailuresBeforeCritical  int
	SuccessesBeforePassing  int
	InitialStatus           Health
	DeregisterCriticalAfter int64
}

// instance interns a decoded instance's repeated fields in place (restore).
func (in *interner) instance(i *Instance) {
	i.Service = in.str(i.Service)
	i.Tags = in.tagsOf(i.Tags)
	i.Meta = in.metaOf(i.Meta)
	i.Version = in.str(i.Version)
	i.Node = in.str(i.Node)
	i.Status = health(i.Status)
	for k := range i.Transitions {
		t := &i.Transitions[k]
		t.From, t.To = health(t.From), health(t.To)
	}
}

// check interns a decoded check's repeated fields in place (restore).
func (in *interner) check(c *Check) {
	c.Service = in.str(c.Service)
	if c.CheckDefinition == nil {
		c.CheckDefinition = &CheckDefinition{}
	}
	c.CheckDefinition = in.definition(c.CheckDefinition)
	c.Status = health(c.Status)
	c.Owner = in.str(c.Owner)
}
