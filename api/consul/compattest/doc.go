// Package compattest holds contract tests that drive Beacon's
// Consul-compatible API (api/consul) with real consumers' code: the Consul
// Go client (github.com/hashicorp/consul/api), Prometheus' Consul service
// discovery (github.com/prometheus/prometheus/discovery/consul) and the
// request sequence of a Spring Cloud Consul application, each against a
// real 3-node in-process cluster. It is a nested Go module so that those
// consumers' module graphs stay out of Beacon's go.mod; `make test` runs it
// (target test-nested), and docs/consul.md says how to run it alone.
package compattest
