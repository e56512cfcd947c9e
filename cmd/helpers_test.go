package cmd_test

import (
	"github.com/beaconhq/beacon/api/client"
)

func reg(addr string, port int) *client.Registration {
	return &client.Registration{Address: addr, Port: port, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.3"}
}
