package cluster

import (
	"errors"
	"net"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// quietClose is the Raft transport's logger. The transport logs
// "failed to decode incoming command" at ERROR whenever a connection it
// reads from is closed, including when this node closes it itself (a
// graceful leave, a shutdown): an operator who ran `beacon leave` must not
// find an ERROR line for it. A read failing with net.ErrClosed ("use of
// closed network connection") is logged at DEBUG; every other error stays.
type quietClose struct{ hclog.Logger }

func (q quietClose) Error(msg string, args ...any) {
	if closedByUs(args) {
		q.Logger.Debug(msg, args...)
		return
	}
	q.Logger.Error(msg, args...)
}

func (q quietClose) Named(name string) hclog.Logger { return quietClose{q.Logger.Named(name)} }

func (q quietClose) With(args ...any) hclog.Logger { return quietClose{q.Logger.With(args...)} }

// closedByUs reports whether a key/value list carries an error that is a
// read on a connection this process closed.
func closedByUs(args []any) bool {
	for _, a := range args {
		// The decoder may hand the read error on without wrapping it in a
		// way errors.Is follows; its text is net.ErrClosed's then.
		if err, ok := a.(error); ok && (errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), net.ErrClosed.Error())) {
			return true
		}
	}
	return false
}
