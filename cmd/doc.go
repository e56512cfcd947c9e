// Package cmd is the beacon command line and the composition root: Agent
// wires the catalog (fsm), the cluster node (cluster) and the HTTP API (api)
// together and is the one place that sees every concrete type. Configuration
// is layered: defaults, then a JSON file, then BEACON_* environment
// variables, then flags (config.go holds the single table of options). Main
// maps errors to exit codes.
package cmd
