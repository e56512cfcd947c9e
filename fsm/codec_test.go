package fsm_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// update rewrites the golden files: go test ./fsm -run Golden -update. A
// package-level flag is the testing idiom for golden files; it exists only
// in the test binary.
var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenCommand is one command type with a request that sets every field.
type goldenCommand struct {
	name string
	typ  fsm.MessageType
	req  any // a pointer to the request
}

// goldenCommands lists every command type. A type added to fsm needs an
// entry here (TestGoldenCoversEveryType checks), and a golden file.
func goldenCommands() []goldenCommand {
	return []goldenCommand{
		{"register", fsm.RegisterType, &fsm.RegisterRequest{
			ID: "web-1", Service: "web", Address: "10.0.0.1", Port: 8080,
			Tags: []string{"primary", "v2"}, Meta: map[string]string{"zone": "a", "rack": "r1", "az": "eu-1"},
			Version: "2.1.0", Weight: 10, Node: "s1",
			Checks: []fsm.CheckDefinition{{
				Name: "http", Type: fsm.CheckHTTP, Target: "https://10.0.0.1:8443/health", Method: "GET",
				Header:        map[string][]string{"X-Probe": {"a", "b"}, "Authorization": {"Bearer t"}},
				TLSSkipVerify: true, GRPCService: "svc", Interval: 10_000_000_000, Timeout: 2_000_000_000, TTL: 30_000_000_000,
				FailuresBeforeCritical: 3, SuccessesBeforePassing: 2, InitialStatus: fsm.Warning,
				DeregisterCriticalAfter: 600_000_000_000,
			}},
			Time: 1_700_000_000_123_456_789,
		}},
		{"deregister", fsm.DeregisterType, &fsm.DeregisterRequest{
			Service: "web", ID: "web-1", IfIndex: 42, Time: 1_700_000_000_123_456_789,
		}},
		{"check_update", fsm.CheckUpdateType, &fsm.CheckUpdateRequest{
			Node: "s1",
			Updates: []fsm.CheckUpdate{
				{Check: "web-1:http", Status: fsm.Passing, Output: "200 OK", Flapping: true, FlapUntil: 1_700_000_100_000_000_000, FlapLevel: 2},
				{Check: "web-2:http", Status: fsm.Critical, Output: "connection refused"},
			},
			Time: 1_700_000_000_123_456_789,
		}},
		{"assign_checks", fsm.AssignChecksType, &fsm.AssignChecksRequest{
			Assignments: []fsm.Assignment{{Check: "web-1:http", Owner: "s2"}, {Check: "web-2:tcp", Owner: "s3"}},
		}},
		{"node_update", fsm.NodeUpdateType, &fsm.NodeUpdateRequest{
			Upserts: []fsm.NodeState{
				{Name: "s1", Address: "10.0.0.10:8751", Role: fsm.RoleServer, Status: fsm.NodeAlive},
				{Name: "s2", Address: "10.0.0.11:8751", Role: fsm.RoleServer, Status: fsm.NodeFailed},
			},
			Removes: []string{"s9"},
			Time:    1_700_000_000_123_456_789,
		}},
		{"maintenance", fsm.MaintenanceType, &fsm.MaintenanceRequest{
			Service: "web", ID: "web-1", Mode: fsm.ModeDrain, Reason: "kernel upgrade",
			Deadline: 1_700_000_600_000_000_000, Time: 1_700_000_000_123_456_789,
		}},
		{"metrics", fsm.MetricsType, &fsm.MetricsRequest{
			Updates: []fsm.InstanceMetrics{
				{Instance: "web-1", Metrics: map[string]float64{"rps": 12.5, "p99_ms": 40, "errors": 0.25}, Service: "web"},
			},
			Time: 1_700_000_000_123_456_789,
		}},
		{"token_set", fsm.TokenSetType, &fsm.TokenSetRequest{Token: fsm.Token{
			Accessor: "acc-1", SecretHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			Description: "deployer", Policy: "write", Prefixes: []string{"web", "api"},
			CreateIndex: 7, ModifyIndex: 9,
		}}},
		{"token_delete", fsm.TokenDeleteType, &fsm.TokenDeleteRequest{Accessor: "acc-1"}},
		{"catalog_register", fsm.CatalogRegisterType, &fsm.CatalogRegisterRequest{
			Node: "ext-db", Address: "10.0.0.5",
			TaggedAddresses: map[string]string{"lan": "10.0.0.5", "wan": "198.51.100.5"},
			Meta:            map[string]string{"external-node": "true"},
			Service: &fsm.RegisterRequest{
				ID: "db-1", Service: "db", Address: "10.0.0.5", Port: 5432, Tags: []string{"primary"},
				Weight: 1, Node: "ext-db", Time: 1_700_000_000_123_456_789,
			},
			Time: 1_700_000_000_123_456_789,
		}},
		{"catalog_deregister", fsm.CatalogDeregisterType, &fsm.CatalogDeregisterRequest{
			Node: "ext-db", Check: "db:db-1:service", Time: 1_700_000_000_123_456_789,
		}},
	}
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".hex") }

// readGolden returns the bytes of a golden file: hex, whitespace ignored.
func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(goldenPath(name))
	if err != nil {
		t.Fatalf("read golden file (generate it with -update): %v", err)
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(raw)), ""))
	if err != nil {
		t.Fatalf("golden file %s: %v", goldenPath(name), err)
	}
	return b
}

func writeGolden(t testing.TB, name string, b []byte) {
	t.Helper()
	var sb strings.Builder
	for len(b) > 0 {
		n := min(32, len(b))
		sb.WriteString(hex.EncodeToString(b[:n]))
		sb.WriteByte('\n')
		b = b[n:]
	}
	if err := os.MkdirAll(filepath.Dir(goldenPath(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenPath(name), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGolden pins the log format: the encoding of each command type must not
// change by accident, since every node must read every entry ever written.
// A deliberate change is a new command type, or an encoding that every
// version reads the same (a field left out when empty, which any decoder
// reads as zero): then the old bytes move to testdata/golden/legacy, where
// TestGoldenLegacyDecodes keeps them readable.
func TestGolden(t *testing.T) {
	for _, gc := range goldenCommands() {
		t.Run(gc.name+" encodes to its golden bytes", func(t *testing.T) {
			got, err := fsm.Encode(gc.typ, gc.req)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if *update {
				if len(got) == 0 || fsm.MessageType(got[0]) != gc.typ {
					t.Fatalf("not updating %s: Encode does not start with the type byte %#02x: % x", goldenPath(gc.name), uint8(gc.typ), got[:min(8, len(got))])
				}
				writeGolden(t, gc.name, got)
			}
			want := readGolden(t, gc.name)
			if !bytes.Equal(got, want) {
				t.Errorf("Encode(%s) =\n%s\nwant (%s)\n%s", gc.typ, hex.Dump(got), goldenPath(gc.name), hex.Dump(want))
			}
		})
		t.Run(gc.name+" golden bytes decode to the request", func(t *testing.T) {
			checkDecodes(t, readGolden(t, gc.name), gc, "golden bytes")
		})
	}
}

// TestGoldenLegacyDecodes reads the bytes that earlier releases wrote for a
// command whose encoding has since changed in a way every version reads: they
// must still decode to the same request, since nodes replay old log entries
// and snapshots never rewrite them.
func TestGoldenLegacyDecodes(t *testing.T) {
	byName := map[string]goldenCommand{}
	for _, gc := range goldenCommands() {
		byName[gc.name] = gc
	}
	for _, lg := range []struct{ file, command string }{
		// Until 2026-12-07 every CheckUpdate field was written, empty or not.
		{"legacy/check_update_full", "check_update"},
	} {
		t.Run(lg.file, func(t *testing.T) {
			gc := byName[lg.command]
			old := readGolden(t, lg.file)
			checkDecodes(t, old, gc, "legacy bytes")
			cur, err := fsm.Encode(gc.typ, gc.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(cur) >= len(old) {
				t.Errorf("the current encoding (%d bytes) is no smaller than the legacy one (%d)", len(cur), len(old))
			}
		})
	}
}

// TestGoldenCoversEveryType fails when a command type is added to fsm
// without a golden test.
func TestGoldenCoversEveryType(t *testing.T) {
	have := map[fsm.MessageType]bool{}
	for _, gc := range goldenCommands() {
		have[gc.typ] = true
	}
	for typ := fsm.MessageType(1); typ < fsm.SkipUnknown; typ++ {
		if strings.HasPrefix(typ.String(), "type-") {
			continue
		}
		if typ == fsm.GroupType {
			continue // a framing of other commands, not a msgpack body: TestGroupFramingRoundTripsAndFindsMembers
		}
		if !have[typ] {
			t.Errorf("command type %d (%s) has no golden test", uint8(typ), typ)
		}
	}
}

// TestEncodeStartsWithTheType checks the framing every FSM relies on: one
// type byte, then the msgpack body.
func TestEncodeStartsWithTheType(t *testing.T) {
	for _, gc := range goldenCommands() {
		t.Run(gc.name+" starts with its type byte and round-trips", func(t *testing.T) {
			b, err := fsm.Encode(gc.typ, gc.req)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(b) == 0 || fsm.MessageType(b[0]) != gc.typ {
				t.Fatalf("Encode(%s) starts % x, want type byte %#02x first", gc.typ, b[:min(8, len(b))], uint8(gc.typ))
			}
			checkDecodes(t, b, gc, "the round trip")
		})
	}
}

// checkDecodes decodes b and requires gc's type and request.
func checkDecodes(t *testing.T, b []byte, gc goldenCommand, what string) {
	t.Helper()
	out := reflect.New(reflect.TypeOf(gc.req).Elem())
	typ, err := fsm.Decode(b, out.Interface())
	if err != nil || typ != gc.typ {
		t.Fatalf("%s: Decode = %s, %v; want %s, nil", what, typ, err, gc.typ)
	}
	if !reflect.DeepEqual(out.Interface(), gc.req) {
		t.Errorf("%s decoded\n%+v\nwant\n%+v", what, out.Elem().Interface(), reflect.ValueOf(gc.req).Elem().Interface())
	}
}

// TestEncodedCommandsApply applies commands straight from fsm.Encode, as
// the cluster package proposes them, without fsmtest in between.
func TestEncodedCommandsApply(t *testing.T) {
	f := newFSM(t)
	reg, err := fsm.Encode(fsm.RegisterType, &fsm.RegisterRequest{ID: "web-1", Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var res any
	noPanic(t, func() { res = f.Apply(fsmtest.Log(1, reg)) })
	if r, ok := res.(fsm.ApplyResult); !ok || r.Err != nil {
		t.Fatalf("Apply = %#v", res)
	}
	if _, inst, _ := f.Store().Instance(nil, "web", "web-1"); inst == nil {
		t.Fatalf("a registration made with fsm.Encode was accepted but not stored")
	}
	dereg, err := fsm.Encode(fsm.DeregisterType, &fsm.DeregisterRequest{Service: "web", ID: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	noPanic(t, func() { res = f.Apply(fsmtest.Log(2, dereg)) })
	if _, inst, _ := f.Store().Instance(nil, "web", "web-1"); inst != nil {
		t.Fatalf("a deregistration made with fsm.Encode did not remove the instance")
	}
}

func TestEncodeIsDeterministic(t *testing.T) {
	req := &fsm.RegisterRequest{ID: "x", Service: "y", Meta: map[string]string{}}
	for i := range 50 {
		req.Meta[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	first, err := fsm.Encode(fsm.RegisterType, req)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		// Go randomises map iteration; the canonical encoding must not.
		if b, _ := fsm.Encode(fsm.RegisterType, req); !bytes.Equal(b, first) {
			t.Fatalf("two encodings of one request differ")
		}
	}
}

func TestDecode(t *testing.T) {
	t.Run("an empty buffer is ErrShortCommand", func(t *testing.T) {
		var r fsm.RegisterRequest
		if _, err := fsm.Decode(nil, &r); !errors.Is(err, fsm.ErrShortCommand) {
			t.Errorf("Decode(nil) = %v, want ErrShortCommand", err)
		}
	})
	t.Run("a bad body is an error naming the type", func(t *testing.T) {
		var r fsm.RegisterRequest
		typ, err := fsm.Decode([]byte{byte(fsm.DeregisterType), 0xc1}, &r)
		if err == nil || typ != fsm.DeregisterType || !strings.Contains(err.Error(), "deregister") {
			t.Errorf("Decode = %s, %v; want deregister and an error naming it", typ, err)
		}
	})
}

func TestMessageTypeString(t *testing.T) {
	for typ, want := range map[fsm.MessageType]string{
		fsm.RegisterType:                      "register",
		fsm.TokenDeleteType:                   "token-delete",
		fsm.CheckUpdateType | fsm.SkipUnknown: "check-update",
		fsm.MessageType(0x7f):                 "type-127",
		fsm.MessageType(0xff):                 "type-255",
	} {
		if got := typ.String(); got != want {
			t.Errorf("MessageType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

func TestRejectErrorCodes(t *testing.T) {
	for code, kind := range map[string]error{
		"not_found": fsm.ErrNotFound,
		"conflict":  fsm.ErrConflict,
		"not_owner": fsm.ErrNotOwner,
		"invalid":   fsm.ErrInvalid,
	} {
		t.Run(code+" survives the trip between nodes", func(t *testing.T) {
			e := fsm.RejectFromCode(code, "msg")
			if !errors.Is(e, kind) || e.Code() != code || e.Error() != "msg" {
				t.Errorf("RejectFromCode(%q) = %v (code %s), want kind %v", code, e, e.Code(), kind)
			}
		})
	}
	t.Run("an unknown code becomes invalid", func(t *testing.T) {
		if e := fsm.RejectFromCode("martian", "msg"); !errors.Is(e, fsm.ErrInvalid) || e.Code() != "invalid" {
			t.Errorf("got %v (code %s)", e, e.Code())
		}
	})
}
