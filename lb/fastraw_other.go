//go:build !linux

package lb

import "errors"

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

var errWouldBlock = errors.New("lb: would block")

func rawRead(int, []byte) (int, error) { return 0, errWouldBlock }

func (c *fastConn) runWatchDup(done chan struct{}) { c.runWatch(done) }
