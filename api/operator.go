package api

import (
	"bytes"
	"fmt"
	"net/http"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// handleSnapshotSave: GET /v1/snapshot. The body is a snapshot archive of
// the whole catalog (see fsm.ReadArchive for the format). By default the
// node first obtains a read index from the leader, so the archive holds every
// write acknowledged before the request; ?stale skips that, so an operator
// can still save what a node holds while the cluster has no leader.
func (s *Server) handleSnapshotSave(w http.ResponseWriter, r *http.Request) {
	stale, err := boolParam(queryOf(r), "stale")
	if err != nil {
		writeError(w, err)
		return
	}
	idx := s.cluster.Status().AppliedIndex
	if !stale {
		if idx, err = s.cluster.ConsistentIndex(r.Context()); err != nil {
			writeError(w, err)
			return
		}
	}
	var buf bytes.Buffer
	info, err := s.store.WriteArchive(&buf, fsm.ArchiveMeta{Index: max(idx, 1), Node: s.cluster.Status().Node, Created: time.Now()})
	if err != nil {
		writeError(w, err)
		return
	}
	s.setReadHeaders(w, info.Index)
	h := w.Header()
	h.Set("Content-Type", client.SnapshotContentType)
	h.Set("Content-Length", fmt.Sprint(buf.Len()))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="beacon-%d.snap"`, info.Index))
	_, _ = w.Write(buf.Bytes())
}

// handleSnapshotRestore: PUT /v1/snapshot with a snapshot archive as the
// body. The archive is checked in full here (400 bad_snapshot, saying what
// is wrong, before anything changes; 413 above MaxSnapshotBytes), then
// restored on every node through the leader.
func (s *Server) handleSnapshotRestore(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, s.cfg.MaxSnapshotBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(body), 0)
	if err != nil {
		writeError(w, err)
		return
	}
	idx, err := s.cluster.Restore(r.Context(), body)
	if err != nil {
		writeError(w, err)
		return
	}
	c, _ := ar.Counts()
	writeJSON(w, client.RestoreResult{
		Index: idx,
		Snapshot: client.SnapshotInfo{
			Format: ar.Info.Format, Index: ar.Info.Index, Node: ar.Info.Node, Created: ar.Info.Created,
			Size: ar.Info.Size, SHA256: ar.Info.SHA256,
			Counts: client.SnapshotCounts{Services: c.Services, Instances: c.Instances, Checks: c.Checks, Nodes: c.Nodes, Tokens: c.Tokens},
		},
	})
}

// handleForceLeave: POST /v1/cluster/force-leave/{node}.
func (s *Server) handleForceLeave(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	if err := validateID("node", node); err != nil {
		writeError(w, err)
		return
	}
	if err := s.decodeOptionalBody(w, r, &struct{}{}); err != nil { // see handleDeregister
		writeError(w, err)
		return
	}
	if err := s.cluster.ForceLeave(r.Context(), node); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]bool{"left": true})
}
