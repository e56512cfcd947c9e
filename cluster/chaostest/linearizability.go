package chaostest

import (
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput is the input of one porcupine operation on one instance id.
type regInput struct {
	Key   string
	Kind  Kind // Put, Del or a read
	Value string
}

// regOutput is what a read returned ("" = absent). Writes have no output.
type regOutput struct {
	Value   string
	Unknown bool // an open-ended write whose outcome is unknown
}

// RegistryModel is the sequential specification the consistent history is
// checked against: a map from instance id to its registration (the value a
// put wrote), partitioned by id so each id is checked on its own. A put sets
// the value, a del removes it (deregistering an absent instance succeeds),
// a read returns it.
func RegistryModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			for _, op := range history {
				k := op.Input.(regInput).Key
				byKey[k] = append(byKey[k], op)
			}
			out := make([][]porcupine.Operation, 0, len(byKey))
			for _, k := range sortedKeys(byKey) {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() interface{} { return "" },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			st, in := state.(string), input.(regInput)
			switch in.Kind {
			case Put:
				return true, in.Value
			case Del:
				return true, ""
			}
			return output.(regOutput).Value == st, st
		},
		Equal: func(a, b interface{}) bool { return a.(string) == b.(string) },
		Hash: func(state interface{}) uint64 {
			h := fnv.New64a()
			h.Write([]byte(state.(string)))
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			in, out := input.(regInput), output.(regOutput)
			switch in.Kind {
			case Put:
				if out.Unknown {
					return fmt.Sprintf("put(%s, %s) ?", in.Key, in.Value)
				}
				return fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
			case Del:
				if out.Unknown {
					return fmt.Sprintf("del(%s) ?", in.Key)
				}
				return fmt.Sprintf("del(%s)", in.Key)
			}
			v := out.Value
			if v == "" {
				v = "absent"
			}
			return fmt.Sprintf("%s(%s) -> %s", in.Kind, in.Key, v)
		},
		DescribeState: func(state interface{}) string {
			if s := state.(string); s != "" {
				return s
			}
			return "absent"
		},
		DescribeOperationMetadata: func(info interface{}) string {
			if info == nil {
				return ""
			}
			return info.(string)
		},
	}
}

// PorcupineHistory turns the recorded history into porcupine operations:
// acknowledged writes with their interval; writes of unknown outcome with an
// open end (they may take effect at any time after their call, so their
// return is after every other event); consistent and final reads that
// succeeded (a read of the whole service becomes one read per instance id,
// which is a weaker but sound check). Failed operations had no effect and
// default reads promise no linearizability, so both are left out.
//
// One reduction keeps the search small: a put of unknown outcome whose
// unique value no checked read ever returned is dropped. That is sound:
// with an open end it can always be linearized after everything else,
// where it is observed by nobody, so the history is linearizable with it
// exactly when it is without it (deregistering reports nothing about what
// it removed, so no other operation can observe the put either).
func PorcupineHistory(ops []Op) []porcupine.Operation {
	keys := map[string]bool{}
	observed := map[string]bool{}
	var end time.Duration
	for i := range ops {
		o := &ops[i]
		if o.Key != AllKeys && o.Key != "" {
			keys[o.Key] = true
		}
		end = max(end, o.Return, o.Call)
		if checkedRead(o) {
			if o.Key == AllKeys {
				for k, v := range o.Values {
					keys[k] = true
					observed[v] = true
				}
			} else {
				observed[o.Value] = true
			}
		}
	}
	open := int64(end) + 1
	processes := map[int]int{}
	client := func(p int) int {
		if id, ok := processes[p]; ok {
			return id
		}
		processes[p] = len(processes)
		return processes[p]
	}
	var out []porcupine.Operation
	for i := range ops {
		o := &ops[i]
		meta := fmt.Sprintf("op %d on %s (process %d)", o.ID, o.NodeName, o.Process)
		switch {
		case o.IsWrite() && o.Outcome == OK:
			out = append(out, porcupine.Operation{ClientId: client(o.Process), Input: regInput{o.Key, o.Kind, o.Value},
				Call: int64(o.Call), Output: regOutput{}, Return: int64(o.Return), Metadata: meta})
		case o.IsWrite() && o.Outcome == Unknown:
			if o.Kind == Put && !observed[o.Value] {
				continue
			}
			out = append(out, porcupine.Operation{ClientId: client(o.Process), Input: regInput{o.Key, o.Kind, o.Value},
				Call: int64(o.Call), Output: regOutput{Unknown: true}, Return: open, Metadata: meta + ", outcome unknown"})
		case checkedRead(o) && o.Key == AllKeys:
			for _, k := range sortedKeys(keys) {
				out = append(out, porcupine.Operation{ClientId: client(o.Process), Input: regInput{k, o.Kind, ""},
					Call: int64(o.Call), Output: regOutput{Value: o.Values[k]}, Return: int64(o.Return), Metadata: meta + ", list read"})
			}
		case checkedRead(o):
			out = append(out, porcupine.Operation{ClientId: client(o.Process), Input: regInput{o.Key, o.Kind, ""},
				Call: int64(o.Call), Output: regOutput{Value: o.Value}, Return: int64(o.Return), Metadata: meta})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

func checkedRead(o *Op) bool {
	return (o.Kind == ConsistentRead || o.Kind == FinalRead) && o.Outcome == OK
}

// LinearizabilityResult is the verdict of CheckLinearizability.
type LinearizabilityResult struct {
	Result porcupine.CheckResult
	// Ops is how many porcupine operations were checked.
	Ops      int
	Took     time.Duration
	info     porcupine.LinearizationInfo
	model    porcupine.Model
	checkErr error
}

// CheckLinearizability checks the consistent part of a history against
// RegistryModel, giving up (result Unknown) after timeout.
func CheckLinearizability(ops []Op, timeout time.Duration) LinearizabilityResult {
	hist := PorcupineHistory(ops)
	m := RegistryModel()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(m, hist, timeout)
	return LinearizabilityResult{Result: res, Ops: len(hist), Took: time.Since(start), info: info, model: m}
}

// WriteVisualization writes porcupine's HTML visualisation of the check.
func (r LinearizabilityResult) WriteVisualization(path string) error {
	return porcupine.VisualizePath(r.model, r.info, path)
}
