// Package client is the Go client of Beacon's HTTP API and its JSON types.
// It uses only the standard library, so any Go program can import it.
//
// A Client is built with the addresses of one or more agents; it talks to one
// at a time and moves to the next when one cannot be reached. Reads take
// QueryOptions (filters, consistency mode, blocking index) and return a
// QueryMeta with the result's index and the answering agent's staleness.
package client
