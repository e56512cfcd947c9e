package chaostest

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// Kind is what an operation did.
type Kind string

// Operation kinds. Put registers an instance (first time or again, with a
// new value); Del deregisters it; Read is a default (local) read and
// ConsistentRead a ?consistent one; FinalRead is the consistent read of
// every key after the last heal.
const (
	Put            Kind = "put"
	Del            Kind = "del"
	Read           Kind = "read"
	ConsistentRead Kind = "read-consistent"
	FinalRead      Kind = "final-read"
)

// Outcome is what the client knows about an operation.
type Outcome string

// Outcomes. Fail means the operation certainly had no effect (a 4xx, a 503
// no_leader or not_leader, or a refused connection); Unknown means it may or
// may not have taken effect (a timeout, a dropped connection, 503
// unknown_outcome, 504, 500): such writes are open-ended in the
// linearizability check.
const (
	OK      Outcome = "ok"
	Fail    Outcome = "fail"
	Unknown Outcome = "unknown"
)

// Op is one recorded operation.
type Op struct {
	ID int `json:"id"`
	// Process identifies the client process in the Jepsen sense: a worker
	// takes a new process after an unknown outcome, since its old request
	// may still be in flight.
	Process     int    `json:"process"`
	Worker      int    `json:"worker"`
	Node        int    `json:"node"`
	NodeName    string `json:"node_name"`
	Incarnation int    `json:"incarnation"`
	Kind        Kind   `json:"kind"`
	// Key is the instance id, or AllKeys for a read of the whole service.
	Key string `json:"key"`
	// Value is the value written by a put, or the value read ("" when the
	// instance was absent).
	Value string `json:"value,omitempty"`
	// Values is what a read of AllKeys found: instance id -> value.
	Values map[string]string `json:"values,omitempty"`
	// Call and Return are offsets from the start of the run.
	Call    time.Duration `json:"call"`
	Return  time.Duration `json:"return"`
	Outcome Outcome       `json:"outcome"`
	// Index is X-Beacon-Index of the answer (the write's log index for a
	// put or del); 0 when the answer carried no read headers.
	Index uint64 `json:"index,omitempty"`
	// LastContact is X-Beacon-Last-Contact of a read (-1: never).
	LastContact time.Duration `json:"last_contact,omitempty"`
	KnownLeader bool          `json:"known_leader,omitempty"`
	Status      int           `json:"status,omitempty"`
	Code        string        `json:"code,omitempty"`
	Err         string        `json:"error,omitempty"`
}

// AllKeys is the Key of a read of the whole workload service
// (GET /v1/services/chaos/instances).
const AllKeys = "*"

// ValueOf returns what a successful read found for key ("" if absent).
func (o *Op) ValueOf(key string) string {
	if o.Key == AllKeys {
		return o.Values[key]
	}
	return o.Value
}

// IsWrite reports whether the operation changes state.
func (o *Op) IsWrite() bool { return o.Kind == Put || o.Kind == Del }

// IsRead reports whether the operation is a read of any kind.
func (o *Op) IsRead() bool { return !o.IsWrite() }

// History collects operations from many goroutines.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewHistory starts a history whose times are offsets from now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now returns the current offset from the history's start.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Start returns the wall-clock time offsets are measured from.
func (h *History) Start() time.Time { return h.start }

// Add records op and returns its id.
func (h *History) Add(op Op) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops)
	h.ops = append(h.ops, op)
	return op.ID
}

// Ops returns a copy of the operations, ordered by call time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// WriteJSON writes ops as JSON lines.
func WriteJSON(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for i := range ops {
		if err := enc.Encode(&ops[i]); err != nil {
			return err
		}
	}
	return nil
}

// ReadJSON reads a history written by WriteJSON (to re-check a saved run).
func ReadJSON(r io.Reader) ([]Op, error) {
	dec := json.NewDecoder(r)
	var out []Op
	for {
		var op Op
		if err := dec.Decode(&op); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return out, err
		}
		out = append(out, op)
	}
}

// WriteJSONFile writes ops to path.
func WriteJSONFile(path string, ops []Op) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteJSON(f, ops); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Classify turns a client error into an outcome: certainly without effect
// (Fail) or maybe applied (Unknown). Reads that fail are simply Fail.
func Classify(err error, write bool) (Outcome, int, string) {
	if err == nil {
		return OK, 0, ""
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		switch {
		case ce.Status >= 400 && ce.Status < 500 && ce.Status != 408 && ce.Status != 499:
			return Fail, ce.Status, ce.Code
		case ce.Status == http.StatusServiceUnavailable && (ce.Code == "no_leader" || ce.Code == "not_leader"):
			// The cluster retries internally only where the command surely
			// did not reach a leader's log; these codes mean it never did.
			return Fail, ce.Status, ce.Code
		}
		if write {
			return Unknown, ce.Status, ce.Code
		}
		return Fail, ce.Status, ce.Code
	}
	if refused(err) || !write {
		return Fail, 0, "net"
	}
	return Unknown, 0, "net"
}

// refused reports whether the request surely never reached the server.
func refused(err error) bool {
	var op *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial")
}
