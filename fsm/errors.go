package fsm

import (
	"errors"
	"fmt"
)

// Errors a well-formed command can be rejected with. They travel between
// nodes by Code, so a forwarded write fails on the follower exactly as it
// would have on the leader.
var (
	ErrNotFound = errors.New("fsm: not found")
	ErrConflict = errors.New("fsm: conflict")
	ErrNotOwner = errors.New("fsm: check not owned by proposer")
	ErrInvalid  = errors.New("fsm: invalid command")
)

var errorCodes = map[string]error{
	"not_found":    ErrNotFound,
	"conflict":     ErrConflict,
	"not_owner":    ErrNotOwner,
	"invalid":      ErrInvalid,
	"bad_snapshot": ErrBadSnapshot,
}

// RejectError is a command rejected by Apply, with the reason. It wraps one
// of the Err values above.
type RejectError struct {
	Kind error
	Msg  string
}

func (e *RejectError) Error() string { return e.Msg }
func (e *RejectError) Unwrap() error { return e.Kind }

// Code returns the stable wire name of the error's kind.
func (e *RejectError) Code() string {
	for c, k := range errorCodes {
		if k == e.Kind {
			return c
		}
	}
	return "invalid"
}

func reject(kind error, format string, args ...any) *RejectError {
	return &RejectError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// RejectFromCode rebuilds a RejectError received from another node.
func RejectFromCode(code, msg string) *RejectError {
	k, ok := errorCodes[code]
	if !ok {
		k = ErrInvalid
	}
	return &RejectError{Kind: k, Msg: msg}
}

// ApplyResult is what Apply returns for each command: the log index it was
// applied at, if the command was rejected, why, and the decoded command (nil
// for an unknown command skipped), which the leader's audit line describes.
//
// The command is read-only: a registration's Tags and (as MetaMap returns
// it) meta may be the catalog's shared values (decodeRegisterShared), and
// its Meta field is nil when the meta was decoded straight into them; read
// the meta with RegisterRequest.MetaMap.
type ApplyResult struct {
	Index uint64
	Err   *RejectError
	Cmd   Command
}
