// Package cmd is the beacon command line: cobra commands, the single table
// of agent options (config.go) that layers defaults, a JSON file, BEACON_*
// environment variables and flags into an agent.Config, printing, and Main,
// which maps errors to exit codes. The server itself is package agent, the
// standalone balancer package lb/registry; nothing but cmd/beacon imports
// cmd.
package cmd
