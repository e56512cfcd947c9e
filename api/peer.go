package api

import "net"

// tcpConnOf finds the TCP connection under c's wrappers (connlimit,
// crypto/tls, prefixConn: each has NetConn), or nil.
func tcpConnOf(c net.Conn) *net.TCPConn {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
