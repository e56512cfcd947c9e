package cluster

import (
	"strings"
)

// joinErrors is memberlist's error of a join that reached no address, one
// line: each address's error (memberlist's own says "failed to join ADDR:
// ..." or "failed to resolve ADDR: ..."), separated by "; ". memberlist
// returns a go-multierror, whose text spans lines ("1 error occurred:\n\t*
// failed to join ..."), which an API error message or a log line shows
// with escaped tabs and newlines.
type joinErrors []error

func (e joinErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = strings.Join(strings.Fields(err.Error()), " ")
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the addresses' errors.
func (e joinErrors) Unwrap() []error { return e }

// flattenJoinError returns err as joinErrors when it holds several errors
// (memberlist's multierror), else err with its whitespace made one line.
func flattenJoinError(err error) error {
	if m, ok := err.(interface{ WrappedErrors() []error }); ok && len(m.WrappedErrors()) > 0 {
		return joinErrors(m.WrappedErrors())
	}
	if strings.ContainsAny(err.Error(), "\n\t") {
		return joinErrors{err}
	}
	return err
}
