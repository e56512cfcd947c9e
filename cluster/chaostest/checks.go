package chaostest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// LostWrite is an acknowledged write the final state does not reflect.
type LostWrite struct {
	Key   string
	Write Op
	// Final is the value the final read found ("" = absent).
	Final string
	Why   string
}

// String describes the lost write in one line.
func (l LostWrite) String() string {
	final := l.Final
	if final == "" {
		final = "absent"
	}
	return fmt.Sprintf("%s: %s %q (op %d on %s, acknowledged at %s) lost: final state %s; %s",
		l.Key, l.Write.Kind, l.Write.Value, l.Write.ID, l.Write.NodeName, l.Write.Return.Round(time.Millisecond), final, l.Why)
}

// CheckLostWrites compares the final consistent read of each key with the
// writes acknowledged before it. The final state must come from some write
// S (a put of that unique value, or for an absent instance a del or the
// initial state); every acknowledged write W that began after S completed
// must be linearized after S and so be reflected, so W is lost. A final
// value that no put ever wrote is reported too (a phantom).
func CheckLostWrites(ops []Op) []LostWrite {
	finals := map[string]*Op{}
	for i := range ops {
		if o := &ops[i]; o.Kind == FinalRead && o.Outcome == OK {
			if f := finals[o.Key]; f == nil || o.Return > f.Return {
				finals[o.Key] = o
			}
		}
	}
	const inf = time.Duration(math.MaxInt64)
	var lost []LostWrite
	for _, key := range sortedKeys(finals) {
		final := finals[key]
		// The latest time the source of the final state may have completed.
		var sourceEnd time.Duration = -1
		found := final.Value == ""
		for i := range ops {
			o := &ops[i]
			if o.Key != key || !o.IsWrite() || o.Outcome == Fail || o.Call > final.Return {
				continue
			}
			isSource := (o.Kind == Put && final.Value != "" && o.Value == final.Value) || (o.Kind == Del && final.Value == "")
			if !isSource {
				continue
			}
			found = true
			end := o.Return
			if o.Outcome == Unknown {
				end = inf
			}
			sourceEnd = max(sourceEnd, end)
		}
		if !found {
			lost = append(lost, LostWrite{Key: key, Write: *final, Final: final.Value, Why: "no write ever wrote this value"})
			continue
		}
		for i := range ops {
			o := &ops[i]
			if o.Key != key || !o.IsWrite() || o.Outcome != OK || o.Call > final.Call {
				continue
			}
			if o.Kind == Put && o.Value == final.Value {
				continue
			}
			if o.Kind == Del && final.Value == "" {
				continue
			}
			if sourceEnd != inf && o.Call > sourceEnd {
				lost = append(lost, LostWrite{Key: key, Write: *o, Final: final.Value,
					Why: fmt.Sprintf("it began after the final state's source completed (at %s)", sourceEnd.Round(time.Millisecond))})
			}
		}
	}
	return lost
}

// MonotonicViolation is a read on one node that went back in time.
type MonotonicViolation struct {
	Earlier, Later Op
	// ReadYourWrite is set when Earlier is the node's own acknowledged put.
	ReadYourWrite bool
}

// String describes the monotonic violation in one line.
func (m MonotonicViolation) String() string {
	what := "read"
	if m.ReadYourWrite {
		what = "acknowledged put"
	}
	return fmt.Sprintf("%s incarnation %d, %s: %s (op %d) returned index %d at %s, then %s (op %d) began at %s and returned index %d",
		m.Later.NodeName, m.Later.Incarnation, m.Later.Key, what, m.Earlier.ID, m.Earlier.Index, m.Earlier.Return.Round(time.Millisecond),
		m.Later.Kind, m.Later.ID, m.Later.Call.Round(time.Millisecond), m.Later.Index)
}

// CheckMonotonicReads checks that reads never go back in time on one node:
// within one incarnation of a node, a read that begins after another read of
// the same key (or of the whole service) completed returns an index at least
// as high, and one that begins after the node acknowledged a put of that key
// returns at least the put's index (read-your-writes). Indexes of one
// instance and of the service list are compared only among themselves.
//
// Across a restart the index may legitimately drop: a restarted node serves
// its last snapshot until it hears from a leader, and says so (Last-Contact
// -1). That is reported by RestartRegressions, not here.
func CheckMonotonicReads(ops []Op) []MonotonicViolation {
	type stream struct {
		node, inc int
		key       string
	}
	groups := map[stream][]*Op{}
	for i := range ops {
		o := &ops[i]
		if o.Outcome != OK || o.Incarnation < 0 || o.Index == 0 || o.Kind == Del || o.Kind == FinalRead {
			continue
		}
		if o.Kind == Put {
			// A put bumps both its instance and the service.
			groups[stream{o.Node, o.Incarnation, o.Key}] = append(groups[stream{o.Node, o.Incarnation, o.Key}], o)
			groups[stream{o.Node, o.Incarnation, AllKeys}] = append(groups[stream{o.Node, o.Incarnation, AllKeys}], o)
			continue
		}
		groups[stream{o.Node, o.Incarnation, o.Key}] = append(groups[stream{o.Node, o.Incarnation, o.Key}], o)
	}
	var out []MonotonicViolation
	for _, g := range groups {
		// Sweep in call order, folding in every operation that completed
		// before the current one began.
		byCall := append([]*Op(nil), g...)
		sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
		byReturn := append([]*Op(nil), g...)
		sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
		var best *Op
		j := 0
		for _, o := range byCall {
			for j < len(byReturn) && byReturn[j].Return < o.Call {
				if best == nil || byReturn[j].Index > best.Index {
					best = byReturn[j]
				}
				j++
			}
			if o.Kind == Put || best == nil {
				continue
			}
			if o.Index < best.Index {
				out = append(out, MonotonicViolation{Earlier: *best, Later: *o, ReadYourWrite: best.Kind == Put})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Later.Call < out[j].Later.Call })
	return out
}

// RestartRegression is a read that returned a lower index than the node
// had shown before it restarted.
type RestartRegression struct {
	Read Op
	// Before is the highest index the node's earlier incarnations returned.
	Before uint64
}

// RestartRegressions lists reads whose index is below what an earlier
// incarnation of the same node returned for the same key. Honest is the
// subset that told the client it was stale (no leader known, or
// Last-Contact -1: not caught up since it started); the rest (Dishonest)
// answered with an old state while claiming to be current, as restarted
// followers did while they heard the leader's heartbeats but had not yet
// received its log (fixed in cluster/freshness.go).
func RestartRegressions(ops []Op) (honest, dishonest []RestartRegression) {
	type nk struct {
		node int
		key  string
	}
	sorted := append([]Op(nil), ops...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	// highest index per (node, key) per incarnation, from reads only.
	maxBy := map[nk]map[int]uint64{}
	for i := range sorted {
		o := &sorted[i]
		if o.Outcome != OK || o.Incarnation < 0 || o.Index == 0 || !o.IsRead() || o.Kind == FinalRead {
			continue
		}
		k := nk{o.Node, o.Key}
		if maxBy[k] == nil {
			maxBy[k] = map[int]uint64{}
		}
		var before uint64
		for inc, idx := range maxBy[k] {
			if inc < o.Incarnation {
				before = max(before, idx)
			}
		}
		if o.Index < before {
			r := RestartRegression{Read: *o, Before: before}
			if !o.KnownLeader || o.LastContact < 0 {
				honest = append(honest, r)
			} else {
				dishonest = append(dishonest, r)
			}
		}
		maxBy[k][o.Incarnation] = max(maxBy[k][o.Incarnation], o.Index)
	}
	return honest, dishonest
}

// Isolation is a span during which a node was cut off from every peer.
type Isolation struct {
	Node int
	// Leader is set when the node led at the cut.
	Leader bool
	// From is when the cut was in place; To when it was lifted.
	From, To time.Duration
}

// StalenessViolation is a default read on an isolated node whose
// Last-Contact understated how long the node had been cut off.
type StalenessViolation struct {
	Read Op
	// AtLeast is how stale the answer was known to be.
	AtLeast time.Duration
}

// String describes the staleness violation in one line.
func (s StalenessViolation) String() string {
	return fmt.Sprintf("%s: read op %d at %s answered X-Beacon-Last-Contact %s, but the node had been isolated for at least %s",
		s.Read.NodeName, s.Read.ID, s.Read.Call.Round(time.Millisecond), s.Read.LastContact, s.AtLeast.Round(time.Millisecond))
}

// StalenessGrace is how long after a cut X-Beacon-Last-Contact may still
// look fresh: an isolated leader keeps leading until its lease runs out
// (LeaderLeaseTimeout, 500ms by default) and answers Last-Contact 0 until
// then.
const StalenessGrace = 2 * time.Second

// stalenessSlack covers messages in flight when the cut went in.
const stalenessSlack = 500 * time.Millisecond

// LeaderStepDownSlack is how much more an isolated leader may understate:
// it counts Last-Contact from the moment it stepped down, which is one to
// two leader lease periods (500ms each by default) after its last contact
// with a quorum.
const LeaderStepDownSlack = time.Second

// CheckStaleness checks X-Beacon-Last-Contact on default reads answered by
// an isolated node: from StalenessGrace after the cut, the header must show
// at least the time since the cut (less a small slack for messages in
// flight, and LeaderStepDownSlack more for a node that led), or -1 (never). It returns the violations and how many reads were
// checked (so a run that checked none is visible).
func CheckStaleness(ops []Op, isolations []Isolation) ([]StalenessViolation, int) {
	var out []StalenessViolation
	checked := 0
	for i := range ops {
		o := &ops[i]
		if o.Kind != Read || o.Outcome != OK || o.Index == 0 {
			continue
		}
		for _, iso := range isolations {
			if iso.Node != o.Node || o.Call < iso.From+StalenessGrace || o.Return > iso.To {
				continue
			}
			checked++
			atLeast := o.Call - iso.From - stalenessSlack
			if iso.Leader {
				atLeast -= LeaderStepDownSlack
			}
			if o.LastContact >= 0 && o.LastContact < atLeast {
				out = append(out, StalenessViolation{Read: *o, AtLeast: atLeast})
			}
		}
	}
	return out, checked
}

// LeaderClaim is a node that won an election, from its log.
type LeaderClaim struct {
	Node string
	Term uint64
	At   string
}

// ParseElections reads "election won" lines (with their term) from an
// agent's JSON log.
func ParseElections(path, node string) ([]LeaderClaim, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LeaderClaim
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), "election won") {
			continue
		}
		var rec struct {
			Msg  string `json:"@message"`
			At   string `json:"@timestamp"`
			Term uint64 `json:"term"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "election won" {
			continue
		}
		out = append(out, LeaderClaim{Node: node, Term: rec.Term, At: rec.At})
	}
	return out, sc.Err()
}

// CheckLeaders returns a description of every term that more than one node
// claimed to lead.
func CheckLeaders(claims []LeaderClaim) []string {
	byTerm := map[uint64]map[string]string{}
	for _, c := range claims {
		if byTerm[c.Term] == nil {
			byTerm[c.Term] = map[string]string{}
		}
		byTerm[c.Term][c.Node] = c.At
	}
	var terms []uint64
	for t := range byTerm {
		terms = append(terms, t)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	var out []string
	for _, t := range terms {
		if len(byTerm[t]) > 1 {
			var who []string
			for _, n := range sortedKeys(byTerm[t]) {
				who = append(who, n+" at "+byTerm[t][n])
			}
			out = append(out, fmt.Sprintf("term %d has %d leaders: %s", t, len(who), strings.Join(who, ", ")))
		}
	}
	return out
}

// Understatement is a default read that missed a write acknowledged well
// before it began, while its Last-Contact claimed recent contact.
type Understatement struct {
	Read Op
	// Missed is the acknowledged put the read did not reflect (its index is
	// above the read's); Stale is how long before the read it was
	// acknowledged, a lower bound on how stale the answer was.
	Missed Op
	Stale  time.Duration
}

// String describes the understatement in one line.
func (u Understatement) String() string {
	return fmt.Sprintf("%s: read op %d at %s answered index %d with Last-Contact %s, but missed put op %d (index %d) acknowledged %s earlier",
		u.Read.NodeName, u.Read.ID, u.Read.Call.Round(time.Millisecond), u.Read.Index, u.Read.LastContact,
		u.Missed.ID, u.Missed.Index, u.Stale.Round(time.Millisecond))
}

// UnderstatedStaleness lists default reads whose X-Beacon-Last-Contact
// understated how stale they were by more than margin. A read that returns
// an index below an acknowledged put's (of its key, or any put for a read of
// the whole service) did not see that put, so its answer was at least as
// old as the time since the put was acknowledged. Before
// cluster/freshness.go, Last-Contact measured only contact with a leader
// and understated by seconds after restarts, heals and pauses.
func UnderstatedStaleness(ops []Op, margin time.Duration) []Understatement {
	var puts []*Op
	for i := range ops {
		if o := &ops[i]; o.Kind == Put && o.Outcome == OK && o.Index > 0 {
			puts = append(puts, o)
		}
	}
	sort.Slice(puts, func(i, j int) bool { return puts[i].Return < puts[j].Return })
	var out []Understatement
	for i := range ops {
		r := &ops[i]
		if r.Kind != Read || r.Outcome != OK || r.Index == 0 || r.LastContact < 0 {
			continue
		}
		// The earliest-acknowledged put the read missed gives the bound.
		for _, w := range puts {
			if w.Return >= r.Call-margin {
				break
			}
			if w.Index > r.Index && (r.Key == AllKeys || r.Key == w.Key) {
				if stale := r.Call - w.Return; stale-r.LastContact > margin {
					out = append(out, Understatement{Read: *r, Missed: *w, Stale: stale})
				}
				break
			}
		}
	}
	return out
}
