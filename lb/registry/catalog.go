package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb"
)

// Catalog presents a Beacon cluster, reached through the Go client,
// as an lb.Catalog. It keeps one client per registry address and follows one
// node at a time: when that node cannot be reached or answers 5xx, it moves
// to the next; when the node answers without a known leader (it may be cut
// off from the cluster), the next read goes to another node.
type Catalog struct {
	addrs   []string
	clients []*client.Client
	cur     atomic.Int32
	wait    time.Duration
}

// NewCatalog returns a catalog over the agents at addrs. wait is the
// longest a blocking read waits before it returns unchanged.
func NewCatalog(addrs []string, token string, wait time.Duration, tc *tls.Config) (*Catalog, error) {
	if len(addrs) == 0 {
		return nil, errors.New("lb: no registry address")
	}
	// Each followed service holds one long poll: keep enough connections.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	tr.TLSClientConfig = tc
	hc := &http.Client{Transport: tr}
	c := &Catalog{addrs: addrs, wait: wait}
	for _, a := range addrs {
		if tc != nil && !strings.Contains(a, "://") {
			a = "https://" + a
		}
		cl, err := client.New(client.Config{Addresses: []string{a}, Token: token, HTTPClient: hc, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		c.clients = append(c.clients, cl)
	}
	return c, nil
}

// read runs fn against the followed node, failing over to the others.
func (c *Catalog) read(ctx context.Context, fn func(*client.Client) (*client.QueryMeta, error)) (lb.Source, error) {
	n := len(c.clients)
	start := int(c.cur.Load()) % n
	var lastErr error
	for k := 0; k < n; k++ {
		i := (start + k) % n
		meta, err := fn(c.clients[i])
		if err == nil {
			if k > 0 {
				c.cur.CompareAndSwap(int32(start), int32(i))
			}
			src := lb.Source{Node: c.addrs[i], KnownLeader: meta.KnownLeader, LastContact: meta.LastContact}
			if !meta.KnownLeader && n > 1 {
				// Its answer is all we have now; ask another node next time.
				c.cur.CompareAndSwap(int32(i), int32((i+1)%n))
			}
			return src, nil
		}
		if ctx.Err() != nil {
			return lb.Source{}, err
		}
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status < 500 && ce.Status != http.StatusTooManyRequests {
			return lb.Source{}, err // our request is at fault, not the node
		}
		lastErr = err
		c.cur.CompareAndSwap(int32(i), int32((i+1)%n))
	}
	return lb.Source{}, fmt.Errorf("no registry node answered (%d tried): %w", n, lastErr)
}

func (c *Catalog) query(index uint64) *client.QueryOptions {
	if index == 0 {
		return &client.QueryOptions{}
	}
	return &client.QueryOptions{WaitIndex: index, WaitTime: c.wait}
}

// Services implements lb.Catalog.
func (c *Catalog) Services(ctx context.Context, index uint64) (*lb.ServiceList, error) {
	var out lb.ServiceList
	src, err := c.read(ctx, func(cl *client.Client) (*client.QueryMeta, error) {
		list, meta, err := cl.Services(ctx, c.query(index))
		if err != nil {
			return nil, err
		}
		out.Index, out.Names = meta.Index, make([]string, 0, len(list.Services))
		for _, s := range list.Services {
			out.Names = append(out.Names, s.Name)
		}
		return meta, nil
	})
	out.Source = src
	return &out, err
}

// Instances implements lb.Catalog.
func (c *Catalog) Instances(ctx context.Context, service string, index uint64) (*lb.InstanceList, error) {
	var out lb.InstanceList
	src, err := c.read(ctx, func(cl *client.Client) (*client.QueryMeta, error) {
		insts, meta, err := cl.Instances(ctx, service, c.query(index))
		if err != nil {
			return nil, err
		}
		out.Index, out.Backends = meta.Index, make([]lb.Backend, 0, len(insts))
		for i := range insts {
			out.Backends = append(out.Backends, clientBackend(&insts[i]))
		}
		return meta, nil
	})
	out.Source = src
	return &out, err
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
