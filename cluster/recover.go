package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// RecoveryFile is the name, inside the data dir, of the file an operator
// writes to recover a cluster that lost its quorum (docs/operations.md,
// "Recovering from a lost quorum"). It holds the Raft configuration to force
// in raft.ReadConfigJSON's format:
//
//	[{"id": "node1", "address": "10.0.0.1:8751", "non_voter": false}]
//
// It is not peers.json: that file, beside it, is the gossip addresses a
// restarted node rejoins.
const RecoveryFile = "recovery.json"

// appliedSuffix is added to the recovery file's name once it was applied, so
// a restart does not apply it again and the operator can see what was.
const appliedSuffix = ".applied"

// recoverIfAsked forces the Raft configuration in the data dir's recovery
// file, if there is one, before Raft starts on these stores
// (raft.RecoverCluster), then renames the file. A file that cannot be read,
// is malformed, or does not list this node at its cluster address is an
// error: the node must not start as if no recovery had been asked for.
func (n *Node) recoverIfAsked(rc *raft.Config, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) error {
	path := filepath.Join(n.cfg.DataDir, RecoveryFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	conf, err := readRecovery(path, rc.LocalID, raft.ServerAddress(n.ClusterAddr()))
	if err != nil {
		return err
	}
	n.logger.Warn("recovering the raft configuration from the recovery file", "file", path, "servers", describeServers(conf))
	// RecoverCluster replays the whole log into the FSM it is given and
	// snapshots it; NewRaft then restores that snapshot into the node's own
	// FSM, which must still be fresh then. A throwaway FSM (as Consul uses)
	// also keeps the observers set on the node's FSM from seeing the replay.
	scratch := fsm.New(n.logger.Named("recovery"))
	if err := raft.RecoverCluster(rc, scratch, logs, stable, snaps, n.transport, conf); err != nil {
		return fmt.Errorf("cluster: recover from %s: %w", path, err)
	}
	// Renamed durably: applying the file again after this node has led and
	// taken writes would throw away servers added since.
	if err := os.Rename(path, path+appliedSuffix); err != nil {
		return fmt.Errorf("cluster: recovered, but could not rename %s (remove it before the next start): %w", path, err)
	}
	if err := syncDir(n.cfg.DataDir); err != nil {
		return err
	}
	n.logger.Warn("recovered the raft configuration; the file was renamed so it is not applied again",
		"servers", describeServers(conf), "renamed_to", path+appliedSuffix)
	return nil
}

// readRecovery reads and checks a recovery file. Besides raft's own checks
// (a JSON list, ids and addresses set and unique, at least one voter), the
// file must list this node at the address peers reach it on: a node left
// out would start in a configuration without itself and never lead, and a
// wrong address would be handed to every server that joins later.
func readRecovery(path string, self raft.ServerID, addr raft.ServerAddress) (raft.Configuration, error) {
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("cluster: recovery file %s is not valid (want a JSON list of {\"id\", \"address\", \"non_voter\"}; fix or remove it): %w", path, err)
	}
	for _, s := range conf.Servers {
		if s.ID != self {
			continue
		}
		if s.Address != addr {
			return raft.Configuration{}, fmt.Errorf("cluster: recovery file %s lists this node (%s) at %s, but it is reached at %s; fix or remove it", path, self, s.Address, addr)
		}
		return conf, nil
	}
	return raft.Configuration{}, fmt.Errorf("cluster: recovery file %s does not list this node (%s, at %s); fix or remove it", path, self, addr)
}

// describeServers lists a configuration's servers for the log.
func describeServers(conf raft.Configuration) []string {
	out := make([]string, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		out = append(out, fmt.Sprintf("%s=%s (%s)", s.ID, s.Address, s.Suffrage))
	}
	return out
}
