package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

func TestCheckTargetsAreValidatedAndTheDenyListApplies(t *testing.T) {
	deny := []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fd00:ec2::/32")}
	cases := []struct {
		name  string
		check client.CheckDefinition
		field string // "" when valid
	}{
		{"an http URL with host and port is valid", client.CheckDefinition{HTTP: "http://10.0.0.1:8080/health"}, ""},
		{"an https URL with a host name and a port is valid", client.CheckDefinition{HTTP: "https://web.internal:8443/health"}, ""},
		{"a URL without a port is refused", client.CheckDefinition{HTTP: "https://web.internal/health"}, "checks[0].http"},
		{"a non-http scheme is refused", client.CheckDefinition{HTTP: "file:///etc/passwd"}, "checks[0].http"},
		{"a URL without a host is refused", client.CheckDefinition{HTTP: "http:///health"}, "checks[0].http"},
		{"user info in the URL is refused", client.CheckDefinition{HTTP: "http://u:p@10.0.0.1/"}, "checks[0].http"},
		{"the metadata address is denied", client.CheckDefinition{HTTP: "http://169.254.169.254/latest/meta-data/"}, "checks[0].http"},
		{"the metadata address mapped into IPv6 is denied", client.CheckDefinition{HTTP: "http://[::ffff:169.254.169.254]/"}, "checks[0].http"},
		{"an IPv6 address in a denied range is denied", client.CheckDefinition{HTTP: "http://[fd00:ec2::254]/"}, "checks[0].http"},
		{"a TCP target in a denied range is denied", client.CheckDefinition{TCP: "169.254.1.1:22"}, "checks[0].tcp"},
		{"a gRPC target in a denied range is denied", client.CheckDefinition{GRPC: "169.254.1.1:50051"}, "checks[0].grpc"},
		{"a gRPC target without a port is refused", client.CheckDefinition{GRPC: "10.0.0.1"}, "checks[0].grpc"},
		{"a TCP target with port 0 is refused", client.CheckDefinition{TCP: "10.0.0.1:0"}, "checks[0].tcp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildRegister("web", "w1", &client.Registration{Address: "10.0.0.1", Port: 80, Checks: []client.CheckDefinition{tc.check}}, time.Now(), registerPolicy{deny: deny})
			var ve *ValidationError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && (!errors.As(err, &ve) || ve.Field != tc.field):
				t.Fatalf("got %v, want a validation error on %s", err, tc.field)
			}
		})
	}
}

type fakeTTL struct {
	id      string
	status  fsm.Health
	output  string
	metrics map[string]float64
	err     error
}

func (f *fakeTTL) ReportTTL(ctx context.Context, id string, status fsm.Health, output string, metrics map[string]float64) (uint64, error) {
	f.id, f.status, f.output, f.metrics = id, status, output, metrics
	return 7, f.err
}

// verbOf returns the last segment of a TTL route.
func verbOf(path string) string { return path[strings.LastIndex(path, "/")+1:] }

func TestTTLRoutes(t *testing.T) {
	cases := []struct {
		name, path, body string
		err              error
		status           int
		want             fsm.Health
	}{
		{"pass without a body", "/v1/checks/web:web-1:ttl/pass", "", nil, 200, fsm.Passing},
		{"warn with output and metrics", "/v1/checks/web:web-1:ttl/warn", `{"output":"slow","metrics":{"load":0.4,"queue":12}}`, nil, 200, fsm.Warning},
		{"fail", "/v1/checks/web:web-1:ttl/fail", `{"output":"down"}`, nil, 200, fsm.Critical},
		{"an id without a check name is a 400", "/v1/checks/web-1/pass", "", nil, 400, ""},
		{"an id of the old form INSTANCE:NAME is a 400", "/v1/checks/web-1:ttl/pass", "", nil, 400, ""},
		{"an id with four parts is a 400", "/v1/checks/web:web-1:ttl:x/pass", "", nil, 400, ""},
		{"an id with an empty instance is a 400", "/v1/checks/web::ttl/pass", "", nil, 400, ""},
		{"an id whose service is not a service name is a 400", "/v1/checks/Web:web-1:ttl/pass", "", nil, 400, ""},
		{"an id whose service is too long is a 400", "/v1/checks/" + strings.Repeat("s", MaxServiceLen+1) + ":web-1:ttl/pass", "", nil, 400, ""},
		{"an id of the longest parts is taken", "/v1/checks/" + strings.Repeat("s", MaxServiceLen) + ":" + strings.Repeat("i", MaxIDLen) + ":" + strings.Repeat("n", MaxCheckNameLen) + "/pass", "", nil, 200, fsm.Passing},
		{"a metric name starting with a digit is a 400", "/v1/checks/web:web-1:ttl/pass", `{"metrics":{"1x":1}}`, nil, 400, ""},
		{"a non-numeric metric is a 400", "/v1/checks/web:web-1:ttl/pass", `{"metrics":{"x":"1"}}`, nil, 400, ""},
		{"an unknown field is a 400", "/v1/checks/web:web-1:ttl/pass", `{"note":"x"}`, nil, 400, ""},
		{"an unknown check is a 404", "/v1/checks/web:web-1:ttl/pass", "", &fsm.RejectError{Kind: fsm.ErrNotFound, Msg: "no"}, 404, fsm.Passing},
		{"an unknown verb is a 404", "/v1/checks/web:web-1:ttl/maybe", "", nil, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTTL{err: tc.err}
			cfg := DefaultConfig()
			cfg.TTL = f
			s := New(cfg, fsm.NewStore(), nil)
			req := httptest.NewRequest(http.MethodPut, tc.path, strings.NewReader(tc.body))
			req.Host = "localhost"
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.status || f.status != tc.want {
				t.Fatalf("got %d %s (reported %q), want %d (%q)", rec.Code, rec.Body, f.status, tc.status, tc.want)
			}
			if tc.status == 200 && (!strings.HasSuffix(tc.path, "/"+f.id+"/"+verbOf(tc.path)) || rec.Header().Get(HeaderIndex) != "7") {
				t.Fatalf("reported %q, index header %q", f.id, rec.Header().Get(HeaderIndex))
			}
			if strings.Contains(tc.body, "queue") && f.metrics["queue"] != 12 {
				t.Fatalf("metrics %v", f.metrics)
			}
		})
	}
}

func TestMaintenanceBodies(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name  string
		body  client.MaintenanceRequest
		field string
	}{
		{"maintenance with a reason", client.MaintenanceRequest{Mode: "maintenance", Reason: "upgrade"}, ""},
		{"drain with a deadline", client.MaintenanceRequest{Mode: "drain", Deadline: client.Duration(time.Minute)}, ""},
		{"none", client.MaintenanceRequest{Mode: "none"}, ""},
		{"an unknown mode", client.MaintenanceRequest{Mode: "off"}, "mode"},
		{"drain without a deadline", client.MaintenanceRequest{Mode: "drain"}, "deadline"},
		{"drain for more than a day", client.MaintenanceRequest{Mode: "drain", Deadline: client.Duration(25 * time.Hour)}, "deadline"},
		{"a deadline without drain", client.MaintenanceRequest{Mode: "maintenance", Deadline: client.Duration(time.Minute)}, "deadline"},
		{"a reason with a control character", client.MaintenanceRequest{Mode: "maintenance", Reason: "a\x00b"}, "reason"},
		{"a reason with none", client.MaintenanceRequest{Mode: "none", Reason: "x"}, "reason"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := buildMaintenance("web", "w1", &tc.body, now)
			var ve *ValidationError
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.body.Mode == "drain" && req.Deadline != now.Add(time.Minute).UnixNano() {
					t.Fatalf("deadline %d", req.Deadline)
				}
				return
			}
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("got %v, want a validation error on %s", err, tc.field)
			}
		})
	}
}
