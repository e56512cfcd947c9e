package cmd_test

import (
	"context"
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

func reg(addr string, port int) *client.Registration {
	return &client.Registration{Address: addr, Port: port, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.3"}
}

// registerRetry registers, retrying while the cluster answers 503 (an
// election on a loaded test machine): registration is idempotent.
func registerRetry(t testing.TB, cl *client.Client, service, id string, r *client.Registration) uint64 {
	t.Helper()
	var idx uint64
	agenttest.Retry503(t, "register "+service+"/"+id, func() (err error) {
		idx, err = cl.Register(context.Background(), service, id, r)
		return err
	})
	return idx
}
