package api

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/beaconhq/beacon/connlimit"
)

// Parking a blocking query.
//
// A blocking query waits minutes for a change. Waiting inside its handler
// keeps everything net/http holds for a request in flight: the
// connection's goroutine (its stack grown to 8 KB by the request's path),
// the background reader that notices a client going away, the connection's
// 4 KB reader and writer and the response's 2 KB buffer, the request and
// its contexts: 27 KB per parked query, measured (docs/benchmarks.md).
//
// Block parks such a query instead: it takes the connection out of
// net/http (it hijacks it), the handler returns, and net/http lets go of
// all of that. The query waits in the parking lot with only what it needs:
// its connection, its closures, a timer for its deadline, and no
// goroutine. Queries that wait on the same channels (the watchers of one
// service) form a group that wakes together (watchGroup); one goroutine
// waits on the channels of up to 128 groups (watcher); a wake runs each
// member's next step in a goroutine that ends when the step does. When the
// query has its answer, the lot writes the response on the connection
// itself and hands the connection to a second http.Server over the same
// handler (Server.resumed), which serves the client's next request on it
// as on any kept-alive connection. The client sees one HTTP/1.1 connection
// throughout.
//
// What net/http did for the waiting request, the lot does for a parked one:
// a client that goes away is noticed (by the connection's TCP state, looked
// at every parkSweepEvery, not by a reader per connection), the response is
// written under a deadline, the server's shutdown answers every parked
// query (503) and waits for it, and the middleware's metrics count the
// request when it is answered, not when it parked.

// parkSweepEvery is how often the lot looks for parked queries whose
// client has gone. A query whose client went away holds its slot (and
// MaxBlockingQueries) until the next look.
const parkSweepEvery = time.Second

// parkWriteTimeout bounds writing a parked query's response: a client that
// stops reading loses its connection rather than hold the lot's goroutine.
const parkWriteTimeout = 30 * time.Second

// parkLot holds the connections of parked queries while they wait.
type parkLot struct {
	base    context.Context
	resumed *connlimit.Handoff // the resumed server's listener
	metrics *httpMetrics

	mu     sync.Mutex
	closed bool
	parked map[*parkedQuery]struct{}
	groups map[watchKey]*watchGroup
	// watchers wait on the groups' channels (watcher).
	watchers []*watcher
	wg       sync.WaitGroup // each parked query, each watcher

	stopSweep chan struct{}
	sweepDone chan struct{}
}

func newParkLot(base context.Context, addr net.Addr, m *httpMetrics) *parkLot {
	l := &parkLot{base: base, resumed: connlimit.NewHandoff(addr), metrics: m, parked: map[*parkedQuery]struct{}{}, groups: map[watchKey]*watchGroup{},
		stopSweep: make(chan struct{}), sweepDone: make(chan struct{})}
	go l.sweep()
	return l
}

// enter reserves a goroutine of the lot, or reports that the lot is closed.
func (l *parkLot) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// close stops parking: queries that come later wait in their handlers, the
// sweeper stops, and the resumed connections' listener closes. endAll ends
// the waits of the queries parked; wait waits for their answers.
func (l *parkLot) close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stopSweep)
	}
	l.mu.Unlock()
	l.resumed.Close()
}

// stopped waits for the sweeper to stop, after close.
func (l *parkLot) stopped() { <-l.sweepDone }

// wait waits until every parked query has been answered, or ctx ends.
func (l *parkLot) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// count is how many queries are parked now.
func (l *parkLot) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.parked)
}

// sweep ends the wait of parked queries whose client has gone.
func (l *parkLot) sweep() {
	defer close(l.sweepDone)
	t := time.NewTicker(parkSweepEvery)
	defer t.Stop()
	var batch []*parkedQuery
	for {
		select {
		case <-l.stopSweep:
			return
		case <-t.C:
		}
		l.mu.Lock()
		batch = batch[:0]
		for p := range l.parked {
			if !p.gone {
				batch = append(batch, p)
			}
		}
		l.mu.Unlock()
		for _, p := range batch {
			if peerGone(p.conn) {
				l.mu.Lock()
				p.gone = true
				l.mu.Unlock()
				p.end(context.Canceled)
			}
		}
		clear(batch)
	}
}

// Next is a blocking query's step after a wait: err is nil when a channel
// of the watch set fired, context.DeadlineExceeded when the query's wait
// ended, and another error when the client went away, the server shuts
// down, or the request's token was deleted while it waited (a 403
// invalid_token error, to be written as the answer: no data read after the
// deletion reaches the client). Next either writes the answer to w and returns nil, or returns the
// watch set to wait on next (after running the query again and finding its
// result unchanged). It must use only what its closure holds: it may run in
// another goroutine than the handler's, with another ResponseWriter.
type Next func(w http.ResponseWriter, err error) memdb.WatchSet

// Block waits for a blocking query whose first run must wait: on ws, until
// deadline (the end of its wait), calling next after each wait until next
// has answered. Where it can, it parks the query out of net/http (see
// above): the handler then returns at once, and next runs later in another
// goroutine, writing to a ResponseWriter whose answer goes to the client
// on the same connection. Where it cannot (HTTP/2 or HTTP/1.0, a request
// that asks to close its connection or carries a body, a handler served
// outside Server.Serve, a server shutting down), it waits in the handler,
// ending early if r's context ends. Either way the handler must not touch
// w after Block returns.
func Block(w http.ResponseWriter, r *http.Request, deadline time.Time, ws memdb.WatchSet, next Next) {
	next = recheckToken(identityFrom(r.Context()), next)
	if park(w, r, deadline, ws, next) {
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	for ws != nil {
		ws = next(w, ws.WatchCtx(ctx))
	}
}

// recheckToken makes next ask, at every wake, whether the request's token
// still exists: a blocking query authorized with a token that is deleted
// while it waits answers 403 invalid_token when it wakes (a change, or
// its wait's end), as a new request with that token would, rather than
// the data written after the deletion. Only stored tokens can be deleted:
// next is returned as it is for the others.
func recheckToken(id identity, next Next) Next {
	if id.hash == "" {
		return next
	}
	return func(w http.ResponseWriter, err error) memdb.WatchSet {
		if (err == nil || errors.Is(err, context.DeadlineExceeded)) && id.revoked() {
			err = errInvalidToken
		}
		return next(w, err)
	}
}

// parkedQuery is a parked query between its wakes. It holds no context:
// a timer ends its wait, the sweeper and the lot's shutdown end it directly
// (end). With a context (a deadline and an AfterFunc) a parked query held
// 3.2 KB of live heap on one agent, without it 1.9 KB.
type parkedQuery struct {
	l     *parkLot
	conn  net.Conn
	timer *time.Timer // ends the wait at its deadline
	next  Next
	w     *parkedResponse
	st    *requestState // the middleware's: the route, to count the request once answered
	// Under the lot's mutex: why the wait ended early or at its deadline
	// (nil while it goes on); the group the query waits in (nil while it
	// runs, or waits on a set too large to share); the cancel of that
	// larger set's wait; gone, set once the client is seen gone.
	err         error
	group       *watchGroup
	cancelLarge context.CancelFunc
	gone        bool
}

// watchGroup is the parked queries whose watch set is the same few
// channels (the watchers of one service, say): they wake together.
type watchGroup struct {
	key     watchKey
	members map[*parkedQuery]struct{}
	// w is the watcher that waits on the group's channels, at w.groups[at]
	// (under the lot's mutex).
	w  *watcher
	at int
}

// watcher is one goroutine waiting on the channels of up to
// groupsPerWatcher groups at once (reflect.Select). Parked queries cost no
// goroutine of their own, and neither do groups: a thousand services
// watched take eight goroutines, not a thousand.
type watcher struct {
	l      *parkLot
	groups []*watchGroup // under the lot's mutex
	change chan struct{} // one pending signal: groups changed, select again
}

// groupsPerWatcher bounds a watcher's select (each change of its groups
// rebuilds it, in time linear in its size).
const groupsPerWatcher = 128

// watchKey is a watch set of up to three channels, in address order, the
// rest nil.
type watchKey [3]<-chan struct{}

// keyOf returns ws as a watchKey, or false if it has more channels.
func keyOf(ws memdb.WatchSet) (watchKey, bool) {
	var k watchKey
	if len(ws) > len(k) {
		return k, false
	}
	n := 0
	for c := range ws {
		k[n] = c
		n++
	}
	slices.SortFunc(k[:n], func(a, b <-chan struct{}) int {
		return cmp.Compare(reflect.ValueOf(a).Pointer(), reflect.ValueOf(b).Pointer())
	})
	return k, true
}

// park hijacks r's connection and waits for the query in the lot, or
// reports that it cannot.
func park(w http.ResponseWriter, r *http.Request, deadline time.Time, ws memdb.WatchSet, next Next) bool {
	st := stateFrom(r.Context())
	if st == nil || st.lot == nil || r.Method != http.MethodGet ||
		r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.Close || r.ContentLength != 0 {
		return false
	}
	l := st.lot
	if !l.enter() {
		return false
	}
	header := w.Header().Clone()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		l.wg.Done()
		return false
	}
	// Bytes the client sent after this request (pipelining) belong to its
	// next request: the resumed server reads them first.
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		conn = &prefixConn{Conn: conn, pending: bytes.Clone(b)}
	}
	st.parked = true
	st.query = nil // the handler is done with it; the lot keeps st until the answer
	p := &parkedQuery{l: l, conn: conn, next: next, w: &parkedResponse{header: header}, st: st}
	// Set before it can fire: end reads nothing of it, woke stops it.
	p.timer = time.AfterFunc(time.Hour, func() { p.end(context.DeadlineExceeded) })
	p.timer.Reset(time.Until(deadline))
	l.mu.Lock()
	l.parked[p] = struct{}{}
	if l.closed {
		p.err = context.Canceled // shutting down: endAll may have run already
	}
	l.mu.Unlock()
	p.watchOn(ws)
	return true
}

// watchOn makes the query wait on ws: in the group of queries waiting on
// the same channels, or, for a larger set, in a goroutine of its own. If
// the wait has ended meanwhile, the query answers at once.
func (p *parkedQuery) watchOn(ws memdb.WatchSet) {
	l := p.l
	l.mu.Lock()
	if err := p.err; err != nil {
		l.mu.Unlock()
		p.woke(err)
		return
	}
	key, ok := keyOf(ws)
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		p.cancelLarge = cancel
		l.mu.Unlock()
		go p.watchLarge(ctx, ws)
		return
	}
	g := l.groups[key]
	if g == nil {
		g = &watchGroup{key: key, members: map[*parkedQuery]struct{}{}}
		l.groups[key] = g
		l.addGroup(g)
	}
	g.members[p] = struct{}{}
	p.group = g
	l.mu.Unlock()
}

// addGroup gives g to a watcher with room, or to a new one. Under the
// lot's mutex.
func (l *parkLot) addGroup(g *watchGroup) {
	var w *watcher
	for _, c := range l.watchers {
		if len(c.groups) < groupsPerWatcher {
			w = c
			break
		}
	}
	if w == nil {
		w = &watcher{l: l, change: make(chan struct{}, 1)}
		l.watchers = append(l.watchers, w)
		l.wg.Add(1) // a parked query's count is held: the lot's wait has not returned
		go w.run()
	}
	g.w, g.at = w, len(w.groups)
	w.groups = append(w.groups, g)
	w.signal()
}

// dropGroup takes g from the lot and its watcher. Under the lot's mutex.
func (l *parkLot) dropGroup(g *watchGroup) {
	if l.groups[g.key] == g {
		delete(l.groups, g.key)
	}
	w := g.w
	if w == nil {
		return
	}
	last := len(w.groups) - 1
	w.groups[g.at] = w.groups[last]
	w.groups[g.at].at = g.at
	w.groups[last] = nil
	w.groups = w.groups[:last]
	g.w = nil
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.change <- struct{}{}:
	default:
	}
}

// run selects on the channels of the watcher's groups (and its change
// signal) until it has no group left. When a group's channel fires, every
// member wakes, each in a goroutine of its own that runs its query again.
func (w *watcher) run() {
	l := w.l
	defer l.wg.Done()
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.change)}}
	var owners []*watchGroup
	for {
		l.mu.Lock()
		if len(w.groups) == 0 {
			l.watchers = slices.DeleteFunc(l.watchers, func(c *watcher) bool { return c == w })
			l.mu.Unlock()
			return
		}
		clear(cases[1:])
		clear(owners)
		cases, owners = cases[:1], owners[:0]
		for _, g := range w.groups {
			for _, c := range g.key {
				if c != nil {
					cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
					owners = append(owners, g)
				}
			}
		}
		l.mu.Unlock()
		chosen, _, _ := reflect.Select(cases)
		if chosen == 0 {
			continue // the groups changed
		}
		g := owners[chosen-1]
		l.mu.Lock()
		if g.w != w {
			l.mu.Unlock() // dropped meanwhile
			continue
		}
		l.dropGroup(g)
		members := g.members
		g.members = nil
		for p := range members {
			p.group = nil
		}
		l.mu.Unlock()
		for p := range members {
			go p.woke(nil)
		}
	}
}

// watchLarge waits on a watch set too large for a group, until it fires or
// end cancels ctx.
func (p *parkedQuery) watchLarge(ctx context.Context, ws memdb.WatchSet) {
	err := ws.WatchCtx(ctx)
	l := p.l
	l.mu.Lock()
	p.cancelLarge()
	p.cancelLarge = nil
	if err != nil {
		err = p.err
	}
	l.mu.Unlock()
	p.woke(err)
}

// end ends the query's wait with err (context.DeadlineExceeded at its
// deadline, context.Canceled when its client went away or the server shuts
// down), once: a query waiting in a group leaves it and answers, one
// waiting on a larger set is woken, and one running now answers at its
// next watchOn.
func (p *parkedQuery) end(err error) {
	l := p.l
	l.mu.Lock()
	if p.err != nil {
		l.mu.Unlock()
		return
	}
	p.err = err
	g := p.group
	if g != nil {
		p.group = nil
		delete(g.members, p)
		if len(g.members) == 0 {
			l.dropGroup(g)
		}
	}
	cancel := p.cancelLarge
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if g != nil {
		go p.woke(err)
	}
}

// woke runs the query's next step and waits again, or answers.
func (p *parkedQuery) woke(err error) {
	if ws := p.next(p.w, err); ws != nil {
		p.watchOn(ws)
		return
	}
	l := p.l
	defer l.wg.Done()
	p.timer.Stop()
	l.mu.Lock()
	delete(l.parked, p)
	gone := p.gone
	l.mu.Unlock()
	if gone {
		_ = p.conn.Close()
	} else {
		l.answer(p.conn, p.w)
	}
	l.metrics.answered(p.st.route, http.MethodGet, p.w.code())
}

// endAll ends every parked query's wait: the server shuts down. Queries
// parked after it find the lot closed (park).
func (l *parkLot) endAll() {
	l.mu.Lock()
	all := make([]*parkedQuery, 0, len(l.parked))
	for p := range l.parked {
		all = append(all, p)
	}
	l.mu.Unlock()
	for _, p := range all {
		p.end(context.Canceled)
	}
}

// answer writes a parked query's response on its connection and hands the
// connection to the resumed server, or closes it (a failed write, a
// server shutting down).
func (l *parkLot) answer(conn net.Conn, pw *parkedResponse) {
	keep := l.base.Err() == nil
	head := pw.head(keep)
	_ = conn.SetWriteDeadline(time.Now().Add(parkWriteTimeout))
	var err error
	if pw.body.Len() <= 4<<10 {
		_, err = conn.Write(append(head, pw.body.Bytes()...))
	} else if _, err = conn.Write(head); err == nil {
		_, err = conn.Write(pw.body.Bytes())
	}
	if err != nil || !keep || conn.SetDeadline(time.Time{}) != nil || !l.resumed.Give(conn) {
		_ = conn.Close()
	}
}

// parkedResponse is the ResponseWriter of a parked query: it keeps the
// answer until it is written on the connection in one piece, with its
// length.
type parkedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (p *parkedResponse) Header() http.Header { return p.header }

func (p *parkedResponse) WriteHeader(code int) {
	if p.status == 0 && code >= 200 {
		p.status = code
	}
}

func (p *parkedResponse) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return p.body.Write(b)
}

func (p *parkedResponse) code() int {
	if p.status == 0 {
		return http.StatusOK
	}
	return p.status
}

// head is the status line and the header of the response, as net/http
// would write them for a handler that wrote it all at once (appendHead).
func (p *parkedResponse) head(keep bool) []byte {
	code := p.code()
	if !bodyAllowed(code) {
		p.body.Reset()
	}
	date := time.Now().UTC().AppendFormat(nil, http.TimeFormat)
	return appendHead(make([]byte, 0, 512), code, p.header, p.body.Len(), p.body.Bytes(), keep, date)
}

// prefixConn is a connection with bytes already read from it, returned
// first.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// NetConn returns the wrapped connection.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }
