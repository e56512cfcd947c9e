package cmd

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/beaconhq/beacon/api/client"
)

// hostile is text a service or a foreign server might send to reach an
// operator's terminal: an escape sequence, a right-to-left override, a
// pop, a zero-width space, a byte order mark and a line separator.
const hostile = "ok\x1b[31mRED\u202eFAKE\u202c\u200b\ufeff\u2028end"

// hostileEscaped is hostile as the CLI prints it.
const hostileEscaped = `ok\x1b[31mRED\u202eFAKE\u202c\u200b\ufeff\u2028end`

// rawUnsafe returns the first character of out a terminal would act on
// (control characters but the newline, format characters, line and
// paragraph separators), by the Unicode tables.
func rawUnsafe(out string) (rune, bool) {
	for _, r := range out {
		if (unicode.IsControl(r) && r != '\n') || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			return r, true
		}
	}
	return 0, false
}

func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if r, bad := rawUnsafe(out); bad {
		t.Fatalf("%s prints %U raw: %q", what, r, out)
	}
}

func TestTablesAndJSONPrintWhatAgentsSendEscaped(t *testing.T) {
	a := newFakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]client.Check{{ID: "web:w1:ttl", Service: "web" + hostile, Instance: "w1",
			CheckDefinition: client.CheckDefinition{Type: "ttl"}, Status: "passing", Output: hostile}})
	})
	stdout, stderr, code := runCLI(t, "--addr", a.URL, "checks")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	assertTerminalSafe(t, "beacon checks", stdout)
	// The output column (cut to 60) and the service column both escaped.
	if !strings.Contains(stdout, "web"+hostileEscaped) || !strings.Contains(stdout, `ok\x1b[31mRED\u202eFAKE`) {
		t.Fatalf("beacon checks does not show the escaped text: %q", stdout)
	}

	stdout, stderr, code = runCLI(t, "--addr", a.URL, "-o", "json", "checks")
	if code != exitOK {
		t.Fatalf("-o json: exit %d: %s", code, stderr)
	}
	assertTerminalSafe(t, "beacon -o json checks", stdout)
	var got []client.Check
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("-o json is not JSON: %v: %q", err, stdout)
	}
	if len(got) != 1 || got[0].Output != hostile || got[0].Service != "web"+hostile {
		t.Fatalf("-o json changed the values: %+v", got)
	}
}

func TestErrorsPrintEscaped(t *testing.T) {
	var stderr strings.Builder
	if code := exitCode(&stderr, errors.New("agent said: "+hostile+"\nsecond line")); code != exitError {
		t.Fatalf("exit %d", code)
	}
	assertTerminalSafe(t, "an error", stderr.String())
	if want := "Error: agent said: " + hostileEscaped + " second line\n"; stderr.String() != want {
		t.Fatalf("stderr %q, want %q", stderr.String(), want)
	}
}

// QA: beacon health --addr at a server that is not Beacon printed its body
// raw, escape sequences included.
func TestHealthOfAForeignServerPrintsItsBodyEscaped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "\x1b]0;pwned\x07"+hostile)
	}))
	t.Cleanup(srv.Close)
	_, stderr, code := runCLI(t, "--addr", srv.Listener.Addr().String(), "health")
	if code != exitError {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	assertTerminalSafe(t, "beacon health", stderr)
	if !strings.Contains(stderr, `answered 503: \x1b]0;pwned\x07`+hostileEscaped) {
		t.Fatalf("stderr does not show the body escaped: %q", stderr)
	}
}
