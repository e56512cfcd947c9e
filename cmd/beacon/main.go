// Command beacon is the Beacon service registry: agent, load balancer and CLI.
package main

import (
	"os"

	"github.com/beaconhq/beacon/cmd"
)

func main() { os.Exit(cmd.Main()) }
