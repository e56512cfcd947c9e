package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestTheTransportLogsAConnectionWeClosedAtDebugOnly(t *testing.T) {
	var buf bytes.Buffer
	l := quietClose{hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})}.Named("transport")
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	l.Error("failed to decode incoming command", "error", closed)
	l.Error("failed to decode incoming command", "error", fmt.Errorf("codec: %s", closed.Error()))
	if buf.Len() != 0 {
		t.Fatalf("a read on a connection we closed was logged at INFO or above: %s", buf.String())
	}
	l.Error("failed to decode incoming command", "error", errors.New("read tcp: connection reset by peer"))
	if !strings.Contains(buf.String(), "[ERROR] transport: failed to decode incoming command") {
		t.Fatalf("another error was not kept at ERROR: %q", buf.String())
	}
}
