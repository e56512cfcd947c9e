package agent

import (
	"context"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/lb"
	"github.com/hashicorp/go-memdb"
)

// leaderView is what the store catalog reports about the local node's
// contact with its leader.
type leaderView interface {
	KnownLeader() bool
	LastContact() time.Duration
}

// storeCatalog presents an agent's local replicated store as an lb.Catalog,
// for a balancer embedded in the agent: blocking reads are memdb watches.
type storeCatalog struct {
	store  *fsm.Store
	leader leaderView
	name   string
	wait   time.Duration
}

func (c *storeCatalog) source() lb.Source {
	lc := c.leader.LastContact()
	if lc == time.Duration(1<<63-1) {
		lc = -1
	}
	return lb.Source{Node: c.name, KnownLeader: c.leader.KnownLeader(), LastContact: lc}
}

// watch runs read until its index differs from index, or the wait ends.
func (c *storeCatalog) watch(ctx context.Context, index uint64, read func(ws memdb.WatchSet) uint64) error {
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	for {
		ws := memdb.NewWatchSet()
		idx := read(ws)
		if index == 0 || idx != index {
			return nil
		}
		if err := ws.WatchCtx(wctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // the wait ended: answer unchanged
		}
	}
}

// Services implements lb.Catalog.
func (c *storeCatalog) Services(ctx context.Context, index uint64) (*lb.ServiceList, error) {
	out := &lb.ServiceList{}
	err := c.watch(ctx, index, func(ws memdb.WatchSet) uint64 {
		idx, svcs, _ := c.store.Services(ws, "", "", 0)
		out.Index, out.Names = idx, out.Names[:0]
		for _, s := range svcs {
			out.Names = append(out.Names, s.Name)
		}
		return idx
	})
	out.Source = c.source()
	return out, err
}

// Instances implements lb.Catalog.
func (c *storeCatalog) Instances(ctx context.Context, service string, index uint64) (*lb.InstanceList, error) {
	out := &lb.InstanceList{}
	err := c.watch(ctx, index, func(ws memdb.WatchSet) uint64 {
		idx, insts := c.store.ServiceInstances(ws, service)
		out.Index, out.Backends = idx, make([]lb.Backend, 0, len(insts))
		for _, i := range insts {
			out.Backends = append(out.Backends, storeBackend(i))
		}
		return idx
	})
	out.Source = c.source()
	return out, err
}

func storeBackend(i *fsm.Instance) lb.Backend {
	b := lb.Backend{
		ID: i.ID, Address: i.Address, Port: i.Port, Weight: i.Weight, Status: lb.Health(i.Status),
		Draining: i.Drain != nil, Maintenance: i.Maintenance != nil, Meta: i.MetaMap(), Metrics: i.Metrics,
		Trusted: i.Trusted,
	}
	if i.HealthySince != 0 {
		b.HealthySince = time.Unix(0, i.HealthySince)
	}
	return b
}
