package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func (r raftAt) with(term uint64) raftAt    { r.term = term; return r }
func (r raftAt) as(s raft.RaftState) raftAt { r.state = s; return r }

// TestFreshnessAge covers the rules of LastContact, including the two the
// chaos suite found missing (CI, seed 489858309): a proof that spans a
// pause of the process, and an election after the proof.
func TestFreshnessAge(t *testing.T) {
	const hb = 400 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	leader := raftAt{term: 5, state: raft.Leader}
	follower := raftAt{term: 5, state: raft.Follower}

	proved := func(now, at time.Time, term uint64) freshState { // as leader
		var f freshState
		f.proved(now, at, term, true, hb)
		return f
	}
	provedFollower := func(now, at time.Time, term uint64) freshState {
		var f freshState
		f.proved(now, at, term, false, hb)
		return f
	}
	cases := []struct {
		name string
		f    freshState
		now  time.Time
		r    raftAt
		want time.Duration
	}{
		{"never synced", freshState{tick: t0}, t0, follower, never},
		{"leader, proved just now", proved(t0, t0.Add(-5*time.Millisecond), 5), t0.Add(10 * time.Millisecond), leader, 0},
		{"follower, heard 3 ms ago", provedFollower(t0, t0, 5), t0.Add(50 * time.Millisecond),
			func() raftAt { r := follower; r.heard = t0.Add(47 * time.Millisecond); return r }(), 3 * time.Millisecond},
		// The node's own loop did not run for longer than the heartbeat
		// timeout: counts from the proof.
		{"stalled loop", proved(t0, t0, 5), t0.Add(2 * time.Second), leader, 2 * time.Second},
		// The CI failure: the new leader's barrier began 31 ms into its
		// leadership, the process was paused for 5.4 s, the barrier then
		// completed and raft still said Leader. Before the fix this
		// answered 0.
		{"proof that spans a pause, still leader", proved(t0.Add(5400*time.Millisecond), t0, 5), t0.Add(5410 * time.Millisecond), leader, 5410 * time.Millisecond},
		// Then it heard the new leader's term and became a follower that
		// hears heartbeats at once, while the new leader's replication to
		// it is still backed off. Before the fix: a few ms.
		{"deposed: new term, heartbeats", proved(t0.Add(5400*time.Millisecond), t0, 5), t0.Add(5430 * time.Millisecond),
			func() raftAt { r := follower.with(6); r.heard = t0.Add(5429 * time.Millisecond); return r }(), 5430 * time.Millisecond},
		{"leader, after an election it has not proved itself in", proved(t0, t0, 5), t0.Add(100 * time.Millisecond), leader.with(7), 100 * time.Millisecond},
		// CI, seed 684473574: a leader steps down without a new term
		// (hashicorp/raft keeps it until the new leader's first RPC) and
		// raft's last contact is recent; its leader proof says nothing
		// about what it applied since. Before the fix: 2 ms.
		{"proved as leader, stepped down in the same term", proved(t0, t0, 5), t0.Add(150 * time.Millisecond),
			func() raftAt { r := follower; r.heard = t0.Add(148 * time.Millisecond); return r }(), 150 * time.Millisecond},
		// And the other way round: a follower's proof does not make it a
		// current leader.
		{"proved as follower, now leader in the same term", provedFollower(t0, t0, 5), t0.Add(80 * time.Millisecond), leader, 80 * time.Millisecond},
		{"follower after an election", proved(t0, t0, 5), t0.Add(300 * time.Millisecond),
			func() raftAt {
				r := follower.with(6).as(raft.Follower)
				r.heard = t0.Add(299 * time.Millisecond)
				return r
			}(), 300 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.f.age(c.now, hb, c.r); got != c.want {
				t.Fatalf("age = %v, want %v", got, c.want)
			}
		})
	}
}

// TestProofThatSpansAPauseIsNotLive: the loop's tick moves to the proof's
// start when the proof took longer than the heartbeat timeout, so syncLoop
// proves again at its next tick.
func TestProofThatSpansAPauseIsNotLive(t *testing.T) {
	const hb = 400 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	var f freshState
	f.proved(t0.Add(100*time.Millisecond), t0, 3, false, hb)
	if !f.tick.Equal(t0.Add(100 * time.Millisecond)) {
		t.Fatalf("a 100 ms proof: tick = %v, want the time it completed", f.tick)
	}
	f.proved(t0.Add(3*time.Second), t0, 3, false, hb)
	if !f.tick.Equal(t0) || !f.syncedAt.Equal(t0) || f.term != 3 || !f.synced {
		t.Fatalf("a 3 s proof: %+v, want synced in term 3 as of its start with the tick there too", f)
	}
}

// TestProvenLeader: the rule under which readIndexLocal trusts VerifyLeader
// without a barrier.
func TestProvenLeader(t *testing.T) {
	const hb = 400 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	leader := raftAt{term: 5, state: raft.Leader}
	asLeader := func(now time.Time, term uint64, asLeader bool) freshState {
		var f freshState
		f.proved(now, now.Add(-2*time.Millisecond), term, asLeader, hb)
		return f
	}
	for _, c := range []struct {
		name string
		f    freshState
		now  time.Time
		r    raftAt
		want bool
	}{
		{"proved leader, loop ran just now", asLeader(t0, 5, true), t0.Add(10 * time.Millisecond), leader, true},
		{"never proved", freshState{tick: t0}, t0, leader, false},
		{"loop stalled past half a heartbeat timeout", asLeader(t0, 5, true), t0.Add(hb/2 + time.Millisecond), leader, false},
		{"proof made as follower", asLeader(t0, 5, false), t0.Add(10 * time.Millisecond), leader, false},
		{"new term", asLeader(t0, 5, true), t0.Add(10 * time.Millisecond), leader.with(6), false},
		{"stepped down", asLeader(t0, 5, true), t0.Add(10 * time.Millisecond), leader.as(raft.Follower), false},
	} {
		if got := c.f.provenLeader(c.now, hb, c.r); got != c.want {
			t.Errorf("%s: provenLeader = %v, want %v", c.name, got, c.want)
		}
	}
}

// liveRaft is a follower that hears its leader at the very moment it is
// asked: its last contact is the clock's reading then.
type liveRaft struct{ term uint64 }

func (r liveRaft) CurrentTerm() uint64    { return r.term }
func (r liveRaft) State() raft.RaftState  { return raft.Follower }
func (r liveRaft) LastContact() time.Time { return time.Now() }

// TestAgeReadsRaftBeforeTheClock: a heartbeat recorded while LastContact
// runs must not make a follower's age negative (or zero): a max_stale=1ns
// read then skipped its read index. Reading the clock first fails this.
func TestAgeReadsRaftBeforeTheClock(t *testing.T) {
	const hb = time.Hour // the proof stays live however slow the machine
	var f freshState
	now := time.Now()
	f.proved(now, now, 7, false, hb)
	for range 1000 {
		if got := f.ageNow(time.Now, hb, liveRaft{term: 7}); got <= 0 {
			t.Fatalf("a caught-up follower's age is %s, want more than 0", got)
		}
	}
}
