package api

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Query parameters. Each route of the native API names the ones it
// accepts, and any other is refused with 400 (as bodies refuse unknown
// fields): `?limt=2` must not quietly return everything.
var (
	readParams   = []string{"consistent", "max_stale", "index", "wait"}
	filterParams = []string{"healthy", "status", "tag", "meta", "version"}
	pageParams   = []string{"limit", "cursor"}
	checkParams  = []string{"service", "status", "owner", "instance"}
)

// HeaderNextCursor carries the cursor of the next page of a list that is a
// JSON array (instances, checks); it is absent on the last page.
const HeaderNextCursor = "X-Beacon-Next-Cursor"

// params wraps h so that a request with a query parameter outside the
// allowed groups is refused before h runs.
func params(h http.HandlerFunc, groups ...[]string) http.HandlerFunc {
	allowed := slices.Concat(groups...)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			for k := range queryOf(r) {
				if !slices.Contains(allowed, k) {
					writeError(w, unknownParam(k, allowed))
					return
				}
			}
		}
		h(w, r)
	}
}

func unknownParam(k string, allowed []string) error {
	if len(allowed) == 0 {
		return invalid(k, "unknown query parameter %q: this route takes none", k)
	}
	return invalid(k, "unknown query parameter %q (this route takes %s)", k, strings.Join(allowed, ", "))
}

// boolParam reads the boolean query parameter name. Every boolean
// parameter of the native API (consistent, healthy, stale) reads the same
// way: absent is false; present without a value (?healthy) or with an empty
// one (?healthy=) is true, as are true and 1; false and 0 are false; any
// other value is refused rather than read as false, so a filter the client
// asked for is never quietly dropped.
func boolParam(q url.Values, name string) (bool, error) {
	vs, ok := q[name]
	if !ok {
		return false, nil
	}
	switch first(vs) {
	case "", "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, invalid(name, "must be true, 1, false or 0 (alone or empty means true)")
}

// page is limit= and cursor= of a list walked in ID order.
type page struct {
	limit  int // 0: no limit
	cursor string
}

func parsePage(q map[string][]string) (page, error) {
	var p page
	if v := first(q["limit"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			return p, invalid("limit", "must be 1-%d", MaxPageSize)
		}
		p.limit = n
	}
	p.cursor = first(q["cursor"])
	return p, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (p page) on() bool { return p.limit > 0 || p.cursor != "" }

// pageOf returns the page of items (sorted by id) after the cursor, and the
// next page's cursor ("" when this is the last).
func pageOf[T any](p page, items []T, id func(T) string) ([]T, string) {
	if !p.on() {
		return items, ""
	}
	if !slices.IsSortedFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) }) {
		items = slices.Clone(items)
		slices.SortFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	}
	if p.cursor != "" {
		at, _ := slices.BinarySearchFunc(items, p.cursor, func(a T, c string) int { return strings.Compare(id(a), c) })
		for at < len(items) && id(items[at]) <= p.cursor {
			at++
		}
		items = items[at:]
	}
	if p.limit > 0 && len(items) > p.limit {
		return items[:p.limit], id(items[p.limit-1])
	}
	return items, ""
}
