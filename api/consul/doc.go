// Package consul serves Consul's HTTP API (the catalog, health, agent and
// status endpoints that service-discovery tools use) on Beacon's listener,
// translated to Beacon's replicated catalog, so that programs written for
// Consul (the Go client github.com/hashicorp/consul/api, Prometheus'
// consul_sd_configs, fabio, consul-template, Spring Cloud Consul) work
// against Beacon unmodified.
//
// Reads come from this node's fsm.Store with Consul's blocking queries and
// headers; writes are validated with the native API's rules
// (api.BuildRegister) and committed through the same cluster interface the
// native API uses. A Consul "node" is a Beacon agent: what a client
// registers through /v1/agent/service/register is a cluster-wide instance
// whose Node is the agent that received it. docs/consul.md lists what is
// supported, accepted and ignored, or refused.
//
// The package sees the cluster and the API only through the small
// interfaces declared in server.go; the agent wires the real ones in and
// mounts Handler on the API's listener (api.Server.Mount).
package consul
