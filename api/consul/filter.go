package consul

import (
	"net/url"
	"unicode/utf8"

	"github.com/hashicorp/go-bexpr"
)

// Limits of ?filter: a filter longer than MaxFilterLen or nesting
// parentheses deeper than MaxFilterDepth is refused before it is parsed
// (go-bexpr's PEG parser backtracks exponentially in nesting: five levels
// exceed 50,000 steps, 4,000 open parentheses take it most of a second),
// and the parser stops after maxFilterExpressions steps.
const (
	MaxFilterLen         = 2048
	MaxFilterDepth       = 4
	maxFilterExpressions = 50000
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
	if utf8.RuneCountInString(expr) > MaxFilterLen {
		return nil, invalid("filter", "longer than %d characters", MaxFilterLen)
	}
	if depth(expr) > MaxFilterDepth {
		return nil, invalid("filter", "parentheses nested deeper than %d", MaxFilterDepth)
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

// depth is the deepest nesting of parentheses outside quoted strings.
func depth(expr string) int {
	d, deepest := 0, 0
	var quote byte
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '`':
			quote = c
		case c == '(':
			d++
			deepest = max(deepest, d)
		case c == ')':
			d--
		}
	}
	return deepest
}
