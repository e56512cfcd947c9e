package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/spf13/cobra"
)

// Operator commands: Raft peers, snapshots, force-leave and the health probe
// the container image uses.

func newOperatorCmd(f *Factory) *cobra.Command {
	op := &cobra.Command{
		Use:   "operator",
		Short: "Cluster operations for operators",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			return usageError{errors.New("missing subcommand (raft)")}
		},
	}
	raftCmd := &cobra.Command{
		Use:   "raft",
		Short: "Inspect and change the Raft configuration",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			return usageError{errors.New("missing subcommand (list-peers, servers or remove-peer)")}
		},
	}
	raftCmd.AddCommand(newListPeersCmd(f, nil), newServersCmd(f, nil), newRemovePeerCmd(f, nil))
	op.AddCommand(raftCmd)
	return op
}

type listPeersOptions struct{ f *Factory }

func newListPeersCmd(f *Factory, runF func(context.Context, *listPeersOptions) error) *cobra.Command {
	opts := &listPeersOptions{f: f}
	return &cobra.Command{
		Use:   "list-peers",
		Short: "List the Raft peers, with the leader and who votes",
		Long: `List the servers of the Raft configuration as the agent at --addr sees it
(GET /v1/cluster/status): their ID (the node name), cluster address, whether
each is the leader or a follower, and whether it votes.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runListPeers(c.Context(), opts)
		},
	}
}

func runListPeers(ctx context.Context, opts *listPeersOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	return opts.f.Print(st.Peers, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tADDRESS\tSTATE\tVOTER")
		for _, p := range st.Peers {
			state := "follower"
			if p.Leader {
				state = "leader"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%t\n", esc(p.ID), esc(p.Address), state, p.Suffrage == "Voter")
		}
	})
}

type serversOptions struct{ f *Factory }

func newServersCmd(f *Factory, runF func(context.Context, *serversOptions) error) *cobra.Command {
	opts := &serversOptions{f: f}
	return &cobra.Command{
		Use:   "servers",
		Short: "Every Raft server's own view: role, leader, term, indexes, last contact",
		Long: `Ask every server of the Raft configuration, through the agent at --addr
(GET /v1/cluster/servers), for its own view of Raft: its role, the leader it
follows, its term, its commit, applied and last log index, and how long ago it
last knew its catalog current. The agent waits at most 2 s for each server; a
server that does not answer is listed with the reason (e.g. "no answer within
2s" for a paused or overloaded process, "connection refused" for a stopped one).`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runServers(c.Context(), opts)
		},
	}
}

func runServers(ctx context.Context, opts *serversOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	s, err := cl.Servers(ctx)
	if err != nil {
		return err
	}
	return opts.f.Print(s, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tADDRESS\tSTATE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tLAST\tLAST CONTACT\tANSWER")
		for _, sv := range s.Servers {
			answer := fmt.Sprintf("%dms", sv.TookMS)
			if sv.ID == s.Node {
				answer = "this agent"
			}
			v := sv.View
			if v == nil {
				fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", esc(sv.ID), esc(sv.Address), esc(sv.Error))
				continue
			}
			leader := esc(v.Leader)
			if leader == "" {
				leader = "-"
			}
			contact := fmt.Sprintf("%dms", v.LastContactMS)
			if v.LastContactMS < 0 {
				contact = "never"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", esc(sv.ID), esc(sv.Address), esc(strings.ToLower(v.State)), leader,
				v.Term, v.CommitIndex, v.AppliedIndex, v.LastIndex, contact, answer)
		}
	})
}

type removePeerOptions struct {
	f       *Factory
	id      string
	address string
}

func newRemovePeerCmd(f *Factory, runF func(context.Context, *removePeerOptions) error) *cobra.Command {
	opts := &removePeerOptions{f: f}
	c := &cobra.Command{
		Use:   "remove-peer ID | --address HOST:PORT",
		Short: "Remove a server that is gone for good from the Raft configuration",
		Long: `Remove a server from the Raft configuration, through the leader
(DELETE /v1/cluster/peers/ID, or DELETE /v1/cluster/peers?address=HOST:PORT
with --address). Use it for a server that died and will not come back; a
server that is still running should leave instead (beacon leave).

The ID is taken as it is, even one that breaks the rule of node names (a
server named by an older release). A server whose ID holds control
characters (list-peers shows them escaped, as \x1b) is removed by the
cluster address list-peers shows for it: --address.`,
		Args: func(c *cobra.Command, args []string) error {
			switch {
			case opts.address != "" && len(args) > 0:
				return usageError{errors.New("give an ID or --address, not both")}
			case opts.address != "":
				return nil
			}
			return exactArgs(1)(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				opts.id = args[0]
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runRemovePeer(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.address, "address", "", "remove the server with this cluster address (as list-peers shows it) instead of naming its ID")
	return c
}

func runRemovePeer(ctx context.Context, opts *removePeerOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	res := &client.RemovePeerResult{Removed: true, ID: opts.id}
	if opts.address != "" {
		if res, err = cl.RemovePeerByAddress(ctx, opts.address); err != nil {
			return err
		}
	} else if err := cl.RemovePeer(ctx, opts.id); err != nil {
		return err
	}
	out := map[string]string{"removed": res.ID}
	if res.Address != "" {
		out["address"] = res.Address
	}
	// JSON escapes control characters itself; the text goes to a terminal.
	return opts.f.Print(out, func(w io.Writer) {
		if res.Address != "" {
			fmt.Fprintf(w, "removed %s (%s) from the raft configuration\n", esc(res.ID), esc(res.Address))
			return
		}
		fmt.Fprintf(w, "removed %s from the raft configuration\n", esc(res.ID))
	})
}

type forceLeaveOptions struct {
	f    *Factory
	node string
}

func newForceLeaveCmd(f *Factory, runF func(context.Context, *forceLeaveOptions) error) *cobra.Command {
	opts := &forceLeaveOptions{f: f}
	return &cobra.Command{
		Use:   "force-leave NODE",
		Short: "Mark a failed member as left and remove it from Raft",
		Long: `Mark a member that failed (and will not come back) as left: the leader records
it as left, stops rejoining it, tells every alive member to do the same, and
removes it from the Raft configuration. An alive member is refused: make it
leave with 'beacon leave'. If a force-left node comes back, it is a member again.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.node = args[0]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runForceLeave(c.Context(), opts)
		},
	}
}

func runForceLeave(ctx context.Context, opts *forceLeaveOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	if err := cl.ForceLeave(ctx, opts.node); err != nil {
		return err
	}
	return opts.f.Print(map[string]string{"left": opts.node}, func(w io.Writer) {
		fmt.Fprintf(w, "%s is marked left and removed from raft\n", opts.node)
	})
}

func newSnapshotCmd(f *Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, restore and inspect snapshots of the whole catalog",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			return usageError{errors.New("missing subcommand (save, restore or inspect)")}
		},
	}
	c.AddCommand(newSnapshotSaveCmd(f, nil), newSnapshotRestoreCmd(f, nil), newSnapshotInspectCmd(f, nil))
	return c
}

type snapshotOptions struct {
	f     *Factory
	file  string
	stale bool
}

func newSnapshotSaveCmd(f *Factory, runF func(context.Context, *snapshotOptions) error) *cobra.Command {
	opts := &snapshotOptions{f: f}
	c := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the catalog to FILE",
		Long: `Save a snapshot archive of the whole catalog to FILE (GET /v1/snapshot). The
archive holds every write acknowledged before the command ran; --stale saves
what the agent holds even when the cluster has no leader. The file is
checked after download and written atomically (FILE.tmp, then renamed).`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.file = args[0]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runSnapshotSave(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.stale, "stale", false, "save the agent's own state without asking the leader")
	return c
}

func runSnapshotSave(ctx context.Context, opts *snapshotOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := cl.SaveSnapshot(ctx, &buf, opts.stale); err != nil {
		return err
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(buf.Bytes()), 0)
	if err != nil {
		return fmt.Errorf("the agent sent a damaged snapshot: %w", err)
	}
	if err := writeFileAtomic(opts.file, buf.Bytes()); err != nil {
		return err
	}
	if opts.stale {
		warnUnappliedLog(ctx, cl, opts.f.Err, ar.Info.Index)
	}
	info := snapshotInfo(ar.Info)
	return opts.f.Print(info, func(w io.Writer) {
		fmt.Fprintf(w, "saved snapshot at index %d (%d services, %d instances, %d checks; %d bytes) to %s\n",
			info.Index, info.Counts.Services, info.Counts.Instances, info.Counts.Checks, buf.Len(), opts.file)
	})
}

// warnUnappliedLog says so when the agent that answered a --stale save
// knows no leader and its log holds entries past what it applied: Raft
// keeps its commit index in memory, so a server restarted without a quorum
// applies nothing past its last Raft snapshot, and those entries may be
// committed writes the archive lacks (docs/operations.md, "Restarts and
// failures"). Best effort: a status that cannot be read warns nothing.
func warnUnappliedLog(ctx context.Context, cl *client.Client, w io.Writer, saved uint64) {
	st, err := cl.Status(ctx)
	if err != nil || st.Leader != "" || st.LastIndex <= st.AppliedIndex {
		return
	}
	fmt.Fprintf(w, "warning: %s knows no leader and its Raft log holds %d entries past index %d, the last it applied (the archive is at %d): "+
		"they may be writes that were committed, which this archive lacks. After a lost quorum, recover with recovery.json instead (docs/operations.md, \"Recovering from a lost quorum\").\n",
		esc(st.Node), st.LastIndex-st.AppliedIndex, st.AppliedIndex, saved)
}

// writeFileAtomic writes b to path through a synced temporary file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func snapshotInfo(i fsm.ArchiveInfo) client.SnapshotInfo {
	return client.SnapshotInfo{
		Format: i.Format, Index: i.Index, Node: i.Node, Created: i.Created, Size: i.Size, SHA256: i.SHA256,
		Counts: client.SnapshotCounts{Services: i.Counts.Services, Instances: i.Counts.Instances,
			Checks: i.Counts.Checks, Nodes: i.Counts.Nodes, Tokens: i.Counts.Tokens},
	}
}

func newSnapshotRestoreCmd(f *Factory, runF func(context.Context, *snapshotOptions) error) *cobra.Command {
	opts := &snapshotOptions{f: f}
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the catalog of every node with a saved snapshot",
		Long: `Restore a snapshot archive saved by 'beacon snapshot save' (PUT /v1/snapshot).
The file is checked first (here and again by the cluster); then the leader
restores it through Raft, which installs it on every node. Everything
registered since the snapshot was saved is gone afterwards; writes in flight
during the restore fail with 503 unknown_outcome and may be retried.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.file = args[0]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runSnapshotRestore(c.Context(), opts)
		},
	}
}

func runSnapshotRestore(ctx context.Context, opts *snapshotOptions) error {
	b, err := os.ReadFile(opts.file)
	if err != nil {
		return err
	}
	if _, err := fsm.ReadArchive(bytes.NewReader(b), 0); err != nil {
		return fmt.Errorf("%s: %w", opts.file, err)
	}
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	res, err := cl.RestoreSnapshot(ctx, b)
	if err != nil {
		return err
	}
	return opts.f.Print(res, func(w io.Writer) {
		fmt.Fprintf(w, "restored snapshot of index %d (%d services, %d instances) at index %d\n",
			res.Snapshot.Index, res.Snapshot.Counts.Services, res.Snapshot.Counts.Instances, res.Index)
	})
}

func newSnapshotInspectCmd(f *Factory, runF func(context.Context, *snapshotOptions) error) *cobra.Command {
	opts := &snapshotOptions{f: f}
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file and show what it holds (no agent needed)",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.file = args[0]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runSnapshotInspect(c.Context(), opts)
		},
	}
}

func runSnapshotInspect(_ context.Context, opts *snapshotOptions) error {
	fh, err := os.Open(opts.file)
	if err != nil {
		return err
	}
	defer fh.Close()
	ar, err := fsm.ReadArchive(fh, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.file, err)
	}
	info := snapshotInfo(ar.Info)
	return opts.f.Print(info, func(w io.Writer) {
		fmt.Fprintf(w, "format:\t%d\nindex:\t%d\nnode:\t%s\ncreated:\t%s\nsize:\t%d bytes (gzip)\nsha256:\t%s\n",
			info.Format, info.Index, esc(info.Node), info.Created.Format(time.RFC3339), info.Size, info.SHA256)
		fmt.Fprintf(w, "services:\t%d\ninstances:\t%d\nchecks:\t%d\nnodes:\t%d\ntokens:\t%d\n",
			info.Counts.Services, info.Counts.Instances, info.Counts.Checks, info.Counts.Nodes, info.Counts.Tokens)
	})
}

type healthOptions struct {
	f       *Factory
	path    string
	timeout time.Duration
}

func newHealthCmd(f *Factory, runF func(context.Context, *healthOptions) error) *cobra.Command {
	opts := &healthOptions{f: f}
	c := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the agent at --addr is ready, non-zero otherwise",
		Long: `Probe an HTTP endpoint and exit 0 if it answers 2xx, 1 otherwise. By default it
asks the agent's /readyz (a leader is known and recent), which is what the
container image uses as its health check:

  beacon health --addr 127.0.0.1:8750
  beacon health --addr 127.0.0.1:8080 --path /healthz     # a demo service`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runHealth(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.path, "path", "/readyz", "path to probe")
	c.Flags().DurationVar(&opts.timeout, "timeout", 3*time.Second, "give up after this long")
	return c
}

func runHealth(ctx context.Context, opts *healthOptions) error {
	addr, _, _ := strings.Cut(opts.f.Addr, ",")
	addr = strings.TrimSpace(addr)
	// With the CLI's TLS flags (--ca-cert, BEACON_CACERT, ...) the agent
	// speaks HTTPS.
	tc, err := opts.f.TLS.config()
	if err != nil {
		return usageError{err}
	}
	hc := http.DefaultClient
	if tc != nil {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	if !strings.Contains(addr, "://") {
		if tc != nil {
			addr = "https://" + addr
		} else {
			addr = "http://" + addr
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(addr, "/")+opts.path, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("not healthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		var eb client.ErrorBody
		if resp.Header.Get(client.HeaderAgent) != "" && json.Unmarshal(body, &eb) == nil && eb.Code != "" {
			// An agent's error (https_required: the agent speaks HTTPS),
			// which hintFor reads.
			return fmt.Errorf("not healthy: %s answered: %w", req.URL, &client.Error{Status: resp.StatusCode, ErrorBody: eb})
		}
		return fmt.Errorf("not healthy: %s answered %d: %s", req.URL, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	_, err = fmt.Fprintf(opts.f.Out, "healthy: %s answered %d\n", req.URL, resp.StatusCode)
	return err
}
