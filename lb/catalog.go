package lb

import (
	"context"
	"time"
)

// Catalog is the registry as the balancer needs it: the list of services and
// each service's instances, both as blocking reads. Implementations must be
// safe for concurrent use; cmd provides one over the Go client (with fail-over
// between registry nodes) and one over an agent's local store.
type Catalog interface {
	// Services returns the names of the registered services once their
	// index differs from index (at once when index is 0), or unchanged when
	// the implementation's wait ends.
	Services(ctx context.Context, index uint64) (*ServiceList, error)
	// Instances returns every instance of service, whatever its health,
	// once the service's index differs from index (at once when index is 0),
	// or unchanged when the implementation's wait ends. A service with no
	// instances is an empty list, not an error.
	Instances(ctx context.Context, service string, index uint64) (*InstanceList, error)
}

// Source describes the registry node that answered a read.
type Source struct {
	// Node is the address (or name) of the registry node that answered.
	Node string
	// KnownLeader is false when that node had lost contact with its leader,
	// so its answer may be stale.
	KnownLeader bool
	// LastContact is how long before the answer that node heard from its
	// leader (negative when it never did).
	LastContact time.Duration
}

// ServiceList is the answer of Catalog.Services.
type ServiceList struct {
	Index  uint64
	Names  []string
	Source Source
}

// InstanceList is the answer of Catalog.Instances.
type InstanceList struct {
	Index    uint64
	Backends []Backend
	Source   Source
}
