package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// HeaderAgent marks every answer of a Beacon agent's HTTP API, so that a
// client pointed at something else (a load balancer, another web server)
// can say so instead of showing that server's page as an error.
const HeaderAgent = "X-Beacon-Agent"

// UnreachableError is returned when no agent could be reached: it names
// every address tried and what happened there.
type UnreachableError struct {
	Addrs []string
	Errs  []error
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	b.WriteString("client: no agent reachable (")
	for i, a := range e.Addrs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", a, brief(e.Errs[i]))
	}
	b.WriteString(")")
	return b.String()
}

// Unwrap returns the last error, so errors.Is sees it (e.g. ECONNREFUSED).
func (e *UnreachableError) Unwrap() error {
	if len(e.Errs) == 0 {
		return nil
	}
	return e.Errs[len(e.Errs)-1]
}

// brief shortens a transport error to what happened.
func brief(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// NotAgentError is returned when the address answered HTTP but not as a
// Beacon agent's API.
type NotAgentError struct {
	Addr   string
	Status int
	// Server and ContentType describe what answered, when it said;
	// Message is the error of a JSON error body, if it had one.
	Server, ContentType, Message string
}

func (e *NotAgentError) Error() string {
	what := ""
	if e.Server != "" {
		what = ", Server: " + e.Server
	}
	if e.ContentType != "" {
		what += ", " + e.ContentType
	}
	if e.Message != "" {
		what += fmt.Sprintf(", saying %q", e.Message)
	}
	return fmt.Sprintf("client: %s is not a Beacon agent API: it answered HTTP %d%s without Beacon's headers (a load balancer or another web server?)", e.Addr, e.Status, what)
}

// fromAgent reports whether resp comes from a Beacon agent. Agents mark
// every answer with HeaderAgent; older agents' reads and writes still carry
// X-Beacon-Index.
func fromAgent(resp *http.Response) bool {
	return resp.Header.Get(HeaderAgent) != "" || resp.Header.Get("X-Beacon-Index") != ""
}

// notAgent describes what answered instead of an agent; b is the start of
// the body of an error answer (nil otherwise).
func notAgent(addr string, resp *http.Response, b []byte) error {
	e := &NotAgentError{Addr: addr, Status: resp.StatusCode, Server: resp.Header.Get("Server"), ContentType: resp.Header.Get("Content-Type")}
	var eb ErrorBody
	if len(b) > 0 && json.Unmarshal(b, &eb) == nil && len(eb.Error) <= 200 {
		e.Message = eb.Error
	}
	return e
}
