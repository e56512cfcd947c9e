package compattest

import (
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// consul-template (v0.41.1, run against a 3-node cluster: docs/consul.md)
// reads Beacon through the Consul client, and two of its contracts rest on
// what these tests check with that client: its max_stale (default 2s)
// trusts a ?stale answer only while X-Consul-LastContact is within it, and
// its key, keyOrDefault, ls and tree (like fabio's manual routes, which
// fabio always watches) block on X-Consul-Index between reads.

// TestConsulClientKVIsEmptyAndBlocks: Beacon has no KV store. A read is
// Consul's answer for an absent key (the client returns nil, no error) with
// an index to block on; a blocking read at it waits out its wait. Before,
// the 404 had no index and every watcher of a key asked again at once, in a
// loop (consul-template 9 requests a second per key, fabio without pause).
// Writes fail with an error that says why.
func TestConsulClientKVIsEmptyAndBlocks(t *testing.T) {
	c := agenttest.New(t, 3)
	kv := consulClient(t, c, 1, "").KV()

	pair, meta, err := kv.Get("config/a", &consulapi.QueryOptions{AllowStale: true})
	if err != nil || pair != nil {
		t.Fatalf("get: %v %v", pair, err)
	}
	if meta.LastIndex != 1 {
		t.Fatalf("get: index %d, want 1 (an index to block on)", meta.LastIndex)
	}
	keys, meta, err := kv.Keys("config/", "/", nil)
	if err != nil || len(keys) != 0 || meta.LastIndex != 1 {
		t.Fatalf("keys: %v index %d %v", keys, meta.LastIndex, err)
	}
	// fabio's read of its manual routes.
	pairs, meta, err := kv.List("fabio/config", &consulapi.QueryOptions{RequireConsistent: true})
	if err != nil || len(pairs) != 0 || meta.LastIndex != 1 {
		t.Fatalf("list: %v index %d %v", pairs, meta.LastIndex, err)
	}

	// The next read, at the index, blocks for its wait (asserted from
	// below only: a slow machine answers later, never sooner).
	const wait = 500 * time.Millisecond
	start := time.Now()
	pair, meta, err = kv.Get("config/a", &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: wait})
	if took := time.Since(start); took < wait {
		t.Errorf("a blocking read at index 1 returned after %v, before its wait of %v", took, wait)
	}
	if err != nil || pair != nil || meta.LastIndex != 1 {
		t.Fatalf("blocking get: %v index %d %v", pair, meta.LastIndex, err)
	}

	if _, err := kv.Put(&consulapi.KVPair{Key: "config/a", Value: []byte("x")}, nil); err == nil || !strings.Contains(err.Error(), "no KV store") {
		t.Fatalf("put: %v, want an error that says Beacon has no KV store", err)
	}
	if _, err := kv.DeleteTree("config", nil); err == nil || !strings.Contains(err.Error(), "no KV store") {
		t.Fatalf("delete: %v", err)
	}
}

// TestConsulClientStaleReadOfAnAgentThatNeverCaughtUp: an agent restarted
// while the cluster has no quorum answers ?stale reads from the catalog it
// restored, which misses what changed while it was down. Its
// X-Consul-LastContact must say it has not been in touch, as Consul's does,
// so that consul-template (max_stale) falls back to a consistent read,
// which fails until a leader is back, rather than rendering that catalog.
// It said 0 ("current"): consul-template rendered a service deregistered
// while the agent was down.
func TestConsulClientStaleReadOfAnAgentThatNeverCaughtUp(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	leader := c.Leader()
	f := c.Follower(leader)
	other := c.Follower(leader, f)
	writer := consulClient(t, c, leader, "")
	if err := writer.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "gone-1", Name: "gone", Port: 9001, Address: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	reader := consulClient(t, c, f, "")
	waitFor(t, "the follower sees the registration", func() bool {
		s, _, err := reader.Catalog().Service("gone", "", &consulapi.QueryOptions{AllowStale: true})
		return err == nil && len(s) == 1
	})

	c.Stop(f)
	if err := writer.Agent().ServiceDeregister("gone-1"); err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	c.Stop(other)
	c.Restart(f) // alone: no leader, and it cannot catch up

	_, meta, err := reader.Catalog().Services(&consulapi.QueryOptions{AllowStale: true})
	if err != nil {
		t.Fatalf("stale read of the restarted agent: %v", err)
	}
	if meta.KnownLeader {
		t.Errorf("X-Consul-KnownLeader true on an agent alone")
	}
	if meta.LastContact < 24*time.Hour {
		t.Fatalf("X-Consul-LastContact %v on an agent that never caught up since its restart: a client's max_stale takes its catalog as current", meta.LastContact)
	}
	// The consistent read a client falls back to fails until a leader is
	// back (the leader-wait, 3 s by default, then 503).
	if _, _, err := reader.Catalog().Services(nil); err == nil {
		t.Errorf("a default read on an agent without a leader answered")
	}
}
