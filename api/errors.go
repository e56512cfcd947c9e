package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// ValidationError is bad input; it names the offending field and becomes a 400.
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// statusError carries an explicit status and code.
type statusError struct {
	status int
	code   string
	msg    string
}

func (e *statusError) Error() string { return e.msg }

var (
	errNotFoundRoute = &statusError{http.StatusNotFound, "no_route", "no such route"}
	errTooLarge      = &statusError{http.StatusRequestEntityTooLarge, "too_large", "request body too large"}
	errShuttingDown  = &statusError{http.StatusServiceUnavailable, "shutting_down", "the node is shutting down"}
	errBodyTimeout   = &statusError{http.StatusRequestTimeout, "body_timeout", "request body not received within the server's read timeout"}
)

func notFound(format string, args ...any) error {
	return &statusError{http.StatusNotFound, "not_found", fmt.Sprintf(format, args...)}
}

// coded is implemented by errors from packages the API does not import
// (the cluster's no_leader, not_leader, unknown_outcome).
type coded interface{ ErrorCode() string }

// statusOf maps an error to its HTTP status, code and field. It is the one
// place that decides how errors look to clients.
func statusOf(err error) (int, string, string) {
	var ve *ValidationError
	var se *statusError
	var mbe *http.MaxBytesError
	var ce coded
	switch {
	case errors.As(err, &ve):
		return http.StatusBadRequest, "invalid", ve.Field
	case errors.As(err, &se):
		return se.status, se.code, ""
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "too_large", ""
	case errors.Is(err, fsm.ErrBadSnapshot):
		return http.StatusBadRequest, "bad_snapshot", ""
	case errors.Is(err, fsm.ErrNotFound):
		return http.StatusNotFound, "not_found", ""
	case errors.Is(err, fsm.ErrConflict):
		return http.StatusConflict, "conflict", ""
	case errors.Is(err, fsm.ErrInvalid):
		return http.StatusBadRequest, "invalid", ""
	case errors.Is(err, fsm.ErrNotOwner):
		return http.StatusForbidden, "not_owner", ""
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout", ""
	case errors.Is(err, context.Canceled):
		return 499, "canceled", ""
	case errors.As(err, &ce):
		switch ce.ErrorCode() {
		case "no_leader", "not_leader", "unknown_outcome":
			return http.StatusServiceUnavailable, ce.ErrorCode(), ""
		}
	}
	return http.StatusInternalServerError, "internal", ""
}

// writeError writes err as a JSON error body with the status statusOf picks.
// 503s and 429s carry Retry-After.
func writeError(w http.ResponseWriter, err error) {
	status, code, field := statusOf(err)
	msg := err.Error()
	if status == http.StatusRequestEntityTooLarge {
		msg = errTooLarge.msg
	}
	if code == "unknown_outcome" {
		msg += " (the write may or may not have been applied; writes are idempotent, so retrying is safe)"
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		h.Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		// Every 401 says how to authenticate (RFC 9110), the Consul
		// paths' too (they write through WriteError).
		h.Set("WWW-Authenticate", `Bearer realm="beacon"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: msg, Code: code, Field: field})
}
