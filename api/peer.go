package api

import (
	"crypto/tls"
	"net"
)

// connOf finds the connection of type T under c's wrappers (connlimit,
// crypto/tls, prefixConn: each has NetConn), or T's zero value.
func connOf[T net.Conn](c net.Conn) T {
	for range 8 {
		if v, ok := c.(T); ok {
			return v
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	var zero T
	return zero
}

// tcpConnOf finds the TCP connection under c's wrappers, or nil.
func tcpConnOf(c net.Conn) *net.TCPConn { return connOf[*net.TCPConn](c) }

// tlsConnOf returns the TLS connection under c's wrappers, or nil.
func tlsConnOf(c net.Conn) *tls.Conn { return connOf[*tls.Conn](c) }
