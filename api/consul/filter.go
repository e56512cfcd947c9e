package consul

import (
	"net/url"

	"github.com/hashicorp/go-bexpr"
)

// Limits of ?filter: a filter longer than MaxFilterLen is refused before
// it is parsed, and the parser stops after maxFilterExpressions steps (its
// own default allows ten times more).
const (
	MaxFilterLen         = 4096
	maxFilterExpressions = 200000
)

// filter is a parsed ?filter= expression (go-bexpr: ==, !=, in, not in,
// contains, not contains, matches, not matches, is empty, is not empty,
// and, or, not, parentheses) over the fields of the result's JSON shape.
// A nil *filter matches everything.
type filter struct {
	eval *bexpr.Evaluator
}

// parseFilter reads ?filter; an empty or absent one is nil.
func parseFilter(q url.Values) (*filter, error) {
	expr := q.Get("filter")
	if expr == "" {
		return nil, nil
	}
	return compileFilter(expr)
}

func compileFilter(expr string) (*filter, error) {
	if len(expr) > MaxFilterLen {
		return nil, invalid("filter", "longer than %d characters", MaxFilterLen)
	}
	ev, err := bexpr.CreateEvaluator(expr, bexpr.WithMaxExpressions(maxFilterExpressions))
	if err != nil {
		return nil, invalid("filter", "Failed to create boolean expression evaluator: %v", err)
	}
	return &filter{eval: ev}, nil
}

// match evaluates the filter on v (a pointer to one of the result types).
// A selector that names no field of v is a 400, as in Consul.
func (f *filter) match(v any) (bool, error) {
	if f == nil {
		return true, nil
	}
	ok, err := f.eval.Evaluate(v)
	if err != nil {
		return false, invalid("filter", "%v", err)
	}
	return ok, nil
}
