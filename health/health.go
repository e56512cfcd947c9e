package health

import (
	"context"
	"errors"
	"sync"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

// Cluster is what the health subsystem needs from the cluster node. cmd
// adapts *cluster.Node to it.
type Cluster interface {
	// Apply commits an encoded fsm command through the leader and returns
	// its index once this node's catalog has applied it, or, on a node
	// that has not within the leader-wait after the commit, once that has
	// passed (its reads then wait for the index).
	Apply(ctx context.Context, cmd []byte) (uint64, error)
	// ApplyLeader commits cmd only if this node is the leader; it never
	// forwards, so a deposed leader's decisions are dropped.
	ApplyLeader(ctx context.Context, cmd []byte) (uint64, error)
	// CallLeader delivers payload to ServeRPC on the leader (locally when
	// this node leads) and returns its answer. It must retry, for a while,
	// while the answer is ErrNotLeader or no leader is known.
	CallLeader(ctx context.Context, payload []byte) ([]byte, error)
}

// ErrNotLeader is returned by ServeRPC when this node does not lead (or
// its coordinator has not started yet); callers retry on the leader.
var ErrNotLeader = errors.New("health: not the leader")

// Health is the health checking of one agent: the runner of the checks it
// owns, and the leader's coordinator while it leads. It is safe for
// concurrent use.
type Health struct {
	cfg     Config
	logger  hclog.Logger
	fsm     *fsm.FSM
	store   *fsm.Store
	cl      Cluster
	prober  *Prober
	stats   counters
	metrics *metrics

	mu    sync.Mutex
	coord *coordinator // set while this node leads
}

// New returns the health subsystem of the agent whose catalog is f, with
// its collectors registered on cfg.Metrics when set. It starts nothing: run
// Run on every agent and register Lead as a leader task and ServeRPC as the
// leader's RPC handler.
func New(cfg Config, f *fsm.FSM, cl Cluster) (*Health, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	h := &Health{
		cfg: cfg, logger: logger, fsm: f, store: f.Store(), cl: cl,
		prober:  NewScopedProber(cfg.DenyCIDRs, cfg.AllowCIDRs, cfg.MaxOutput).restrict(cfg.LocalCIDRs, cfg.SafeMethodsOnly),
		metrics: newMetrics(),
	}
	if cfg.Metrics != nil {
		if err := h.metrics.register(cfg.Metrics, h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Stats returns the subsystem's counters.
func (h *Health) Stats() Stats { return h.stats.snapshot() }

// Prober returns the prober the runner uses.
func (h *Health) Prober() *Prober { return h.prober }

func (h *Health) coordinator() *coordinator {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.coord
}

func (h *Health) setCoordinator(c *coordinator) {
	h.mu.Lock()
	h.coord = c
	h.mu.Unlock()
}
