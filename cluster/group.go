package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
)

// Group commit. hashicorp/raft already writes the entries waiting at one
// moment with one log append and sends them in one AppendEntries, but every
// entry still costs its own log record (a msgpack encoding and a B+tree
// insert in raft-boltdb, on every node), its own frame on the wire and its
// own future. The grouper puts the writes that arrive while Raft is busy
// with earlier ones into one log entry (fsm.GroupType): a burst of N
// registrations becomes one entry of N members.
//
// It never waits to fill a group. A write is sent at once if no entry of
// this leader's is in flight (groupInFlight; an entry is in flight until
// Raft answers its future, once the leader's FSM has applied it);
// otherwise it joins the writes queued behind that entry, and they all go
// as one entry when it has been answered. So a leader whose FSM lags
// behind its commits takes new writes into its log only as it applies:
// writes wait in the queue instead of in Raft's apply pipeline. A lone writer therefore sees no delay, and under load the
// groups grow with the load. A queue of one goes as a plain entry tagged
// with its request id, as before group commit.
//
// Each member carries its request id (see applyOnceLocal), so a write re-sent
// after an unknown outcome is found inside a group as well (findRequest),
// and each member gets its own result: a rejected member does not affect
// the others, which are applied in order in the same transaction.
//
// A node whose binary predates group entries would stop at one (it must not
// drift), so groups are written only while every server in the Raft
// configuration advertises logFormatGroups in its gossip metadata; until
// then the queued writes go as plain entries, one each.

const (
	// groupInFlight is how many entries of this leader's may be between
	// ApplyLog and their result before new writes queue. One measured
	// best, at 8 clients as at 64 (against 2 and 3: the bigger groups save
	// more than the overlap of the leader's fsync with the followers'
	// gains; docs/benchmarks.md).
	groupInFlight = 1
	// maxGroupMembers and maxGroupBytes bound one group entry; what does
	// not fit waits for the next slot. A command alone larger than
	// maxGroupBytes goes as a plain entry.
	maxGroupMembers = 256
	maxGroupBytes   = 256 << 10
)

// logFormatGroups is the log format (gossip metadata) of a binary that
// applies group entries.
const logFormatGroups = 1

// logFormatExternal is the log format of a binary that also applies the
// entries of external nodes (Consul's catalog register and deregister:
// fsm.CatalogRegisterType, fsm.CatalogDeregisterType). A node advertises
// the newest format it applies.
const logFormatExternal = 2

// errFormatPending refuses a command some server in the configuration
// could not apply (admit).
var errFormatPending = &fsm.RejectError{Kind: fsm.ErrConflict,
	Msg: "not every server's release applies external nodes' entries yet (a server would stop at one): upgrade every server, then retry"}

// admit refuses, on the leader, a command whose log format some server in
// the configuration does not advertise: that server would stop at the
// entry (docs/operations.md, rolling upgrades).
func (n *Node) admit(cmd []byte) error {
	if len(cmd) == 0 {
		return nil
	}
	switch fsm.MessageType(cmd[0]) {
	case fsm.CatalogRegisterType, fsm.CatalogDeregisterType:
		if !n.formatAllowed(logFormatExternal) {
			return errFormatPending
		}
	}
	return nil
}

type groupMember struct {
	ctx  context.Context
	id   [fsm.GroupIDLen]byte
	term uint64 // the term the sender saw this node lead in (0: any)
	cmd  []byte
	done chan struct{}
	idx  uint64
	err  error
}

type grouper struct {
	n     *Node
	slots chan struct{}
	// stopped is closed when the node shuts down: writes still waiting
	// are answered then (hashicorp/raft does not answer the futures of
	// committed entries its FSM had not applied when it shut down).
	stopped  chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	queue   []*groupMember
	running bool // a drain goroutine is running

	// waiting counts the writes in the grouper: queued or being committed.
	waiting atomic.Int64
}

func newGrouper(n *Node) *grouper {
	return &grouper{n: n, slots: make(chan struct{}, groupInFlight), stopped: make(chan struct{})}
}

// stop answers every write still waiting, and every later one, with
// ErrUnknownOutcome; Node.stop calls it once Raft has shut down.
func (g *grouper) stop() { g.stopOnce.Do(func() { close(g.stopped) }) }

// errStopped answers the writes waiting when the node shut down: each may
// have been committed.
var errStopped = fmt.Errorf("%w: the node shut down with the write in flight", ErrUnknownOutcome)

// apply commits cmd, tagged with request id id, and returns its result as
// applyLocal does. A write sent for term (not 0) is refused with
// ErrNotLeader, not run, if this node's term has changed by the time it
// leaves the queue (the term fence of applyOnceLocal, checked again).
func (g *grouper) apply(ctx context.Context, id [fsm.GroupIDLen]byte, term uint64, cmd []byte) (uint64, error) {
	m := &groupMember{ctx: ctx, id: id, term: term, cmd: cmd, done: make(chan struct{})}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	g.mu.Lock()
	g.queue = append(g.queue, m)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go g.drain()
	}
	// Not abandoned when ctx ends: the write may still commit, and
	// onceCalls hands this result to a concurrent attempt of the same
	// request. Raft answers every future while it runs (committed,
	// leadership lost), and the node's shutdown answers the rest.
	select {
	case <-m.done:
	case <-g.stopped:
		select {
		case <-m.done:
		default:
			return 0, errStopped
		}
	}
	return m.idx, m.err
}

// drain sends the queue as entries while there is one, taking a slot for
// each, and ends when the queue is empty.
func (g *grouper) drain() {
	for {
		select {
		case g.slots <- struct{}{}:
		case <-g.stopped:
			g.mu.Lock()
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Lock()
		batch, size := g.take()
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			<-g.slots
			return
		}
		g.mu.Unlock()
		go func() {
			defer func() { <-g.slots }()
			g.commit(batch, size)
		}()
	}
}

// take removes from the queue the writes that fit in one entry and
// returns them with the size of that entry as a group.
func (g *grouper) take() (batch []*groupMember, size int) {
	n := 0
	size = 1
	for n < len(g.queue) && n < maxGroupMembers {
		s := fsm.GroupMemberSize(g.queue[n].cmd)
		if n > 0 && size+s > maxGroupBytes {
			break
		}
		size += s
		n++
	}
	batch = g.queue[:n:n]
	if n == len(g.queue) {
		g.queue = nil
	} else {
		g.queue = g.queue[n:]
	}
	return batch, size
}

// commit sends batch as one group entry (size bytes), or as plain entries
// when it holds one write or a server cannot read groups, and answers each
// member.
func (g *grouper) commit(batch []*groupMember, size int) {
	n := g.n
	// The term fence: a write that waited in the queue while this node
	// lost and regained leadership must not run in the new term.
	term := n.raft.CurrentTerm()
	kept := batch[:0]
	for _, m := range batch {
		if m.term != 0 && m.term != term {
			m.err = fmt.Errorf("%w: request sent for term %d, this leader is in term %d", ErrNotLeader, m.term, term)
			close(m.done)
			size -= fsm.GroupMemberSize(m.cmd)
			continue
		}
		kept = append(kept, m)
	}
	if batch = kept; len(batch) == 0 {
		return
	}
	start := time.Now()
	if len(batch) == 1 || !n.groupsAllowed() {
		// Plain entries, tagged with their request ids. Several are handed
		// to Raft together so that its leader loop takes them in one log
		// append (its apply channel is unbuffered: see startRaft).
		plain := func(m *groupMember) raft.ApplyFuture {
			return n.raft.ApplyLog(raft.Log{Data: m.cmd, Extensions: append([]byte(onceExtension), m.id[:]...)}, n.cfg.LeaderWait)
		}
		futures := make([]raft.ApplyFuture, len(batch))
		if len(batch) == 1 {
			futures[0] = plain(batch[0])
		} else {
			var handed sync.WaitGroup
			for i, m := range batch {
				handed.Add(1)
				go func() {
					defer handed.Done()
					futures[i] = plain(m)
				}()
			}
			handed.Wait()
		}
		for i, m := range batch {
			m.idx, m.err = n.answerPlain(m.ctx, m.cmd, futures[i], start)
			n.metrics.groupSize.Observe(1)
			close(m.done)
		}
		return
	}
	data := make([]byte, 1, size)
	data[0] = byte(fsm.GroupType)
	for _, m := range batch {
		data = fsm.AppendGroupMember(data, m.id, m.cmd)
	}
	n.metrics.groupSize.Observe(float64(len(batch)))
	res, err := n.applied(n.raft.ApplyLog(raft.Log{Data: data}, n.cfg.LeaderWait), start)
	var results fsm.GroupResult
	if err == nil {
		var ok bool
		if results, ok = res.(fsm.GroupResult); !ok || len(results) != len(batch) {
			err = fmt.Errorf("cluster: unexpected apply response %T for a group of %d", res, len(batch))
		}
	}
	for i, m := range batch {
		if err != nil {
			m.err = err
		} else {
			m.idx, m.err = n.answer(m.ctx, m.cmd, results[i])
		}
		close(m.done)
	}
}

// applied waits for f and returns the FSM's response, with Raft's errors
// mapped for CallLeader's classification.
func (n *Node) applied(f raft.ApplyFuture, start time.Time) (any, error) {
	err := n.await(f)
	n.metrics.raftApply.Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, ErrNotLeader
		}
		if errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
	n.nudge.note(n.raft.LastIndex())
	return f.Response(), nil
}

// groupsAllowed reports whether every server in the latest Raft
// configuration reads group entries, by its gossip metadata.
func (n *Node) groupsAllowed() bool { return n.formatAllowed(logFormatGroups) }

// formatAllowed reports whether every server in the latest Raft
// configuration advertises log format f or newer in its gossip metadata.
func (n *Node) formatAllowed(f int) bool {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	servers := cf.Configuration().Servers
	if len(servers) == 0 {
		return false
	}
	for _, s := range servers {
		m, ok := n.gossip.member(string(s.ID))
		if !ok || m.LogFormat < f {
			return false
		}
	}
	return true
}
