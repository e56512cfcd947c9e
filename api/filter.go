package api

import (
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/Masterminds/semver/v3"
	"github.com/beaconhq/beacon/fsm"
)

// wildcard matches versions such as 1.x or 2.3.X, which are ranges.
var wildcard = regexp.MustCompile(`(^|\.)[xX](\.|$)`)

// instanceFilter is the set of discovery filters of a request.
type instanceFilter struct {
	healthy bool
	// status, when set, is the one health status that matches.
	status fsm.Health
	tags   []string
	meta   [][2]string
	// version matches exactly when constraint is nil, else by semver range.
	version    string
	constraint *semver.Constraints
}

// parseInstanceFilter reads healthy=, tag= (repeatable, all must match),
// meta=key:value (repeatable, all must match) and version= (an exact
// version, or a semver range such as ">=1.2.0 <2.0.0").
func parseInstanceFilter(q url.Values) (instanceFilter, error) {
	var f instanceFilter
	var err error
	if f.healthy, err = boolParam(q, "healthy"); err != nil {
		return f, err
	}
	switch v := fsm.Health(q.Get("status")); v {
	case "":
	case fsm.Passing, fsm.Warning, fsm.Critical:
		f.status = v
	default:
		return f, invalid("status", "must be passing, warning or critical")
	}
	f.tags = q["tag"]
	for _, m := range q["meta"] {
		k, v, ok := strings.Cut(m, ":")
		if !ok || k == "" {
			return f, invalid("meta", "must be key:value")
		}
		f.meta = append(f.meta, [2]string{k, v})
	}
	if v := q.Get("version"); v != "" {
		f.version = v
		// An exact version is what a registration may carry; anything else
		// must be a range, or the filter would quietly match nothing.
		if !validVersionChars(v) || strings.ContainsAny(v, "<>=~^*, |") || wildcard.MatchString(v) {
			c, err := parseConstraint(v)
			if err != nil {
				return f, invalid("version", "not a version or semver range: %v", err)
			}
			f.constraint = c
		}
	}
	return f, nil
}

func (f *instanceFilter) empty() bool {
	return !f.healthy && f.status == "" && len(f.tags) == 0 && len(f.meta) == 0 && f.version == ""
}

func (f *instanceFilter) match(i *fsm.Instance) bool {
	if f.healthy && !i.Healthy() {
		return false
	}
	if f.status != "" && i.Status != f.status {
		return false
	}
	if !i.HasTags(f.tags) {
		return false
	}
	for _, kv := range f.meta {
		if v, ok := i.MetaValue(kv[0]); !ok || v != kv[1] {
			return false
		}
	}
	if f.version != "" {
		if f.constraint == nil {
			return i.Version == f.version
		}
		v := parseVersion(i.Version)
		if v == nil || !f.constraint.Check(v) {
			return false
		}
	}
	return true
}

// filter keeps the instances that match: in itself when no filter is set,
// else a new slice (in may be a list the catalog shares among readers,
// which must not be written).
func (f *instanceFilter) filter(in []*fsm.Instance) []*fsm.Instance {
	if f.empty() {
		return in
	}
	var out []*fsm.Instance
	for _, i := range in {
		if f.match(i) {
			out = append(out, i)
		}
	}
	return out
}

// Parsed versions and ranges are cached, so a range filter does not parse
// every instance's version on every read. Both caches stop growing at
// maxCached entries (a catalog has few distinct versions; a client sending
// ever new ranges only loses the cache).
const maxCached = 4096

type cache[V any] struct {
	m sync.Map // string -> V
	n atomic.Int64
}

func (c *cache[V]) get(key string, parse func(string) V) V {
	if v, ok := c.m.Load(key); ok {
		return v.(V)
	}
	v := parse(key)
	if c.n.Load() < maxCached {
		if _, loaded := c.m.LoadOrStore(key, v); !loaded {
			c.n.Add(1)
		}
	}
	return v
}

type parsedConstraint struct {
	c   *semver.Constraints
	err error
}

var (
	versions    cache[*semver.Version]
	constraints cache[parsedConstraint]
)

// parseVersion returns the semantic version v, or nil if it is not one.
func parseVersion(v string) *semver.Version {
	return versions.get(v, func(s string) *semver.Version {
		ver, err := semver.NewVersion(s)
		if err != nil {
			return nil
		}
		return ver
	})
}

// parseConstraint parses a semver range. *semver.Constraints is safe for
// concurrent Check calls, so one parsed value serves every request.
func parseConstraint(r string) (*semver.Constraints, error) {
	p := constraints.get(r, func(s string) parsedConstraint {
		c, err := semver.NewConstraint(s)
		return parsedConstraint{c, err}
	})
	return p.c, p.err
}
