package cmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/spf13/cobra"
)

type membersOptions struct{ f *Factory }

func newMembersCmd(f *Factory, runF func(context.Context, *membersOptions) error) *cobra.Command {
	opts := &membersOptions{f: f}
	return &cobra.Command{
		Use:   "members",
		Short: "List cluster members as gossip sees them",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runMembers(c.Context(), opts)
		},
	}
}

func runMembers(ctx context.Context, opts *membersOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	ms, err := cl.Members(ctx)
	if err != nil {
		return err
	}
	return opts.f.Print(ms, func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tSTATUS\tROLE\tHTTP\tGOSSIP\tCLUSTER")
		for _, m := range ms {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", esc(m.Name), esc(m.Status), esc(m.Role), esc(m.HTTPAddr), esc(m.GossipAddr), esc(m.ClusterAddr))
		}
	})
}

type joinOptions struct {
	f     *Factory
	addrs []string
}

func newJoinCmd(f *Factory, runF func(context.Context, *joinOptions) error) *cobra.Command {
	opts := &joinOptions{f: f}
	return &cobra.Command{
		Use:   "join ADDR...",
		Short: "Ask the agent at --addr (the first address) to join the cluster through these gossip addresses",
		Args:  minArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.addrs = args
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runJoin(c.Context(), opts)
		},
	}
}

func runJoin(ctx context.Context, opts *joinOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	n, err := cl.Join(ctx, opts.addrs)
	if err != nil {
		return err
	}
	return opts.f.Print(map[string]int{"joined": n}, func(w io.Writer) {
		fmt.Fprintf(w, "contacted %d of %d addresses\n", n, len(opts.addrs))
	})
}

type leaveOptions struct{ f *Factory }

func newLeaveCmd(f *Factory, runF func(context.Context, *leaveOptions) error) *cobra.Command {
	opts := &leaveOptions{f: f}
	return &cobra.Command{
		Use:   "leave",
		Short: "Make the agent at --addr leave the cluster gracefully and shut down",
		Long: `Make the agent at --addr leave the cluster gracefully and shut down. With
several addresses (--addr or BEACON_ADDR a,b,c) only the first one leaves: the
request goes to it alone, never to another agent, and fails if that agent
cannot be reached.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runLeave(c.Context(), opts)
		},
	}
}

func runLeave(ctx context.Context, opts *leaveOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	res, err := cl.Leave(ctx)
	if err != nil {
		return fmt.Errorf("leave %s (the first address of --addr; no other agent is asked): %w", cl.First(), err)
	}
	return opts.f.Print(res, func(w io.Writer) {
		if res.Node == "" { // an agent older than the node in the answer
			fmt.Fprintf(w, "the agent at %s left the cluster\n", esc(res.Agent))
			return
		}
		fmt.Fprintf(w, "%s (%s) left the cluster\n", esc(res.Node), esc(res.Agent))
	})
}

type statusOptions struct{ f *Factory }

func newStatusCmd(f *Factory, runF func(context.Context, *statusOptions) error) *cobra.Command {
	opts := &statusOptions{f: f}
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's Raft state, the leader and the peers",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}
}

func runStatus(ctx context.Context, opts *statusOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	return opts.f.Print(st, func(w io.Writer) {
		lc := "never"
		if st.LastContactMS >= 0 {
			lc = (time.Duration(st.LastContactMS) * time.Millisecond).String()
		}
		leader := fmt.Sprintf("%s (%s)", esc(st.Leader), esc(st.LeaderAddr))
		if st.Leader == "" && st.LeaderAddr == "" {
			leader = noLeaderHint(st)
		}
		fmt.Fprintf(w, "node:\t%s\nstate:\t%s\nleader:\t%s\nterm:\t%d\ncommit index:\t%d\ncatalog index:\t%d\nlast contact:\t%s\n\n",
			esc(st.Node), esc(st.State), leader, st.Term, st.CommitIndex, st.AppliedIndex, lc)
		fmt.Fprintln(w, "PEER\tADDRESS\tSUFFRAGE\tLEADER")
		for _, p := range st.Peers {
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", esc(p.ID), esc(p.Address), esc(p.Suffrage), p.Leader)
		}
	})
}

// noLeaderHint explains a status without a leader by what the agent knows:
// a server that never was in a cluster waits for its peers (or a join); one
// that was (a term, peers) has lost its leader and needs a quorum back.
func noLeaderHint(st *client.ClusterStatus) string {
	voters := 0
	for _, p := range st.Peers {
		if p.Suffrage == "" || p.Suffrage == "Voter" {
			voters++
		}
	}
	if st.Term == 0 && voters <= 1 {
		return "none yet (not in a cluster yet: a new cluster forms once --bootstrap-expect servers have met; " +
			"to add this agent to a running cluster, run 'beacon join' with a member's gossip address)"
	}
	if voters == 0 {
		return fmt.Sprintf("none (no leader known in term %d, and this agent knows no servers)", st.Term)
	}
	return fmt.Sprintf("none (no leader known in term %d: an election needs %d of the %d voters to reach each other; "+
		"see 'beacon operator raft servers' and 'beacon members')", st.Term, voters/2+1, voters)
}
