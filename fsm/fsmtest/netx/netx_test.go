package netx_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/netx"
)

func TestRefusedAddrRefusesAndCannotBeTaken(t *testing.T) {
	addr := netx.RefusedAddr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("a connection to %s was accepted", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener could bind %s", addr)
	}
}
