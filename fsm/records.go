package fsm

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Health is the status of a check or of an instance. The zero value is not a
// valid status; records always carry one of the constants below.
type Health string

// Health values, from best to worst.
const (
	Passing  Health = "passing"
	Warning  Health = "warning"
	Critical Health = "critical"
)

// rank orders statuses so that the worst of several can be taken.
func (h Health) rank() int {
	switch h {
	case Passing:
		return 0
	case Warning:
		return 1
	default:
		return 2
	}
}

// Valid reports whether h is one of Passing, Warning or Critical.
func (h Health) Valid() bool { return h == Passing || h == Warning || h == Critical }

// Worse returns the worse of h and o.
func (h Health) Worse(o Health) Health {
	if o.rank() > h.rank() {
		return o
	}
	return h
}

// NodeStatus is the catalog's view of a cluster member.
type NodeStatus string

// Node statuses as gossip reports them.
const (
	NodeAlive  NodeStatus = "alive"
	NodeFailed NodeStatus = "failed"
	NodeLeft   NodeStatus = "left"
)

// MaxTransitions is how many recent health transitions each instance keeps.
const MaxTransitions = 10

// Instance is one registered instance of a service. Instances stored in the
// Store are immutable: a writer copies, changes and inserts a new value, so a
// reader may keep and share a *Instance without locks.
//
// An instance is identified by (Service, ID): IDs are unique within a
// service, and two services may each have an instance with the same ID.
type Instance struct {
	ID      string
	Service string
	Address string
	// NodeFailed is set while gossip reports Node failed.
	NodeFailed bool
	// Trusted is set when the management token registered the instance
	// (RegisterRequest.Trusted): load balancers honour its route prefix
	// outside the service's own path. Omitted from the encoding when false,
	// so records without it encode as before.
	Trusted bool `codec:",omitempty"`
	// idKey is ID's first six bytes, which a service's set compares first
	// (lessInstanceID); set by setsTxn.put. The two bools and the key share
	// one word, in the first cache line of the struct with ID: a
	// comparison reads that line only, and the struct keeps to the
	// 256-byte size class.
	idKey idKey
	Port  int
	Tags  []string
	// Meta is the instance's metadata, sorted by key with unique keys (see
	// MetaFromMap). A sorted slice costs a fraction of a map per instance.
	Meta    []Pair
	Version string
	Weight  int
	// Node is the cluster member this instance runs beside, if any. When gossip
	// reports that member failed, the instance is critical.
	Node string

	// Status is the worst of the instance's checks and of its node's health.
	Status Health
	// HealthySince is when Status last became passing (unix nanoseconds, set
	// from the proposer's clock), or 0 while it is not passing.
	HealthySince int64
	Maintenance  *Maintenance
	Drain        *Drain
	// Metrics are the custom numeric health metrics last reported for the
	// instance (through TTL updates), coalesced by the leader.
	Metrics     map[string]float64
	Transitions []Transition

	CreateIndex uint64
	ModifyIndex uint64

	// cache holds the encodings cached on this immutable value (Encoded,
	// Aux): one slot for both, so that the record keeps to 256 bytes with
	// replaced beside it.
	cache atomic.Pointer[instanceCache]
	// replaced is this version's watch channel, made when a reader first
	// asks (watchCh) and closed, or set to the shared closed channel, once
	// a committed write replaced or deleted this version (markReplaced).
	replaced atomic.Pointer[chan struct{}]
}

// instanceCache is what an Instance caches: its encoding and the Aux slot.
type instanceCache struct {
	encoded    []byte
	hasEncoded bool
	aux        any
}

// closedWatch is the channel of every version replaced before anyone
// watched it.
var closedWatch = func() *chan struct{} {
	c := make(chan struct{})
	close(c)
	return &c
}()

// watchCh returns a channel that closes once a committed write has
// replaced or deleted this version of the instance (at once if one has).
func (i *Instance) watchCh() <-chan struct{} {
	if p := i.replaced.Load(); p != nil {
		return *p
	}
	ch := make(chan struct{})
	if i.replaced.CompareAndSwap(nil, &ch) {
		return ch
	}
	return *i.replaced.Load()
}

// markReplaced wakes the watchers of this version: a committed write
// replaced or deleted it. A reader that asks for the channel afterwards
// gets a closed one.
func (i *Instance) markReplaced() {
	if p := i.replaced.Swap(closedWatch); p != nil && p != closedWatch {
		close(*p)
	}
}

// Pair is one key/value entry of an instance's metadata.
type Pair struct {
	Key   string
	Value string
}

// MetaFromMap returns m's entries sorted by key, or nil for an empty map.
func MetaFromMap(m map[string]string) []Pair {
	if len(m) == 0 {
		return nil
	}
	out := make([]Pair, 0, len(m))
	for k, v := range m {
		out = append(out, Pair{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b Pair) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// MetaMap returns the instance's metadata as a new map, or nil if it has none.
func (i *Instance) MetaMap() map[string]string {
	if len(i.Meta) == 0 {
		return nil
	}
	m := make(map[string]string, len(i.Meta))
	for _, p := range i.Meta {
		m[p.Key] = p.Value
	}
	return m
}

// MetaValue returns the value of the metadata key and whether it is set.
func (i *Instance) MetaValue(key string) (string, bool) {
	// Instances carry a handful of keys: a linear scan beats a binary search.
	for _, p := range i.Meta {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Maintenance marks an instance as taken out of service by an operator.
type Maintenance struct {
	Reason string
	Since  int64
}

// Drain marks an instance that must receive no new requests and is
// deregistered at Deadline (unix nanoseconds).
type Drain struct {
	Deadline int64
	Since    int64
}

// Transition is one recorded change of an instance's health.
type Transition struct {
	Time   int64
	Check  string
	From   Health
	To     Health
	Output string
}

// Healthy reports whether the instance may receive traffic: passing, not in
// maintenance and not draining.
func (i *Instance) Healthy() bool {
	return i.Status == Passing && i.Maintenance == nil && i.Drain == nil
}

// HasTags reports whether the instance carries every tag in tags.
func (i *Instance) HasTags(tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(i.Tags, t) {
			return false
		}
	}
	return true
}

// Encoded returns a cached encoding of the instance, computing it with enc
// the first time. The cache lives as long as this immutable value, so the
// read path encodes each version of an instance once, however often it is
// read. All callers must pass an equivalent enc.
func (i *Instance) Encoded(enc func(*Instance) []byte) []byte {
	if c := i.cache.Load(); c != nil && c.hasEncoded {
		return c.encoded
	}
	b := enc(i)
	for {
		old := i.cache.Load()
		n := &instanceCache{encoded: b, hasEncoded: true}
		if old != nil {
			n.aux = old.aux
		}
		if i.cache.CompareAndSwap(old, n) {
			return b
		}
	}
}

// Aux returns what StoreAux last stored on this immutable value, or nil. It
// is a cache slot for an encoding that depends on more than the instance
// (the Consul API's health entries also show its checks and node), so the
// caller must check that what it loads is still valid. Not copied by Clone.
func (i *Instance) Aux() any {
	if c := i.cache.Load(); c != nil {
		return c.aux
	}
	return nil
}

// StoreAux replaces the value in the Aux cache slot. Safe for concurrent use.
func (i *Instance) StoreAux(v any) {
	for {
		old := i.cache.Load()
		n := &instanceCache{aux: v}
		if old != nil {
			n.encoded, n.hasEncoded = old.encoded, old.hasEncoded
		}
		if i.cache.CompareAndSwap(old, n) {
			return
		}
	}
}

// Clone returns a copy without the encoding cache, ready to be changed and
// inserted as a new version. Tags and Meta are shared with i (the catalog
// shares them between instances too): replace them, never change them in
// place. Everything else is copied deeply.
func (i *Instance) Clone() *Instance {
	c := &Instance{
		ID: i.ID, Service: i.Service, Address: i.Address, Port: i.Port,
		Tags: i.Tags, Meta: i.Meta, Version: i.Version,
		Weight: i.Weight, Node: i.Node, Trusted: i.Trusted, Status: i.Status, HealthySince: i.HealthySince,
		NodeFailed: i.NodeFailed, Metrics: cloneMap(i.Metrics),
		Transitions: slices.Clone(i.Transitions),
		CreateIndex: i.CreateIndex, ModifyIndex: i.ModifyIndex,
	}
	if i.Maintenance != nil {
		m := *i.Maintenance
		c.Maintenance = &m
	}
	if i.Drain != nil {
		d := *i.Drain
		c.Drain = &d
	}
	return c
}

// CheckType names the kind of probe a check runs.
type CheckType string

// Check types. No check type runs a command.
const (
	CheckHTTP CheckType = "http"
	CheckTCP  CheckType = "tcp"
	CheckGRPC CheckType = "grpc"
	CheckTTL  CheckType = "ttl"
)

// CheckDefinition is what a registration declares about a check. Durations
// are nanoseconds so the replicated form has no time.Duration.
//
// A stored Check shares its definition with the other checks that declare
// the same one (interner.definition): a service's instances usually declare
// the same checks, and the definition is half of a check's record. So a
// definition reached through a Check is read-only, and its Target is empty:
// the check's own Target (Check.Target) is the one that counts.
type CheckDefinition struct {
	// Name is unique within the instance; the check's ID is
	// SERVICE:INSTANCE:NAME (CheckID).
	Name string
	Type CheckType
	// Target is the URL (http), host:port (tcp, grpc) or empty (ttl).
	Target        string
	Method        string
	Header        map[string][]string
	TLSSkipVerify bool
	// AnyTarget is set when the management token registered the check: it
	// may probe any host the deny list allows. Otherwise the prober connects
	// only to the instance's own address (or to an allowed range). Omitted
	// when false, so the log format of existing commands does not change.
	// (Beside TLSSkipVerify so that the two share a word.)
	AnyTarget   bool `codec:",omitempty"`
	GRPCService string

	Interval int64
	Timeout  int64
	TTL      int64

	FailuresBeforeCritical  int
	SuccessesBeforePassing  int
	InitialStatus           Health
	DeregisterCriticalAfter int64
}

// Equal reports whether two definitions describe the same probe, so that a
// re-registration that keeps a check unchanged keeps its status.
func (d *CheckDefinition) Equal(o *CheckDefinition) bool {
	return d.Target == o.Target && d.equalProbe(o)
}

// equalProbe is Equal without the targets.
func (d *CheckDefinition) equalProbe(o *CheckDefinition) bool {
	if len(d.Header) != len(o.Header) {
		return false
	}
	for k, v := range d.Header {
		if !slices.Equal(v, o.Header[k]) {
			return false
		}
	}
	return d.Name == o.Name && d.Type == o.Type &&
		d.Method == o.Method && d.TLSSkipVerify == o.TLSSkipVerify &&
		d.GRPCService == o.GRPCService && d.Interval == o.Interval &&
		d.Timeout == o.Timeout && d.TTL == o.TTL &&
		d.FailuresBeforeCritical == o.FailuresBeforeCritical &&
		d.SuccessesBeforePassing == o.SuccessesBeforePassing &&
		d.InitialStatus == o.InitialStatus &&
		d.DeregisterCriticalAfter == o.DeregisterCriticalAfter &&
		d.AnyTarget == o.AnyTarget
}

// Check is a health check of one instance with its replicated state.
//
// Its definition is shared (see CheckDefinition) and never written through
// the check: a change of definition is a new definition. The fields read
// as before (c.Interval, c.Name); Target is the check's own field, which
// shadows the definition's empty one.
type Check struct {
	// ID is CheckID(Service, Instance, Name), unique in the catalog.
	ID string
	// Instance and Service identify the instance the check belongs to.
	Instance string
	Service  string
	// Target is the URL (http), host:port (tcp, grpc) or empty (ttl): the
	// one part of a definition that is usually the instance's own.
	Target string
	*CheckDefinition

	Status Health
	Output string
	// StatusSince is when Status was entered (unix nanoseconds, proposer's clock).
	StatusSince int64
	// Owner is the node that runs the check; the leader assigns it. Status
	// updates proposed by any other node are refused.
	Owner string
	// Flapping is set while the check changes status too often; FlapUntil is
	// when its hold-down ends and FlapLevel how many hold-downs in a row it
	// has had (for exponential back-off). All three are decided by the owner.
	// (FlapLevel is an int32 beside Flapping so that the record keeps to a
	// 160-byte size class; clampFlapLevel bounds it.)
	Flapping  bool
	FlapLevel int32
	FlapUntil int64

	CreateIndex uint64
	ModifyIndex uint64
}

// Clone returns a copy, ready to be changed and inserted. It shares the
// definition, which no one changes.
func (c *Check) Clone() *Check {
	n := *c
	return &n
}

// Definition returns a copy of the check's definition with its target, as
// it was registered (a caller may change it).
func (c *Check) Definition() CheckDefinition {
	var d CheckDefinition
	if c.CheckDefinition != nil {
		d = *c.CheckDefinition
	}
	if d.Header != nil {
		h := make(map[string][]string, len(d.Header))
		for k, v := range d.Header {
			h[k] = slices.Clone(v)
		}
		d.Header = h
	}
	d.Target = c.Target
	return d
}

// SameTarget reports whether d probes what the check probes: the same
// type, the same target (an HTTP check's URL, a TCP or gRPC check's
// host:port, a TTL check's empty one) and the same gRPC service. A
// re-registration that changes anything else (interval, timeout, thresholds,
// TTL, initial status, method, headers, TLS verification,
// deregister_critical_after) keeps the check's state; one that changes the
// target makes a new check (docs/health.md, "Re-registering").
func (c *Check) SameTarget(d *CheckDefinition) bool {
	return c.CheckDefinition != nil && c.Type == checkType(d.Type) && c.Target == d.Target && c.GRPCService == d.GRPCService
}

// SameDefinition reports whether d is the check's definition (Equal).
func (c *Check) SameDefinition(d *CheckDefinition) bool {
	return c.CheckDefinition != nil && c.Target == d.Target && c.CheckDefinition.equalProbe(d)
}

// clampFlapLevel gives a flap level as a Check keeps it.
func clampFlapLevel(l int) int32 {
	return int32(min(max(l, 0), math.MaxInt32))
}

// Effective is the status the check contributes to its instance: a flapping
// check counts as critical so that load balancers stop churning.
func (c *Check) Effective() Health {
	if c.Flapping {
		return Critical
	}
	return c.Status
}

// Service is the catalog's record of a service name. It exists while at
// least one instance does; its ModifyIndex is the index of the last write
// that changed any of its instances (registration, health, maintenance,
// metrics, deregistration). A change of check ownership alone does not
// change the service's instances, so it leaves ModifyIndex alone.
type Service struct {
	Name        string
	Instances   int
	CreateIndex uint64
	ModifyIndex uint64

	// set is the service's instance set as of this version of the record,
	// the row of the sets table written with it (every write that changes
	// the set writes a new record): a reader that found the record needs
	// no lookup of the set (Store.ServiceList).
	set *instanceSet
	// list caches this version's instances for readers (Store.ServiceList).
	// Every write that changes the service's set writes a new record, so
	// the cache lives exactly as long as the list it holds is current.
	list atomic.Pointer[List]
	// key is Name and a NUL, its "id" index key (rowCache.key), or nil.
	key []byte
}

func (svc *Service) idKey() []byte { return svc.key }

// List is a service's instances in ID order as of one version of its record,
// shared by every reader of that version: nothing may modify Instances.
type List struct {
	Instances []*Instance
	set       *instanceSet // the set it was read from (for tests)
	enc       atomic.Pointer[[]byte]
}

// maxCachedList bounds the encodings List.Encoded keeps: a large list is
// encoded per read rather than held twice (each instance's encoding is
// cached on the instance already).
const maxCachedList = 16 << 10

// Encoded returns enc(l.Instances), computed once per list version when
// it is at most maxCachedList bytes. All callers must pass an equivalent
// enc, and must not modify the bytes.
func (l *List) Encoded(enc func([]*Instance) []byte) []byte {
	if b := l.enc.Load(); b != nil {
		return *b
	}
	b := enc(l.Instances)
	if len(b) <= maxCachedList {
		l.enc.CompareAndSwap(nil, &b)
	}
	return b
}

// Node is a cluster member as the catalog sees it, or an external node
// (Role RoleExternal): a host without an agent, registered through the
// Consul catalog API, whose Address is a host without a port.
type Node struct {
	Name    string
	Address string
	Role    string
	Status  NodeStatus
	// Since is when Status was entered (unix nanoseconds, proposer's clock).
	Since int64
	// Incarnation and Departed: see NodeState.
	Incarnation uint64 `codec:",omitempty"`
	Departed    bool   `codec:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
	// TaggedAddresses and Meta are an external node's, as registered;
	// a member's are empty. Left out of a snapshot when empty, so that a
	// member's record is encoded as it was before they existed.
	TaggedAddresses map[string]string `codec:",omitempty"`
	Meta            map[string]string `codec:",omitempty"`
}

// External reports whether n is an external node (RoleExternal).
func (n *Node) External() bool { return n.Role == RoleExternal }

// DepartedIn reports whether the node left gracefully in incarnation inc
// or an earlier one (inc known, not 0): a server that did is not made a
// Raft voter again until it comes back with a later incarnation (it was
// started again). An earlier one is a stale view of the node: gossip that
// has not yet heard of the run that left (the node had just restarted).
// Incarnations are start times, so a later run has a larger one.
func (n *Node) DepartedIn(inc uint64) bool {
	return n != nil && n.Departed && inc != 0 && inc <= n.Incarnation
}

// Token is an API token. Only a hash of the secret is stored.
type Token struct {
	Accessor string
	// SecretHash is the hex SHA-256 of the secret.
	SecretHash  string
	Description string
	// Policy is "management", "read" or "write".
	Policy string
	// Prefixes limit a write policy to service names with one of these prefixes.
	Prefixes    []string
	CreateIndex uint64
	ModifyIndex uint64
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// EscapeControl returns s with the characters escaped that could drive a
// terminal or make what is printed differ from what is stored, so check
// output cannot forge lines, recolour or reorder text where it is printed:
// C0 (newline and tab included), DEL and bytes that are not UTF-8 become
// \xHH; C1 characters (U+0080-U+009F, among them the one-byte CSI) become
// \u00HH; format characters (category Cf: bidirectional embeddings,
// overrides and isolates such as U+202E, zero-width characters, the byte
// order mark, the soft hyphen) and the line and paragraph separators
// U+2028 and U+2029 become \uHHHH (\UHHHHHHHH above U+FFFF). These are the
// characters the API refuses as not printable in what it stores; printable
// text, in any script, is kept.
func EscapeControl(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || Escaped(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r < 0x20, r == 0x7f:
			c := s[i]
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		case Escaped(r):
			digits := 4
			if r > 0xffff {
				b.WriteString(`\U`)
				digits = 8
			} else {
				b.WriteString(`\u`)
			}
			for d := digits - 1; d >= 0; d-- {
				b.WriteByte(hex[r>>(4*d)&0xf])
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Escaped reports whether EscapeControl escapes the character r (a byte
// that is not UTF-8, which decodes as utf8.RuneError, is escaped too).
func Escaped(r rune) bool {
	if r < utf8.RuneSelf {
		return r < 0x20 || r == 0x7f
	}
	return r <= 0x9f || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// EscapeControlMax is EscapeControl(s) cut to at most n bytes between two
// characters of s, never inside a UTF-8 sequence or an escape (cutting the
// escaped text by bytes could leave a stray "\x" or a broken character).
func EscapeControlMax(s string, n int) string {
	size := 0
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if size += escapedLen(r, w); size > n {
			return EscapeControl(s[:i])
		}
		i += w
	}
	return EscapeControl(s)
}

// escapedLen is how many bytes EscapeControl writes for the rune r, read
// from w bytes.
func escapedLen(r rune, w int) int {
	switch {
	case r == utf8.RuneError && w <= 1, r < 0x20, r == 0x7f:
		return len(`\xHH`)
	case Escaped(r) && r > 0xffff:
		return len(`\UHHHHHHHH`)
	case Escaped(r):
		return len(`\uHHHH`)
	}
	return w
}
