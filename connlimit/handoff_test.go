package connlimit

import (
	"errors"
	"net"
	"testing"
	"time"
)

func TestHandoffPassesConnectionsUntilClosed(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	h := NewHandoff(addr)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := h.Accept()
		if err != nil {
			got <- nil
			return
		}
		got <- c
	}()
	if !h.Give(a) {
		t.Fatal("Give on an open Handoff returned false")
	}
	select {
	case c := <-got:
		if c != a {
			t.Fatalf("Accept returned %v, want the connection given", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return the connection given")
	}
	if h.Addr() != addr {
		t.Fatalf("Addr %v", h.Addr())
	}
	_ = h.Close()
	_ = h.Close() // twice is fine
	if h.Give(b) {
		t.Fatal("Give on a closed Handoff returned true")
	}
	if _, err := h.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed Handoff: %v", err)
	}
}
