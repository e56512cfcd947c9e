//go:build linux

package lb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSendWritesTheRestOfAPartialWrite holds upConn.send to its fallback:
// when the one write that sendThenWait makes takes only part of the request
// (small socket buffers, an instance that does not read), the rest goes out
// through the buffered writer under the write deadline, and what the
// instance receives is the request's bytes in order.
func TestSendWritesTheRestOfAPartialWrite(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	u := newUpstream((&net.Dialer{Timeout: 5 * time.Second}).DialContext, &Config{ResponseHeaderTimeout: 5 * time.Second})
	defer u.close()
	c, err := u.get(context.Background(), ln.Addr().String(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	if err := c.nc.(*net.TCPConn).SetWriteBuffer(2048); err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()

	head := []byte("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 16000\r\n\r\n")
	body := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	want := append(append([]byte{}, head...), body...)
	// The instance reads nothing while the request is sent: the one write
	// cannot take it all, and the rest waits in the fallback until the
	// write deadline.
	err = c.send(head, body, time.Now().Add(300*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("send: %v, want the write deadline", err)
	}
	if c.peek.wrote == 0 || c.peek.wrote >= len(want) {
		t.Fatalf("the first write took %d of %d bytes, want a part", c.peek.wrote, len(want))
	}
	c.nc.Close()
	got, _ := io.ReadAll(srv)
	if len(got) <= c.peek.wrote || !bytes.Equal(got, want[:len(got)]) {
		t.Fatalf("the instance got %d bytes (first write %d), not the request's first bytes in order", len(got), c.peek.wrote)
	}
}
