package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// gossipNet is gossip's transport: memberlist's TCP streams and UDP packets
// on one address, as memberlist's own NetTransport, with one difference.
// NetTransport reads every packet into a fresh 64 KiB buffer and hands that
// buffer on, so each probe, ack and gossip message received, a few hundred
// bytes, left 64 KiB of garbage: ~0.35 MB/s on an idle node, most of what
// it allocated. gossipNet reads into one buffer of its own and hands on a
// copy of the packet's size. (The copy is needed: memberlist keeps parts of
// a packet after it has read the next one, in its handoff queue.)
type gossipNet struct {
	tcp  *net.TCPListener
	udp  *net.UDPConn
	port int // the port both are bound to
	// unspecified: bound to 0.0.0.0 or ::, so the advertised address, if
	// none is configured, is the host's private IP.
	unspecified bool
	bindIP      net.IP
	logger      hclog.Logger

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*gossipNet)(nil)

const (
	// gossipPacketMax is the largest UDP payload there is; memberlist's
	// packets stay far below it (UDPBufferSize, 1,400 bytes by default).
	gossipPacketMax = 65536
	// gossipRecvBuffer is the socket receive buffer asked for, so that a
	// burst of packets waits in the kernel rather than being dropped (the
	// kernel caps it at net.core.rmem_max).
	gossipRecvBuffer = 2 << 20
	// gossipBindTries bounds the attempts to find a port free for both TCP
	// and UDP when port 0 is asked for.
	gossipBindTries = 10
	// gossipResolveTimeout bounds the lookup of a gossip address given as a
	// name.
	gossipResolveTimeout = 5 * time.Second
)

// newGossipNet binds TCP and UDP on host:port. With port 0 it picks a port
// free for both.
func newGossipNet(host string, port int, logger hclog.Logger) (*gossipNet, error) {
	var ip net.IP
	switch host {
	case "":
		ip = net.IPv4zero
	default:
		if ip = net.ParseIP(host); ip == nil {
			// A name ("localhost"): its first address, looked up within
			// gossipResolveTimeout.
			ctx, cancel := context.WithTimeout(context.Background(), gossipResolveTimeout)
			addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
			cancel()
			if err != nil || len(addrs) == 0 {
				return nil, fmt.Errorf("cluster: gossip address %q: not an IP address, and looking it up gave %v (%v)", host, addrs, err)
			}
			ip = addrs[0].IP
		}
	}
	var lastErr error
	for try := 0; try < gossipBindTries; try++ {
		t, err := bindGossipNet(ip, port, logger)
		if err == nil {
			return t, nil
		}
		lastErr = err
		if port != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("cluster: gossip: %w", lastErr)
}

func bindGossipNet(ip net.IP, port int, logger hclog.Logger) (*gossipNet, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	if err := udp.SetReadBuffer(gossipRecvBuffer); err != nil {
		logger.Debug("gossip: UDP receive buffer not set", "error", err)
	}
	t := &gossipNet{
		tcp: tcp, udp: udp, port: port,
		unspecified: ip.IsUnspecified(), bindIP: ip, logger: logger,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// FinalAdvertiseAddr is the address this node tells its peers: the one
// configured, else the bound one, else (bound to every interface) the
// host's private IP.
// An IPv4 address is returned in its 4-byte form, which memberlist sends
// as is.
func (t *gossipNet) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		addr := net.ParseIP(ip)
		if addr == nil {
			return nil, 0, fmt.Errorf("cluster: gossip advertise address %q: not an IP address", ip)
		}
		if port == 0 {
			port = t.port
		}
		return short(addr), port, nil
	}
	if !t.unspecified {
		return short(t.bindIP), t.port, nil
	}
	private, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: gossip: finding a private IP to advertise: %w", err)
	}
	if private == "" {
		return nil, 0, errors.New("cluster: gossip: bound to every interface, no private IP found and no advertise address given")
	}
	addr := net.ParseIP(private)
	if addr == nil {
		return nil, 0, fmt.Errorf("cluster: gossip: private IP %q: not an IP address", private)
	}
	return short(addr), t.port, nil
}

// short is ip in 4 bytes if it is an IPv4 address.
func short(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// WriteTo sends one packet.
func (t *gossipNet) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *gossipNet) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *gossipNet) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to a peer.
func (t *gossipNet) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *gossipNet) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *gossipNet) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes both sockets and waits for the loops reading them.
func (t *gossipNet) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
	})
	t.wg.Wait()
	return nil
}

func (t *gossipNet) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *gossipNet) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, gossipPacketMax)
	for {
		n, from, err := t.udp.ReadFromUDP(buf)
		now := time.Now()
		if err != nil {
			if t.closed() {
				return
			}
			// A UDP socket's read errors are the peer's (an ICMP error
			// for an earlier send) or transient: go on reading.
			t.logger.Debug("gossip: reading a packet", "error", err)
			continue
		}
		if n == 0 {
			continue
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: now}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

func (t *gossipNet) acceptStreams() {
	defer t.wg.Done()
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	delay := time.Duration(0)
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed() {
				return
			}
			// Out of descriptors and the like: back off, doubling.
			delay = min(max(2*delay, minDelay), maxDelay)
			t.logger.Warn("gossip: accepting a stream", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}
