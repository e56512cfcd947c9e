package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb"
)

// Catalog presents a Beacon cluster, reached through the Go client, as an
// lb.Catalog. The client's fail-over policy (api/client, failover.go) picks
// the agent: it follows one at a time, moves to the next when that one
// cannot be reached, hangs, or answers 5xx or 429, and after an answer from
// an agent that knows no leader (it may be cut off from the cluster) asks
// another next time.
type Catalog struct {
	cl   *client.Client
	wait time.Duration
}

// NewCatalog returns a catalog over the agents at addrs. wait is the
// longest a blocking read waits before it returns unchanged.
func NewCatalog(addrs []string, token string, wait time.Duration, tc *tls.Config) (*Catalog, error) {
	if len(addrs) == 0 {
		return nil, errors.New("lb: no registry address")
	}
	// Each followed service holds one long poll: keep enough connections.
	tr := client.NewTransport(tc, client.DefaultAttemptTimeout)
	tr.MaxIdleConnsPerHost = 1024
	cfg := client.Config{Token: token, HTTPClient: &http.Client{Transport: tr}, Timeout: 10 * time.Second}
	for _, a := range addrs {
		if tc != nil && !strings.Contains(a, "://") {
			a = "https://" + a
		}
		cfg.Addresses = append(cfg.Addresses, a)
	}
	cl, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Catalog{cl: cl, wait: wait}, nil
}

// source describes the agent that answered a read.
func source(meta *client.QueryMeta) lb.Source {
	if meta == nil {
		return lb.Source{}
	}
	return lb.Source{Node: meta.Agent, KnownLeader: meta.KnownLeader, LastContact: meta.LastContact}
}

func (c *Catalog) query(index uint64) *client.QueryOptions {
	if index == 0 {
		return &client.QueryOptions{}
	}
	return &client.QueryOptions{WaitIndex: index, WaitTime: c.wait}
}

// Services implements lb.Catalog.
func (c *Catalog) Services(ctx context.Context, index uint64) (*lb.ServiceList, error) {
	list, meta, err := c.cl.Services(ctx, c.query(index))
	if err != nil {
		return &lb.ServiceList{}, fmt.Errorf("registry: %w", err)
	}
	out := &lb.ServiceList{Index: meta.Index, Names: make([]string, 0, len(list.Services)), Source: source(meta)}
	for _, s := range list.Services {
		out.Names = append(out.Names, s.Name)
	}
	return out, nil
}

// Instances implements lb.Catalog.
func (c *Catalog) Instances(ctx context.Context, service string, index uint64) (*lb.InstanceList, error) {
	insts, meta, err := c.cl.Instances(ctx, service, c.query(index))
	if err != nil {
		return &lb.InstanceList{}, fmt.Errorf("registry: %w", err)
	}
	out := &lb.InstanceList{Index: meta.Index, Backends: make([]lb.Backend, 0, len(insts)), Source: source(meta)}
	for i := range insts {
		out.Backends = append(out.Backends, clientBackend(&insts[i]))
	}
	return out, nil
}

func clientBackend(i *client.Instance) lb.Backend {
	b := lb.Backend{
		ID: i.ID, Address: i.Address, Port: i.Port, Weight: i.Weight, Status: lb.Health(i.Status),
		Draining: i.Draining != nil, Maintenance: i.Maintenance != nil, Meta: i.Meta, Metrics: i.Metrics,
		Trusted: i.Trusted,
	}
	if i.HealthySince != nil {
		b.HealthySince = *i.HealthySince
	}
	return b
}
