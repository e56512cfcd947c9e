package cluster

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

func newTestGossipNet(t *testing.T) *gossipNet {
	t.Helper()
	g, err := newGossipNet("127.0.0.1", 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func nextPacket(t *testing.T, g *gossipNet) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-g.PacketCh():
		return p
	case <-time.After(30 * time.Second):
		t.Fatal("no packet within 30s")
		return nil
	}
}

// TestGossipNetPacketsAreTheirOwnCopies: each packet handed to memberlist
// is a buffer of its own, the packet's size, that a later packet does not
// overwrite (memberlist keeps parts of packets in its handoff queue).
func TestGossipNetPacketsAreTheirOwnCopies(t *testing.T) {
	a, b := newTestGossipNet(t), newTestGossipNet(t)
	if a.tcp.Addr().(*net.TCPAddr).Port != a.udp.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("TCP on %s, UDP on %s: want one port", a.tcp.Addr(), a.udp.LocalAddr())
	}
	to := a.udp.LocalAddr().String()
	if _, err := b.WriteTo([]byte("first packet"), to); err != nil {
		t.Fatal(err)
	}
	first := nextPacket(t, a)
	if _, err := b.WriteToAddress([]byte("SECOND"), memberlist.Address{Addr: to, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	second := nextPacket(t, a)
	if string(first.Buf) != "first packet" || string(second.Buf) != "SECOND" {
		t.Fatalf("packets %q, %q", first.Buf, second.Buf)
	}
	if cap(first.Buf) > 64 {
		t.Errorf("a 12-byte packet came in a buffer of %d bytes", cap(first.Buf))
	}
	if from := first.From.String(); from != b.udp.LocalAddr().String() {
		t.Errorf("from %s, want %s", from, b.udp.LocalAddr())
	}
	if first.Timestamp.IsZero() {
		t.Error("no timestamp")
	}
}

// TestGossipNetAllocatesAboutThePacket: NetTransport allocated 64 KiB for
// every packet it read; gossipNet about the packet's size.
func TestGossipNetAllocatesAboutThePacket(t *testing.T) {
	a, b := newTestGossipNet(t), newTestGossipNet(t)
	to := a.udp.LocalAddr().String()
	payload := bytes.Repeat([]byte("x"), 300) // a probe or an ack is ~50-300 bytes
	const n = 500
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		if _, err := b.WriteTo(payload, to); err != nil {
			t.Fatal(err)
		}
		nextPacket(t, a) // one at a time: a UDP socket may drop a burst
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per 300-byte packet sent and received", per)
	if per > 16<<10 {
		t.Fatalf("%d bytes allocated per packet: a buffer of the packet's size is a few hundred", per)
	}
}

// TestGossipNetStreams: a dialled stream arrives on StreamCh.
func TestGossipNetStreams(t *testing.T) {
	a, b := newTestGossipNet(t), newTestGossipNet(t)
	c, err := b.DialAddressTimeout(memberlist.Address{Addr: a.tcp.Addr().String()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	var s net.Conn
	select {
	case s = <-a.StreamCh():
	case <-time.After(30 * time.Second):
		t.Fatal("no stream within 30s")
	}
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q %v", buf, err)
	}
}

// TestGossipNetShutdownWithAPacketUndelivered: a packet nobody takes from
// PacketCh (memberlist has stopped) does not keep the reader running.
func TestGossipNetShutdownWithAPacketUndelivered(t *testing.T) {
	a, b := newTestGossipNet(t), newTestGossipNet(t)
	if _, err := b.WriteTo([]byte("never read"), a.udp.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = a.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, err := b.WriteTo([]byte("after"), a.udp.LocalAddr().String()); err != nil {
		t.Fatal(err) // UDP: sending to a closed port is not an error here
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("a second Shutdown: %v", err)
	}
}

func TestGossipNetAdvertise(t *testing.T) {
	a := newTestGossipNet(t)
	for _, tc := range []struct {
		ip     string
		port   int
		wantIP string
		want   int
		bad    bool
	}{
		{ip: "", port: 0, wantIP: "127.0.0.1", want: a.port},
		{ip: "10.1.2.3", port: 7946, wantIP: "10.1.2.3", want: 7946},
		{ip: "10.1.2.3", port: 0, wantIP: "10.1.2.3", want: a.port},
		{ip: "::ffff:10.1.2.3", port: 1, wantIP: "10.1.2.3", want: 1},
		{ip: "fd00::1", port: 2, wantIP: "fd00::1", want: 2},
		{ip: "not-an-ip", bad: true},
	} {
		t.Run(fmt.Sprintf("%q:%d", tc.ip, tc.port), func(t *testing.T) {
			ip, port, err := a.FinalAdvertiseAddr(tc.ip, tc.port)
			if tc.bad {
				if err == nil {
					t.Fatalf("got %s:%d, want an error", ip, port)
				}
				return
			}
			if err != nil || ip.String() != tc.wantIP || port != tc.want {
				t.Fatalf("got %s:%d %v, want %s:%d", ip, port, err, tc.wantIP, tc.want)
			}
			if ip.To4() != nil && len(ip) != net.IPv4len {
				t.Errorf("an IPv4 address in %d bytes: memberlist sends it as is", len(ip))
			}
		})
	}
}

// TestGossipNetPortInUse: a port taken for TCP or UDP is an error, not a
// bind on another port.
func TestGossipNetPortInUse(t *testing.T) {
	a := newTestGossipNet(t)
	if g, err := newGossipNet("127.0.0.1", a.port, hclog.NewNullLogger()); err == nil {
		_ = g.Shutdown()
		t.Fatalf("bound %d twice", a.port)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	port := udp.LocalAddr().(*net.UDPAddr).Port
	if g, err := newGossipNet("127.0.0.1", port, hclog.NewNullLogger()); err == nil {
		_ = g.Shutdown()
		t.Fatalf("bound %d whose UDP port is taken", port)
	}
}

// TestGossipNetAdvertisesThePrivateIPWhenBoundToAll: bound to 0.0.0.0 with
// no advertise address, the node advertises the host's private IP, as
// memberlist's own transport does (no traffic is sent).
func TestGossipNetAdvertisesThePrivateIPWhenBoundToAll(t *testing.T) {
	g, err := newGossipNet("0.0.0.0", 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	want, werr := sockaddr.GetPrivateIP()
	ip, port, err := g.FinalAdvertiseAddr("", 0)
	switch {
	case werr != nil || want == "":
		if err == nil {
			t.Fatalf("no private IP here (%v), yet advertised %s:%d", werr, ip, port)
		}
	case err != nil || ip.String() != want || port != g.port:
		t.Fatalf("got %s:%d %v, want %s:%d", ip, port, err, want, g.port)
	}
}

// TestGossipNetBindsAName: a gossip address given as a name binds its
// address (localhost: /etc/hosts, no DNS query leaves the machine).
func TestGossipNetBindsAName(t *testing.T) {
	g, err := newGossipNet("localhost", 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	if !g.bindIP.IsLoopback() {
		t.Fatalf("localhost bound %s", g.bindIP)
	}
}
