// Package api is Beacon's public HTTP API: the routes of docs/api.md, strict
// decoding and validation with explicit limits, consistency modes (local,
// max_stale, consistent), blocking queries on the catalog's watch sets
// (parked out of net/http while they wait: park.go), and the one function
// that maps errors to HTTP statuses and JSON bodies.
//
// The package sees the cluster only through the small interfaces declared in
// server.go (Writer, Consistency, Membership); cmd wires in the real node.
package api
