//go:build linux

package connlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// echoLoop answers each head "R <n>\r\n\r\n" with "A <n>\n" from the loop.
type echoLoop struct {
	t     *testing.T
	nc    net.Conn
	br    *bufio.Reader
	heads int
}

func (e *echoLoop) LoopIdle() bool {
	_ = e.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	return true
}
func (e *echoLoop) LoopSkip() bool   { return false }
func (e *echoLoop) LoopActive() bool { return true }
func (e *echoLoop) LoopHeadWait() bool {
	_ = e.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	return true
}

func (e *echoLoop) LoopServe(head []byte) (LoopEnd, bool) {
	if !bytes.HasPrefix(head, []byte("R ")) {
		return LoopSlow, false
	}
	_, _ = e.br.Discard(len(head))
	e.heads++
	if _, err := fmt.Fprintf(e.nc, "A %s\n", bytes.TrimSpace(head[2:])); err != nil {
		return LoopClose, false
	}
	return 0, true
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestLoopReadsNothingInVainBetweenRequests holds the loop to its point: a
// client that sends each request once it has the last answer is served
// with no read that finds nothing (ErrWouldBlock) after an answer, and no
// request is missed (a missed one would wait for the 20 s deadline; the
// client gives up after 10 s). A head in pieces and a request the loop
// leaves to the caller (LoopSlow) are covered too, and the client's close
// ends the loop.
func TestLoopReadsNothingInVainBetweenRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		heads, empty int
		ends         []LoopEnd
		err          error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer nc.Close()
		var l Loop
		e := &echoLoop{t: t, nc: nc}
		l.Init(nc, e)
		if !l.On() {
			done <- result{err: errors.New("no raw loop for a TCP connection")}
			return
		}
		var res result
		e.br = bufio.NewReader(readerFunc(func(p []byte) (int, error) {
			n, err := l.Read(nc, p)
			if errors.Is(err, ErrWouldBlock) {
				res.empty++
			}
			return n, err
		}))
		for {
			end := l.Run(e.br)
			res.ends = append(res.ends, end)
			if end != LoopSlow {
				break
			}
			// The ordinary path: take the line the loop left.
			line, err := e.br.ReadString('\n')
			if err != nil {
				break
			}
			fmt.Fprintf(nc, "slow %s", line)
		}
		res.heads = e.heads
		done <- res
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	ask := func(send, want string) {
		t.Helper()
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("sent %q: got %q (%v), want %q", send, got, err, want)
		}
	}
	for i := range 300 {
		ask(fmt.Sprintf("R %d\r\n\r\n", i), fmt.Sprintf("A %d\n", i))
	}
	for _, piece := range []string{"R 3", "00\r", "\n\r"} {
		if _, err := io.WriteString(c, piece); err != nil {
			t.Fatal(err)
		}
	}
	ask("\n", "A 300\n")
	ask("X 1\r\n\r\n", "slow X 1\r\n")
	c.Close()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.heads != 301 {
		t.Fatalf("the loop served %d heads, want 301", res.heads)
	}
	// One vain read may start each loop (the poller's state is reset when
	// it starts), and a head in pieces may find nothing between them; not
	// one per answer.
	if res.empty > 10 {
		t.Fatalf("%d reads found nothing, for 302 requests: the loop reads before it waits", res.empty)
	}
	if n := len(res.ends); n != 2 || res.ends[0] != LoopSlow || res.ends[1] != LoopClose {
		t.Fatalf("the loop ended %v, want [LoopSlow LoopClose]", res.ends)
	}
}
