package cluster

import (
	"reflect"
	"sync"

	"github.com/hashicorp/raft"
)

// await waits for a Raft future's answer, or until the node shuts down
// (then ErrRaftShutdown).
//
// hashicorp/raft (v1.8) answers a future only once its main loop has taken
// it from the channel it was queued on (applyCh for Apply and Barrier,
// verifyCh for VerifyLeader, configurationChangeCh for AddVoter and
// RemoveServer). If Raft shuts down while the loop is busy elsewhere (a
// leader held in a slow log append, say), the futures still queued are
// never answered, and whoever waits on them waits for ever: a read's
// VerifyLeader kept an RPC handler, and so the node's Shutdown, waiting
// until Shutdown gave up (TestAWaitOnRaftEndsWhenTheNodeStops). Raft's
// futures carry a ShutdownCh that ends such a wait, but Raft sets it on
// only a few of its own; await sets it to the node's stopping channel
// before waiting.
func (n *Node) await(f raft.Future) error {
	bindShutdown(f, n.stopping)
	return f.Error()
}

// shutdownField caches, per future type, the index of its ShutdownCh field
// (nil: the type has none).
var shutdownField sync.Map // reflect.Type -> []int

var shutdownChType = reflect.TypeFor[chan struct{}]()

// bindShutdown sets f's ShutdownCh to ch unless it is set already, and
// reports whether it did. The field belongs to raft's unexported deferError,
// which every future answered by Raft's loops embeds; reflection reaches it
// as the language does (a promoted exported field). A future without it
// (raft's errorFuture: answered already) is left alone. Only the waiter
// reads the field (in Error), so setting it before waiting races with
// nothing.
func bindShutdown(f raft.Future, ch chan struct{}) bool {
	if f == nil || ch == nil {
		return false
	}
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false
	}
	v = v.Elem()
	idx, ok := shutdownField.Load(v.Type())
	if !ok {
		var found []int
		if sf, ok := v.Type().FieldByName("ShutdownCh"); ok && sf.Type == shutdownChType {
			found = sf.Index
		}
		shutdownField.Store(v.Type(), found)
		idx = found
	}
	if idx.([]int) == nil {
		return false
	}
	fv := v.FieldByIndex(idx.([]int))
	if !fv.CanSet() || !fv.IsNil() {
		return false
	}
	fv.Set(reflect.ValueOf(ch))
	return true
}
