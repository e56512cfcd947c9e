// Package lb is Beacon's load balancer: balancing strategies, the immutable
// routing table, the followers that keep one table per service current from
// the registry, and the reverse proxy that routes requests through them.
//
// The package imports nothing else of Beacon's. It sees the registry through
// the Catalog interface (lb/registry plugs in the Go client for the
// standalone `beacon lb`, package agent its local store for an embedded
// balancer) and describes instances with its own Backend type. Server is the
// listener lifecycle both use.
//
// The request path takes no shared locks: each service's Table is an
// immutable value swapped with atomic.Pointer by its follower, strategies pick
// with atomic counters, and per-instance counters (in flight, failures,
// ejection) are atomics that survive table rebuilds. Without TLS, Serve reads
// request heads itself and proxies plain HTTP/1.1 requests on the
// connection's goroutine (fastserve.go, fastrequest.go, fastproxy.go),
// handing every other connection to net/http's server and the
// ReverseProxy-based path (proxy.go, forward.go); both follow the same rules
// and a differential test holds them to the same answers. See docs/lb.md for
// the routing rules, the strategies, the request path and the failure
// handling.
package lb
