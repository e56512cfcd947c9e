//go:build !linux

package lb

// rawLoop is Linux's (fastraw_linux.go); elsewhere every request takes
// serve's ordinary path.
type rawLoop struct{}

type loopResult int

const (
	loopClose loopResult = iota
	loopSlow
)

func (*rawLoop) ok() bool { return false }

func (*fastConn) initRaw() {}

func (*fastConn) runRaw() loopResult { return loopSlow }

func (c *fastConn) runWatchDup(done chan struct{}) { c.runWatch(done) }
