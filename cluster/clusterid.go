package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// A cluster's identity. Gossip lets any member that holds the cluster
// secret in, and the leader adds every alive server to Raft: before
// identities, `beacon join` from a server of one cluster to a member of
// another merged the two (same secret, e.g. the built-in default), and the
// side with the higher term replaced the other's catalog, or both went on
// answering different catalogs at the same index. etcd refuses such a join
// (its cluster ID differs); so does Beacon now.
//
// The first leader of a cluster draws a random ID and keeps it in
// <data-dir>/cluster-id; every server that follows a leader and has none
// takes the leader's. Servers publish theirs in gossip. A gossip join or
// push-pull between members of two different IDs is refused on both sides
// (memberlist's MergeDelegate), so the pools never mix and the join fails
// with ErrForeignCluster; and the leader never adds to Raft a server that
// names another ID. A server with no ID yet (a new one, or one from a
// release before IDs until it hears its leader) is let in, as before: it
// holds no catalog of its own to lose, or is already in the cluster.

// clusterIDFile holds the ID in the data dir.
const clusterIDFile = "cluster-id"

// ErrForeignCluster is returned by a join that reached members of another
// cluster only.
var ErrForeignCluster = errors.New("belongs to another cluster")

// newClusterID draws a cluster ID: 16 random bytes, in hex.
func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validClusterID reports whether id looks like one newClusterID draws.
func validClusterID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// loadClusterID reads the data dir's cluster ID ("" if none). A file that
// holds something else is an error: the server must not start under a
// made-up identity.
func loadClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: read %s: %w", clusterIDFile, err)
	}
	id := strings.TrimSpace(string(b))
	if !validClusterID(id) {
		if len(id) > 40 {
			id = id[:40]
		}
		return "", fmt.Errorf("cluster: %s in %s holds %q, not a cluster ID (32 hex digits)", clusterIDFile, dir, id)
	}
	return id, nil
}

// storeClusterID writes id to the data dir, durably (a temporary file,
// synced, renamed over).
func storeClusterID(dir, id string) error {
	tmp := filepath.Join(dir, clusterIDFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(id + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, clusterIDFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

// ClusterID is the ID of the cluster this server belongs to, "" until it
// has led or followed a leader.
func (n *Node) ClusterID() string { return n.gossip.clusterID() }

// clusterIDLoop gives this server its cluster's ID: drawn when it leads
// without one, taken from its leader's gossip when it follows one. It ends
// once the server has an ID.
func (n *Node) clusterIDLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.HeartbeatTimeout)
	defer t.Stop()
	for n.gossip.clusterID() == "" {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := ""
		switch n.raft.State() {
		case raft.Leader:
			id = newClusterID()
		case raft.Follower:
			addr, _ := n.raft.LeaderWithID()
			if addr == "" {
				continue
			}
			for _, m := range n.gossip.snapshot() {
				if m.ClusterAddr == string(addr) && m.Status == fsm.NodeAlive {
					id = m.ClusterID
				}
			}
		}
		if id == "" {
			continue
		}
		if !n.cfg.InMemory {
			if err := storeClusterID(n.cfg.DataDir, id); err != nil {
				n.logger.Warn("cannot store the cluster ID; trying again", "error", err)
				continue
			}
		}
		n.logger.Info("cluster ID set", "cluster_id", id)
		n.gossip.setClusterID(id)
	}
}

// clusterID is the ID this member publishes.
func (g *gossip) clusterID() string {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return g.metaVal.ID
}

// setClusterID publishes id in this member's gossip metadata.
func (g *gossip) setClusterID(id string) {
	g.metaMu.Lock()
	v := g.metaVal
	v.ID = id
	b, err := json.Marshal(v)
	if err == nil && len(b) <= memberlist.MetaMaxSize {
		g.metaVal, g.meta = v, b
	}
	g.metaMu.Unlock()
	if err != nil {
		g.logger.Warn("cannot publish the cluster ID", "error", err)
		return
	}
	// memberlist gossips the new metadata; the wait is only for the
	// broadcast to leave, bounded.
	if err := g.ml.UpdateNode(2 * time.Second); err != nil {
		g.logger.Warn("cannot publish the cluster ID yet", "error", err)
	}
}

// NotifyMerge implements memberlist.MergeDelegate: a join or push-pull
// with members of another cluster is refused (on both sides: each runs
// this on the other's members).
func (g *gossip) NotifyMerge(peers []*memberlist.Node) error {
	own := g.clusterID()
	if own == "" {
		return nil
	}
	for _, p := range peers {
		var meta memberMeta
		if json.Unmarshal(p.Meta, &meta) != nil || meta.ID == "" || meta.ID == own {
			continue
		}
		g.logger.Warn("refused to merge with another cluster's members", "node", p.Name, "their_cluster_id", meta.ID, "cluster_id", own)
		return fmt.Errorf("member %q %w (cluster ID %s; this one is %s)", p.Name, ErrForeignCluster, meta.ID, own)
	}
	return nil
}
