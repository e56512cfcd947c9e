package client_test

import (
	"context"
	"fmt"
	"log"
	"sort"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// Example registers two instances, discovers them with filters, and
// watches the service for changes. The agent here is an in-memory dev
// node; a program would list the addresses of several agents, and the
// client moves to the next one when one fails.
func Example() {
	addr, stop := startDevAgent()
	defer stop()
	ctx := context.Background()

	c, err := client.New(client.Config{Addresses: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}

	// Register an instance (an update if it exists; writes are idempotent).
	_, err = c.Register(ctx, "web", "web-1", &client.Registration{
		Address: "10.0.0.5", Port: 8080, Tags: []string{"v2"}, Version: "1.4.2",
		Meta: map[string]string{"zone": "eu-1a"},
	})
	if err != nil {
		log.Fatal(err)
	}

	// Discover: healthy instances tagged v2, in zone eu-1a, of a 1.x version.
	insts, meta, err := c.Instances(ctx, "web", &client.QueryOptions{
		Healthy: true, Tags: []string{"v2"}, Meta: map[string]string{"zone": "eu-1a"},
		Version: ">=1.0.0 <2.0.0",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, i := range insts {
		fmt.Printf("%s at %s:%d (%s)\n", i.ID, i.Address, i.Port, i.Status)
	}
	fmt.Println("index is never 0:", meta.Index > 0)

	// Watch: the first update is the current result, then every change.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates, err := c.Watch(wctx, "web", &client.QueryOptions{Healthy: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("watching:", names(<-updates))
	if _, err := c.Register(ctx, "web", "web-2", &client.Registration{Address: "10.0.0.6", Port: 8080}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("changed:", names(<-updates))
	if _, err := c.Deregister(ctx, "web", "web-1"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("changed:", names(<-updates))

	// Output:
	// web-1 at 10.0.0.5:8080 (passing)
	// index is never 0: true
	// watching: [web-1]
	// changed: [web-1 web-2]
	// changed: [web-2]
}

func names(u client.WatchUpdate) []string {
	var out []string
	for _, i := range u.Instances {
		out = append(out, i.ID)
	}
	sort.Strings(out)
	return out
}

// startDevAgent runs a dev agent (agent.New with Dev, as `beacon agent
// --dev`) in-process on ports the kernel picks and waits until it leads.
func startDevAgent() (string, func()) {
	a, err := agent.New(agent.Config{
		Dev: true, Node: "example", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		LeaderWait: 10 * time.Second, RejoinInterval: time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	if err := wait.Poll(30*time.Second, wait.Interval, func() (bool, string) { return a.Node().IsLeader(), "" }); err != nil {
		log.Fatalf("dev agent did not become leader: %v", err)
	}
	return a.HTTPAddr(), func() { _ = a.Shutdown(context.Background()) }
}
