package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// Port 1 on loopback addresses: nothing listens there, so each connection
// is refused at once.
var refusedAddrs = []string{"127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"}

func TestNoAgentReachableNamesEveryAddressTried(t *testing.T) {
	c, err := client.New(client.Config{Addresses: refusedAddrs, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"a read", func() error { _, _, err := c.Instances(context.Background(), "web", nil); return err }},
		{"a write", func() error {
			_, err := c.Register(context.Background(), "web", "w1", &client.Registration{Address: "10.0.0.1", Port: 1})
			return err
		}},
		{"a snapshot", func() error { _, err := c.SaveSnapshot(context.Background(), &strings.Builder{}, false); return err }},
	} {
		t.Run(call.name, func(t *testing.T) {
			err := call.do()
			var ue *client.UnreachableError
			if !errors.As(err, &ue) || len(ue.Addrs) != 3 {
				t.Fatalf("err = %v, want an UnreachableError naming 3 addresses", err)
			}
			for _, a := range refusedAddrs {
				if !strings.Contains(err.Error(), a+": connection refused") {
					t.Fatalf("%q does not say what happened at %s", err, a)
				}
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%v does not unwrap to ECONNREFUSED", err)
			}
		})
	}
}

func TestAServerThatIsNotAnAgentIsNamedAsSuch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"a web server's HTML 404", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server", "nginx/1.25")
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(404)
			fmt.Fprint(w, "<html><body><h1>404 Not Found</h1></body></html>")
		}},
		{"a Beacon load balancer's JSON 404", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":"no route for /v1/services","code":"no_route","service":""}`)
		}},
		{"a 200 from something else", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "[]")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			c, err := client.New(client.Config{Addresses: []string{srv.URL}, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Instances(context.Background(), "web", nil)
			var na *client.NotAgentError
			if !errors.As(err, &na) || !strings.Contains(err.Error(), "is not a Beacon agent API") {
				t.Fatalf("err = %v, want a NotAgentError", err)
			}
			if strings.Contains(err.Error(), "<html>") {
				t.Fatalf("the error shows the page: %v", err)
			}
		})
	}
}
