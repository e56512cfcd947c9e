package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

func TestDevAgentRunsAloneInMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent")
	}
	a, err := agent.New(agent.Config{
		Dev: true, Node: "dev", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		LeaderWait: 5 * time.Second, RejoinInterval: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	cl, _ := client.New(client.Config{Addresses: []string{a.HTTPAddr()}})
	ctx := context.Background()
	agenttest.Eventually(t, 10*time.Second, func() bool {
		st, err := cl.Status(ctx)
		return err == nil && st.State == "Leader"
	}, "the dev node to lead")
	agenttest.Register(t, cl, "web", "w1", reg("127.0.0.1", 8080))
	insts, _, err := cl.Instances(ctx, "web", &client.QueryOptions{Consistent: true})
	if err != nil || len(insts) != 1 {
		t.Fatalf("dev read: %v %v", err, insts)
	}
}

func reg(addr string, port int) *client.Registration {
	return &client.Registration{Address: addr, Port: port, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.3"}
}
