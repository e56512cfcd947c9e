package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

func unixTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func optTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := unixTime(ns)
	return &t
}

// toInstance converts a stored instance to its JSON shape. With checks (a
// single-instance read) it includes checks and transitions.
func toInstance(i *fsm.Instance, checks []*fsm.Check, full bool) client.Instance {
	out := client.Instance{
		ID: i.ID, Service: i.Service, Address: i.Address, Port: i.Port,
		Tags: i.Tags, Meta: i.MetaMap(), Version: i.Version, Weight: i.Weight, Node: i.Node,
		Trusted: i.Trusted, Status: string(i.Status), Healthy: i.Healthy(), HealthySince: optTime(i.HealthySince),
		NodeFailed: i.NodeFailed, Metrics: i.Metrics,
		CreateIndex: i.CreateIndex, ModifyIndex: i.ModifyIndex,
	}
	if i.Maintenance != nil {
		out.Maintenance = &client.Maintenance{Reason: i.Maintenance.Reason, Since: unixTime(i.Maintenance.Since)}
	}
	if i.Drain != nil {
		out.Draining = &client.Draining{Deadline: unixTime(i.Drain.Deadline), Since: unixTime(i.Drain.Since)}
	}
	if full {
		for _, c := range checks {
			out.Checks = append(out.Checks, toCheck(c))
		}
		for _, t := range i.Transitions {
			out.Transitions = append(out.Transitions, client.Transition{
				Time: unixTime(t.Time), Check: t.Check, From: string(t.From), To: string(t.To), Output: t.Output,
			})
		}
	}
	return out
}

func toCheck(c *fsm.Check) client.Check {
	def := client.CheckDefinition{
		Name: c.Name, Type: string(c.Type), Method: c.Method, Header: c.Header,
		TLSSkipVerify: c.TLSSkipVerify, GRPCService: c.GRPCService,
		Interval: client.Duration(c.Interval), Timeout: client.Duration(c.Timeout),
		TTL:                     client.Duration(c.TTL),
		FailuresBeforeCritical:  c.FailuresBeforeCritical,
		SuccessesBeforePassing:  c.SuccessesBeforePassing,
		InitialStatus:           string(c.InitialStatus),
		DeregisterCriticalAfter: client.Duration(c.DeregisterCriticalAfter),
	}
	switch c.Type {
	case fsm.CheckHTTP:
		def.HTTP = c.Target
	case fsm.CheckTCP:
		def.TCP = c.Target
	case fsm.CheckGRPC:
		def.GRPC = c.Target
	}
	out := client.Check{
		ID: c.ID, Instance: c.Instance, Service: c.Service, CheckDefinition: def,
		Status: string(c.Effective()), Output: c.Output, StatusSince: unixTime(c.StatusSince),
		Owner: c.Owner, Flapping: c.Flapping, CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	}
	if c.Flapping {
		// The status says what routing does; the results' own status is
		// beside it (issue 19: "passing" with flapping true read as healthy).
		out.FlapUntil = optTime(c.FlapUntil)
		out.ResultStatus = string(c.Status)
	}
	return out
}

// encodeListed is the cached encoding of an instance in discovery lists.
func encodeListed(i *fsm.Instance) []byte {
	b, err := json.Marshal(toInstance(i, nil, false))
	if err != nil {
		panic(err) // only plain types: cannot fail
	}
	return b
}

// writeInstances writes a JSON array of instances from their cached
// encodings: each version of an instance is encoded once, however many
// times it is read.
func writeInstances(w http.ResponseWriter, insts []*fsm.Instance) {
	bp := listBufs.Get().(*[]byte)
	buf := appendInstances((*bp)[:0], insts)
	writeBody(w, buf)
	// net/http has copied the body into its own buffers (or written it) when
	// Write returns, so the slice can serve the next list.
	if cap(buf) <= maxPooledList {
		*bp = buf
		listBufs.Put(bp)
	}
}

// encodeList is a whole discovery list's encoding, kept with the list
// (fsm.List.Encoded): the bytes writeInstances writes for it.
func encodeList(insts []*fsm.Instance) []byte { return appendInstances(nil, insts) }

// appendInstances appends the JSON array of insts, from each instance's
// cached encoding.
func appendInstances(buf []byte, insts []*fsm.Instance) []byte {
	size := 2
	for _, i := range insts {
		size += len(i.Encoded(encodeListed)) + 1
	}
	buf = slices.Grow(buf, size)
	buf = append(buf, '[')
	for n, i := range insts {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, i.Encoded(encodeListed)...)
	}
	return append(buf, ']')
}

// listBufs holds the buffers discovery lists are assembled in: a list read
// at a high rate allocated its whole size per read (~3 KB for 10 instances).
var listBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledList bounds the buffers kept: a rare huge list is not held.
const maxPooledList = 64 << 10

// writeBody writes a complete JSON body with its length: a body larger than
// net/http's 2 KB pre-chunking buffer would otherwise go out chunked (10
// instances are ~3 KB), which costs the chunk framing on both ends.
func writeBody(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h["Content-Type"] = valJSON // shared: header values are only read
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

var valJSON = []string{"application/json"}

// writeJSON writes v with status 200.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, err)
		return
	}
	writeBody(w, b)
}
