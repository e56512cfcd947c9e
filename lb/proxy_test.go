package lb

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// threeBackends starts three backends registered as service web.
func threeBackends(t *testing.T, cat *memCatalog, weights ...int) ([]*testBackend, uint64) {
	t.Helper()
	var bes []*testBackend
	var recs []Backend
	for i := 0; i < 3; i++ {
		tb := startBackend(t, fmt.Sprintf("web-%d", i+1))
		rec := tb.backend()
		if len(weights) > i {
			rec.Weight = weights[i]
		}
		bes = append(bes, tb)
		recs = append(recs, rec)
	}
	return bes, cat.Set("web", recs...)
}

func TestStrategiesDistributeOverRealBackends(t *testing.T) {
	t.Run("round-robin is exact", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		b, url := startBalancer(t, cat, nil)
		waitTable(t, b, "web", idx)
		c := newClient(t)
		for i := 0; i < 300; i++ {
			if code, _, _ := get(t, c, url+"/web/"); code != 200 {
				t.Fatalf("status %d", code)
			}
		}
		for _, be := range bes {
			if n := be.hits.Load(); n != 100 {
				t.Fatalf("%s got %d of 300 requests, want exactly 100", be.name, n)
			}
		}
	})
	t.Run("weighted follows the registered weights", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat, 1, 2, 5)
		b, url := startBalancer(t, cat, func(c *Config) { c.Strategy = Weighted })
		waitTable(t, b, "web", idx)
		c := newClient(t)
		for i := 0; i < 800; i++ {
			get(t, c, url+"/web/")
		}
		for i, want := range []int64{100, 200, 500} {
			if n := bes[i].hits.Load(); n < want*97/100 || n > want*103/100 {
				t.Fatalf("%s got %d of 800 requests, want %d±3%%", bes[i].name, n, want)
			}
		}
	})
	t.Run("random follows the weights within a few per cent", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat, 1, 1, 2)
		b, url := startBalancer(t, cat, func(c *Config) { c.Strategy = Random })
		waitTable(t, b, "web", idx)
		c := newClient(t)
		const n = 2000
		for i := 0; i < n; i++ {
			get(t, c, url+"/web/")
		}
		for i, want := range []float64{0.25, 0.25, 0.5} {
			if share := float64(bes[i].hits.Load()) / n; share < want-0.05 || share > want+0.05 {
				t.Fatalf("%s got %.3f of the requests, want %.2f±0.05", bes[i].name, share, want)
			}
		}
	})
	t.Run("least-requests prefers idle backends", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		// web-1 holds the first `held` requests it gets until the test
		// releases them, so it always has that many in flight, and answers
		// later ones at once. With `workers` clients, the other two never
		// have more than 2*(workers-held) in flight (a request each, plus
		// one whose count the proxy has not dropped yet), fewer than
		// web-1: least-requests must not send it anything more, however
		// slow the machine, bar picks racing web-1's first requests.
		const total, workers, held = 600, 8, 6
		release := make(chan struct{})
		var releaseOnce sync.Once
		free := func() { releaseOnce.Do(func() { close(release) }) }
		t.Cleanup(free)
		var holding atomic.Int64
		bes[0].handle(func(w http.ResponseWriter, r *http.Request) {
			if holding.Add(1) <= held {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			fmt.Fprint(w, "web-1")
		})
		b, url := startBalancer(t, cat, func(c *Config) { c.Strategy = LeastRequests })
		waitTable(t, b, "web", idx)
		c := newClient(t)
		var wg sync.WaitGroup
		var next atomic.Int64
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					resp, err := c.Get(url + "/web/")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		eventually(t, func() bool { return bes[0].hits.Load()+bes[1].hits.Load()+bes[2].hits.Load() >= total },
			"every request to reach a backend")
		free()
		wg.Wait()
		// Round-robin would send it a third (200).
		if n := bes[0].hits.Load(); n > workers {
			t.Fatalf("the busy backend got %d of %d requests, want at most %d", n, total, workers)
		}
		t.Logf("busy backend %d, idle ones %d and %d", bes[0].hits.Load(), bes[1].hits.Load(), bes[2].hits.Load())
	})
	for _, workers := range []int{1, 16} {
		t.Run(fmt.Sprintf("least-requests follows the weights with %d clients", workers), func(t *testing.T) {
			cat := newMemCatalog()
			bes, idx := threeBackends(t, cat, 1, 2, 3)
			b, url := startBalancer(t, cat, func(c *Config) { c.Strategy = LeastRequests })
			waitTable(t, b, "web", idx)
			c := newClient(t)
			const total = 1200
			var wg sync.WaitGroup
			var next atomic.Int64
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= total {
						resp, err := c.Get(url + "/web/")
						if err != nil {
							t.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							t.Errorf("status %d", resp.StatusCode)
							return
						}
					}
				}()
			}
			wg.Wait()
			for i, want := range []float64{1.0 / 6, 2.0 / 6, 3.0 / 6} {
				if share := float64(bes[i].hits.Load()) / total; share < want-0.06 || share > want+0.06 {
					t.Fatalf("%s got %.3f of the requests, want %.2f±0.06", bes[i].name, share, want)
				}
			}
		})
	}
	t.Run("hash keeps each key on one backend", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		b, url := startBalancer(t, cat, func(c *Config) {
			c.Strategy = Hash
			c.HashKey = HashKey{Source: "header", Name: "X-User"}
		})
		waitTable(t, b, "web", idx)
		c := newClient(t)
		owners := map[string]bool{}
		for u := 0; u < 30; u++ {
			user := fmt.Sprint("user-", u)
			_, first, _ := get(t, c, url+"/web/", "X-User", user)
			owners[first] = true
			for i := 0; i < 5; i++ {
				if _, got, _ := get(t, c, url+"/web/", "X-User", user); got != first {
					t.Fatalf("%s went to %s, then to %s", user, first, got)
				}
			}
		}
		if len(owners) != len(bes) {
			t.Fatalf("30 keys landed on %d backends", len(owners))
		}
	})
}

func TestRoutingByHostPathAndDeclaredPrefix(t *testing.T) {
	cat := newMemCatalog()
	echo := func(tb *testBackend) {
		tb.handle(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]string{
				"backend": tb.name, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host,
				"xff": r.Header.Get("X-Forwarded-For"), "xfh": r.Header.Get("X-Forwarded-Host"),
				"xfp": r.Header.Get("X-Forwarded-Proto"), "prefix": r.Header.Get("X-Forwarded-Prefix"),
			})
		})
	}
	web, api, shop, blog := startBackend(t, "web"), startBackend(t, "api"), startBackend(t, "shop"), startBackend(t, "blog")
	for _, tb := range []*testBackend{web, api, shop, blog} {
		echo(tb)
	}
	shopRec := shop.backend()
	shopRec.Meta = map[string]string{MetaRoutePrefix: "/store"}
	shopRec.Trusted = true // prefixes outside /SERVICE need the management token
	blogRec := blog.backend()
	blogRec.Meta = map[string]string{MetaRoutePrefix: "/news/", MetaRouteStrip: "true"}
	blogRec.Trusted = true
	cat.Set("web", web.backend())
	cat.Set("api", api.backend())
	cat.Set("shop", shopRec)
	last := cat.Set("blog", blogRec)
	b, url := startBalancer(t, cat, func(c *Config) { c.Domains = []string{"svc.example"} })
	for _, s := range []string{"web", "api", "shop", "blog"} {
		waitTable(t, b, s, 1)
	}
	waitTable(t, b, "blog", last)
	eventually(t, func() bool { return len(b.Status().Routes) == 2 }, "declared routes")
	c := newClient(t)
	cases := []struct {
		name, path, host     string
		backend, wantPath    string
		wantPrefix, wantHost string
	}{
		{"a host SERVICE.DOMAIN routes to the service, path untouched", "/web/x?q=1", "api.svc.example:8080", "api", "/web/x", "", "api.svc.example:8080"},
		{"a path /SERVICE/... routes there with the prefix stripped", "/api/v1/users?q=1", "other", "api", "/v1/users", "/api", "other"},
		{"the bare /SERVICE path becomes /", "/web", "other", "web", "/", "/web", "other"},
		{"a prefix declared in meta routes without stripping", "/store/cart", "other", "shop", "/store/cart", "", "other"},
		{"a declared prefix with route_strip is stripped", "/news/today", "other", "blog", "/today", "/news", "other"},
		{"a declared prefix itself routes", "/store", "other", "shop", "/store", "", "other"},
		{"a host with more labels than SERVICE.DOMAIN routes by path", "/web/x", "a.api.svc.example", "web", "/x", "/web", "a.api.svc.example"},
		{"the bare domain routes by path", "/web/x", "svc.example", "web", "/x", "/web", "svc.example"},
		{"a host ending in the domain without its dot routes by path", "/web/x", "apisvc.example", "web", "/x", "/web", "apisvc.example"},
		{"host routing ignores case and a final dot", "/web/x", "API.Svc.Example.", "api", "/web/x", "", "API.Svc.Example."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := get(t, c, url+tc.path, "Host", tc.host)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if got["backend"] != tc.backend || got["path"] != tc.wantPath || got["prefix"] != tc.wantPrefix || got["host"] != tc.wantHost {
				t.Fatalf("got %v, want backend %s path %s prefix %q host %s", got, tc.backend, tc.wantPath, tc.wantPrefix, tc.wantHost)
			}
			if got["query"] != "" && got["query"] != "q=1" {
				t.Fatalf("query %q lost", got["query"])
			}
			if got["xff"] != "127.0.0.1" || got["xfp"] != "http" || got["xfh"] != tc.host {
				t.Fatalf("forwarded headers %v", got)
			}
		})
	}
	t.Run("an unknown service is a 404 with a JSON body", func(t *testing.T) {
		code, body, hdr := get(t, c, url+"/nope/x", "Host", "nope.svc.example")
		var eb ErrorBody
		if code != 404 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &eb) != nil || eb.Code != CodeNoRoute {
			t.Fatalf("got %d %q", code, body)
		}
	})
}

func TestNoPassingInstanceIsA503WithAClearBody(t *testing.T) {
	cat := newMemCatalog()
	w := startBackend(t, "w")
	rec := w.backend()
	rec.Status = Warning
	idx := cat.Set("web", rec)
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	c := newClient(t)
	code, body, hdr := get(t, c, url+"/web/")
	var eb ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || code != 503 || eb.Code != CodeNoInstance || eb.Service != "web" ||
		!strings.Contains(eb.Error, "1 registered") || hdr.Get("Retry-After") == "" {
		t.Fatalf("got %d %q %v", code, body, hdr)
	}
	if w.hits.Load() != 0 {
		t.Fatal("a warning instance got traffic")
	}
	t.Run("unless falling back to warning instances is configured", func(t *testing.T) {
		b2, url2 := startBalancer(t, cat, func(c *Config) { c.FallbackToWarning = true })
		waitTable(t, b2, "web", idx)
		code, body, hdr := get(t, c, url2+"/web/")
		if code != 200 || body != "w" || hdr.Get(HeaderMode) != ModeWarning {
			t.Fatalf("got %d %q mode %q", code, body, hdr.Get(HeaderMode))
		}
	})
}

// hammer sends GETs from workers until stop is closed and counts results.
type hammer struct {
	ok, failed atomic.Int64
	errs       sync.Map
	wg         sync.WaitGroup
	stop       chan struct{}
}

func startHammer(t *testing.T, c *http.Client, url string, workers int, hdr ...string) *hammer {
	h := &hammer{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				resp, err := c.Do(req)
				if err != nil {
					h.failed.Add(1)
					h.errs.Store(err.Error(), true)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					h.failed.Add(1)
					h.errs.Store(fmt.Sprintf("%d %s %v", resp.StatusCode, body, err), true)
					continue
				}
				h.ok.Add(1)
			}
		}()
	}
	return h
}

func (h *hammer) finish(t *testing.T) {
	t.Helper()
	close(h.stop)
	h.wg.Wait()
	if n := h.failed.Load(); n > 0 {
		var errs []string
		h.errs.Range(func(k, _ any) bool { errs = append(errs, k.(string)); return len(errs) < 5 })
		t.Fatalf("%d of %d requests failed: %v", n, n+h.ok.Load(), errs)
	}
}

func TestBackendKilledMidTrafficCostsIdempotentRequestsNothing(t *testing.T) {
	cat := newMemCatalog()
	bes, idx := threeBackends(t, cat)
	// Slow answers make sure requests are in flight on the victim when it dies.
	for _, tb := range bes {
		name := tb.name
		tb.handle(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond)
			fmt.Fprint(w, name)
		})
	}
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	h := startHammer(t, newClient(t), url+"/web/", 8)
	eventually(t, func() bool { return bes[1].hits.Load() > 50 }, "traffic on the victim")
	bes[1].kill()
	killedAt := h.ok.Load()
	eventually(t, func() bool { return h.ok.Load() > killedAt+500 }, "500 more requests after the kill")
	var victim InstanceStatus
	for _, in := range b.Status().Services[0].Instances {
		if in.ID == "web-2" {
			victim = in
		}
	}
	if !victim.Ejected {
		t.Errorf("the dead backend is not ejected: %+v", victim)
	}
	// The registry notices (here: deregistration) and the table drops it.
	idx = cat.Set("web", bes[0].backend(), bes[2].backend())
	waitTable(t, b, "web", idx)
	eventually(t, func() bool { return h.ok.Load() > killedAt+700 }, "more requests")
	h.finish(t)
	if got := b.Table("web").Routed(); len(got) != 2 {
		t.Fatalf("routed %v after deregistration", got)
	}
	t.Logf("%d requests, none failed; victim: %d failures, %d ejections; %d retries",
		h.ok.Load(), victim.Failures, victim.Ejections, b.Status().Services[0].Retries)
}

func TestRetries(t *testing.T) {
	t.Run("idempotent requests are retried on 502, 503 and 504", func(t *testing.T) {
		for _, status := range []int{502, 503, 504} {
			cat := newMemCatalog()
			bes, idx := threeBackends(t, cat)
			bes[0].handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) })
			b, url := startBalancer(t, cat, func(c *Config) { c.EjectAfter = 0 })
			waitTable(t, b, "web", idx)
			c := newClient(t)
			for i := 0; i < 30; i++ {
				if code, body, _ := get(t, c, url+"/web/"); code != 200 {
					t.Fatalf("status %d %q: not retried on %d", code, body, status)
				}
			}
			if bes[0].hits.Load() == 0 {
				t.Fatal("the failing backend was never tried: the test proves nothing")
			}
		}
	})
	t.Run("a POST is not retried once it reached an instance", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		for _, tb := range bes {
			tb.handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
		}
		b, url := startBalancer(t, cat, nil)
		waitTable(t, b, "web", idx)
		resp, err := newClient(t).Post(url+"/web/", "text/plain", strings.NewReader("order-1"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || bes[0].hits.Load()+bes[1].hits.Load()+bes[2].hits.Load() != 1 {
			t.Fatalf("status %d after %d attempts, want 503 after 1", resp.StatusCode, bes[0].hits.Load()+bes[1].hits.Load()+bes[2].hits.Load())
		}
	})
	t.Run("a POST that could not connect goes to another instance with its body", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		var bodies sync.Map
		for _, tb := range bes {
			name := tb.name
			tb.handle(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				bodies.Store(string(body), name)
				fmt.Fprint(w, name)
			})
		}
		bes[0].kill()
		bes[1].kill()
		b, url := startBalancer(t, cat, func(c *Config) { c.EjectAfter = 0 })
		waitTable(t, b, "web", idx)
		c := newClient(t)
		for i := 0; i < 20; i++ {
			payload := fmt.Sprintf("order-%d-%s", i, strings.Repeat("x", 1000))
			resp, err := c.Post(url+"/web/", "text/plain", strings.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(got) != "web-3" {
				t.Fatalf("POST %d: %d %q", i, resp.StatusCode, got)
			}
			if who, ok := bodies.Load(payload); !ok || who != "web-3" {
				t.Fatalf("POST %d: body did not arrive whole", i)
			}
		}
	})
	t.Run("a PUT with a body is replayed after an error status", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		var got sync.Map
		for i, tb := range bes {
			name := tb.name
			tb.handle(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if i < 2 {
					w.WriteHeader(502)
					return
				}
				got.Store(string(body), name)
			})
		}
		b, url := startBalancer(t, cat, func(c *Config) { c.EjectAfter = 0 })
		waitTable(t, b, "web", idx)
		c := newClient(t)
		for i := 0; i < 10; i++ {
			payload := bytes.Repeat([]byte{byte('a' + i)}, 5000)
			req, _ := http.NewRequest(http.MethodPut, url+"/web/", bytes.NewReader(payload))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if _, ok := got.Load(string(payload)); resp.StatusCode != 200 || !ok {
				t.Fatalf("PUT %d: status %d, body arrived: %v", i, resp.StatusCode, ok)
			}
		}
	})
	t.Run("the budget bounds retries", func(t *testing.T) {
		cat := newMemCatalog()
		bes, idx := threeBackends(t, cat)
		for _, tb := range bes {
			tb.handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
		}
		b, url := startBalancer(t, cat, func(c *Config) {
			c.EjectAfter, c.RetryBudgetRatio, c.RetryBudgetMinPerSecond = 0, 0, 0.1
		})
		waitTable(t, b, "web", idx)
		c := newClient(t)
		for i := 0; i < 100; i++ {
			get(t, c, url+"/web/")
		}
		st := b.Status().Services[0]
		attempts := bes[0].hits.Load() + bes[1].hits.Load() + bes[2].hits.Load()
		if st.Retries > 12 || attempts > 112 || st.RetryBudgetExhausted == 0 {
			t.Fatalf("%d retries (%d attempts, %d refused) for 100 requests: budget not enforced", st.Retries, attempts, st.RetryBudgetExhausted)
		}
	})
}

func TestDrainingInstanceFinishesInFlightRequestsAndGetsNoNewOnes(t *testing.T) {
	for _, how := range []string{"draining", "deregistered"} {
		t.Run("an instance "+how, func(t *testing.T) {
			cat := newMemCatalog()
			bes, idx := threeBackends(t, cat)
			started, release := make(chan struct{}, 1), make(chan struct{})
			bes[0].handle(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("slow") != "" {
					started <- struct{}{}
					<-release
				}
				fmt.Fprint(w, "web-1")
			})
			b, url := startBalancer(t, cat, nil)
			waitTable(t, b, "web", idx)
			c := newClient(t)
			// Round-robin: the first request goes to web-1 (ordered by ID).
			type result struct {
				code int
				body string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := c.Get(url + "/web/?slow=1")
				if err != nil {
					res <- result{err: err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				res <- result{resp.StatusCode, string(body), err}
			}()
			<-started
			if how == "draining" {
				idx = cat.Update("web", "web-1", func(b *Backend) { b.Draining = true })
			} else {
				idx = cat.Set("web", bes[1].backend(), bes[2].backend())
			}
			waitTable(t, b, "web", idx)
			before := bes[0].hits.Load()
			for i := 0; i < 50; i++ {
				if code, body, _ := get(t, c, url+"/web/"); code != 200 || body == "web-1" {
					t.Fatalf("new request answered %d by %q", code, body)
				}
			}
			if bes[0].hits.Load() != before {
				t.Fatal("the leaving instance got new requests")
			}
			close(release)
			if r := <-res; r.err != nil || r.code != 200 || r.body != "web-1" {
				t.Fatalf("in-flight request: %d %q %v", r.code, r.body, r.err)
			}
		})
	}
}

func TestRegistryUnreachableKeepsTheLastTable(t *testing.T) {
	cat := newMemCatalog()
	bes, idx := threeBackends(t, cat)
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	c := newClient(t)
	cat.SetDown(true)
	eventually(t, func() bool { s := b.Status(); return !s.Registry.Connected && !s.Services[0].Registry.Connected }, "status to show the registry unreachable")
	for i := 0; i < 30; i++ {
		if code, _, _ := get(t, c, url+"/web/"); code != 200 {
			t.Fatalf("status %d without a registry", code)
		}
	}
	adm := httptest.NewServer(b.AdminHandler())
	defer adm.Close()
	_, metrics, _ := get(t, c, adm.URL+"/metrics")
	if !strings.Contains(metrics, `beacon_lb_service_registry_connected{service="web"} 0`) {
		t.Fatalf("metrics do not say the registry is unreachable:\n%s", metrics)
	}
	st := b.Status().Services[0]
	if st.Registry.LastError == "" || st.Registry.ErrorSince == nil || st.Routed != 3 {
		t.Fatalf("status %+v", st)
	}
	cat.SetDown(false)
	idx = cat.Set("web", bes[0].backend())
	waitTable(t, b, "web", idx)
	if !b.Status().Services[0].Registry.Connected {
		t.Fatal("still disconnected after the registry came back")
	}
}

// A registry that comes back is reported connected as soon as it answers,
// not when its next change (or a wait's end) lets a blocking read return:
// QA saw "disconnected" for 25 s after the restarted cluster had a leader.
func TestRegistryBackWithoutAChangeIsReportedAtOnce(t *testing.T) {
	cat := newMemCatalog()
	_, idx := threeBackends(t, cat)
	b, _ := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	cat.SetDown(true)
	eventually(t, func() bool { s := b.Status(); return !s.Registry.Connected && !s.Services[0].Registry.Connected }, "status to show the registry unreachable")
	reads := cat.reads.Load()
	// Failed reads go on (with back-off): let some start after this point,
	// so no blocking read is left over from before the outage.
	eventually(t, func() bool { return cat.reads.Load() > reads+2 }, "reads to be retried")
	cat.SetDown(false) // nothing changes in the catalog
	eventually(t, func() bool { s := b.Status(); return s.Registry.Connected && s.Services[0].Registry.Connected },
		"status to show the registry reachable again")
	if got := b.Table("web").Index(); got != idx {
		t.Fatalf("table index %d, want %d", got, idx)
	}
}

func TestWebSocketUpgradesPassThrough(t *testing.T) {
	cat := newMemCatalog()
	ws := startBackend(t, "ws")
	ws.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		// Echo lines back, upper-cased, until the client closes.
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(strings.ToUpper(line))
			brw.Flush()
		}
	})
	idx := cat.Set("chat", ws.backend())
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "chat", idx)
	conn, br := rawUpgrade(t, strings.TrimPrefix(url, "http://"), "/chat/socket", "lb")
	defer conn.Close()
	for _, msg := range []string{"hello\n", "again\n"} {
		conn.Write([]byte(msg))
		got, err := br.ReadString('\n')
		if err != nil || got != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
	}
	if n := b.Status().Services[0].Instances[0].InFlight; n != 1 {
		t.Fatalf("an open WebSocket counts %d in flight, want 1", n)
	}
	conn.Close()
	eventually(t, func() bool { return b.Status().Services[0].Instances[0].InFlight == 0 }, "the closed WebSocket to leave the in-flight count")
}

func TestClientsMaySpeakHTTP2InCleartext(t *testing.T) {
	cat := newMemCatalog()
	tb := startBackend(t, "web-1")
	idx := cat.Set("web", tb.backend())
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url + "/web/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "web-1" {
		t.Fatalf("got %s %d %q, want HTTP/2 200 web-1", resp.Proto, resp.StatusCode, body)
	}
}

func TestPanicModeIsVisibleInResponses(t *testing.T) {
	cat := newMemCatalog()
	bes, _ := threeBackends(t, cat)
	recs := []Backend{bes[0].backend(), bes[1].backend(), bes[2].backend()}
	recs[1].Status, recs[2].Status = Critical, Critical
	idx := cat.Set("web", recs...)
	b, url := startBalancer(t, cat, func(c *Config) { c.PanicThreshold = 0.5 })
	waitTable(t, b, "web", idx)
	c := newClient(t)
	for i := 0; i < 30; i++ {
		if code, _, hdr := get(t, c, url+"/web/"); code != 200 || hdr.Get(HeaderPanic) != "true" {
			t.Fatalf("status %d panic header %q", code, hdr.Get(HeaderPanic))
		}
	}
	if bes[1].hits.Load() == 0 || bes[2].hits.Load() == 0 {
		t.Fatal("panic mode did not spread traffic to the critical instances")
	}
	recs[1].Status = Passing
	idx = cat.Set("web", recs...)
	waitTable(t, b, "web", idx)
	before := bes[2].hits.Load()
	for i := 0; i < 30; i++ {
		if _, _, hdr := get(t, c, url+"/web/"); hdr.Get(HeaderPanic) != "" {
			t.Fatal("still in panic with 2 of 3 passing")
		}
	}
	if bes[2].hits.Load() != before {
		t.Fatal("the critical instance got traffic after panic mode ended")
	}
}

func TestShutdownLetsRequestsInFlightFinish(t *testing.T) {
	cat := newMemCatalog()
	tb := startBackend(t, "web-1")
	started, release := make(chan struct{}), make(chan struct{})
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "done")
	})
	idx := cat.Set("web", tb.backend())
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	c := newClient(t)
	res := make(chan string, 1)
	go func() {
		resp, err := c.Get(url + "/web/")
		if err != nil {
			res <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(body)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- b.Shutdown(context.Background()) }()
	eventually(t, func() bool { return b.Status().ShuttingDown }, "shutdown to start")
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if got := <-res; got != "done" {
		t.Fatalf("in-flight request got %q", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestAdminStatusShowsEachTable(t *testing.T) {
	cat := newMemCatalog()
	bes, idx := threeBackends(t, cat, 1, 2, 3)
	b, url := startBalancer(t, cat, func(c *Config) {
		c.Strategy = Weighted
		c.Strategies = map[string]Strategy{"api": Hash}
	})
	waitTable(t, b, "web", idx)
	c := newClient(t)
	get(t, c, url+"/web/")
	adm := httptest.NewServer(b.AdminHandler())
	defer adm.Close()
	code, body, _ := get(t, c, adm.URL+"/lb/status?service=web")
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Services) != 1 {
		t.Fatalf("status %d %s", code, body)
	}
	s := st.Services[0]
	if s.Strategy != Weighted || s.Index != idx || !s.Loaded || s.Mode != ModeNormal || len(s.Instances) != 3 || !s.Registry.Connected {
		t.Fatalf("service status %+v", s)
	}
	for i, in := range s.Instances {
		if in.ID != bes[i].name || in.Weight != i+1 || in.EffectiveWeight != float64(i+1) || !in.Routed || in.Status != Passing {
			t.Fatalf("instance status %+v", in)
		}
	}
	for _, want := range []string{`"in_flight"`, `"ejected"`, `"effective_weight"`, `"registry"`, `"requests": 1`} {
		if !strings.Contains(body, want) {
			t.Fatalf("status lacks %s:\n%s", want, body)
		}
	}
	if code, _, _ := get(t, c, adm.URL+"/lb/status?service=nope"); code != 404 {
		t.Fatalf("unknown service status: %d", code)
	}
	if code, _, _ := get(t, c, adm.URL+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
}

// A backend answering 500 is ejected by default (Envoy's consecutive_5xx),
// but a 500 is not retried: the request may have done something.
func TestAnInstanceAnswering500IsEjectedButNotRetried(t *testing.T) {
	for _, on5xx := range []bool{true, false} {
		t.Run(fmt.Sprint("eject-on-5xx=", on5xx), func(t *testing.T) {
			cat := newMemCatalog()
			bes, idx := threeBackends(t, cat)
			bes[0].handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
			b, url := startBalancer(t, cat, func(c *Config) {
				c.EjectOn5xx, c.EjectBase, c.EjectMax = on5xx, time.Hour, time.Hour
			})
			waitTable(t, b, "web", idx)
			c := newClient(t)
			const total = 300
			failed := 0
			for i := 0; i < total; i++ {
				code, _, _ := get(t, c, url+"/web/")
				if code == 500 {
					failed++
				} else if code != 200 {
					t.Fatalf("status %d", code)
				}
			}
			if hits := bes[0].hits.Load(); int(hits) != failed {
				t.Fatalf("the failing backend got %d attempts and %d requests failed: a 500 was retried", hits, failed)
			}
			st := b.Status().Services[0]
			var ejections uint64
			for _, in := range st.Instances {
				if in.ID == "web-1" {
					ejections = in.Ejections
				}
			}
			if on5xx {
				// Round-robin sends it every third request; after 5 in a
				// row it is ejected (for an hour here).
				if failed != 5 || ejections != 1 {
					t.Fatalf("%d of %d requests failed, %d ejections; want 5 failures then an ejection", failed, total, ejections)
				}
			} else if failed != total/3 || ejections != 0 {
				t.Fatalf("%d of %d requests failed, %d ejections; want every third and none (500s do not count)", failed, total, ejections)
			}
		})
	}
}

// setForwarded must set what httputil's SetXForwarded sets (and the hop
// count and prefix), for every shape of client address and prior header.
func TestSetForwardedMatchesReverseProxy(t *testing.T) {
	for _, tc := range []struct {
		remote, host, prior, hops, strip string
		tls                              bool
	}{
		{remote: "192.0.2.1:5555", host: "shop.example"},
		{remote: "[2001:db8::1]:80", host: "shop.example:8080", tls: true, hops: "2", strip: "/web"},
		{remote: "192.0.2.1:5555", host: "h", prior: "198.51.100.7"},
		{remote: "no-port", host: "h", prior: "198.51.100.7", hops: "x"},
		{remote: "", host: ""},
	} {
		in := httptest.NewRequest(http.MethodGet, "http://"+tc.host+"/", nil)
		in.RemoteAddr, in.Host = tc.remote, tc.host
		if tc.hops != "" {
			in.Header.Set(HeaderHops, tc.hops)
		}
		if !tc.tls {
			in.TLS = nil
		} else {
			in.TLS = &tls.ConnectionState{}
		}
		want := http.Header{}
		got := http.Header{}
		if tc.prior != "" {
			want.Set("X-Forwarded-For", tc.prior)
			got.Set("X-Forwarded-For", tc.prior)
		}
		(&httputil.ProxyRequest{In: in, Out: &http.Request{Header: want}}).SetXForwarded()
		want.Set(HeaderHops, strconv.Itoa(hops(in)+1))
		if tc.strip != "" {
			want.Set("X-Forwarded-Prefix", tc.strip)
		}
		setForwarded(in, got, tc.strip)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v:\n got %v\nwant %v", tc, got, want)
		}
	}
}

// QA found that with rr-0 ejected, rr-1 got 48 % of the requests (its own
// turns and rr-0's) and rr-2, rr-3 26 % each: round-robin must share an
// ejected instance's turns among all the others.
func TestRoundRobinSharesEjectedInstancesTurnsEqually(t *testing.T) {
	for _, dead := range [][]int{{0}, {0, 1}} {
		t.Run(fmt.Sprintf("%d of 4 ejected", len(dead)), func(t *testing.T) {
			cat := newMemCatalog()
			var bes []*testBackend
			var recs []Backend
			for i := 0; i < 4; i++ {
				tb := startBackend(t, fmt.Sprintf("rr-%d", i))
				bes, recs = append(bes, tb), append(recs, tb.backend())
			}
			for _, i := range dead {
				bes[i].kill()
			}
			idx := cat.Set("web", recs...)
			b, url := startBalancer(t, cat, func(c *Config) {
				// Ejected for the whole test, however slow the machine.
				c.EjectAfter, c.EjectBase, c.EjectMax = 1, time.Hour, time.Hour
			})
			waitTable(t, b, "web", idx)
			c := newClient(t)
			ejected := func() bool {
				ins := b.Status().Services[0].Instances
				for _, i := range dead {
					if !ins[i].Ejected {
						return false
					}
				}
				return true
			}
			eventually(t, func() bool {
				if code, _, _ := get(t, c, url+"/web/"); code != 200 {
					t.Fatalf("status %d while warming up", code)
				}
				return ejected()
			}, "the dead instances to be ejected")
			before := make([]int64, 4)
			for i, tb := range bes {
				before[i] = tb.hits.Load()
			}
			const n = 120
			for r := 0; r < n; r++ {
				if code, _, _ := get(t, c, url+"/web/"); code != 200 {
					t.Fatalf("request %d: status %d", r, code)
				}
			}
			want := int64(n / (4 - len(dead)))
			var got []int64
			for i, tb := range bes {
				got = append(got, tb.hits.Load()-before[i])
			}
			for i, h := range got {
				if !slices.Contains(dead, i) && h != want {
					t.Fatalf("hits %v over %d requests, want exactly %d on each live instance", got, n, want)
				}
			}
		})
	}
}

// On shutdown the admin server stays up while the requests in flight
// drain, answering /readyz 503 and showing shutting_down, and closes last;
// the proxy's listener closes at once (docs/lb.md, "Draining and
// shutdown"). QA saw /readyz refuse connections from the first poll.
func TestShutdownKeepsTheAdminServerUpUntilTheDrainEnds(t *testing.T) {
	cat := newMemCatalog()
	tb := startBackend(t, "web-1")
	started, released := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-released
		fmt.Fprint(w, "done")
	})
	idx := cat.Set("web", tb.backend())
	cfg := DefaultConfig()
	cfg.AllowLoopback = true
	srv, err := NewServer(cfg, cat)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		release() // a test failing mid-drain must not hang its cleanup
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	waitTable(t, srv.Balancer(), "web", idx)
	c := newClient(t)
	res := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + srv.Addr() + "/web/")
		if err != nil {
			res <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(body)
	}()
	<-started

	// A new connection for every probe, as a kubelet makes.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	admin := func(path string) (int, string) {
		t.Helper()
		resp, err := probe.Get("http://" + srv.AdminAddr() + path)
		if err != nil {
			t.Fatalf("admin %s during the drain: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := admin("/readyz"); code != 200 {
		t.Fatalf("readyz before shutdown: %d %s", code, body)
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	eventually(t, func() bool {
		code, body := admin("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, CodeShuttingDown)
	}, "readyz to answer 503 shutting_down")
	eventually(t, func() bool {
		conn, err := net.Dial("tcp", srv.Addr())
		if err == nil {
			conn.Close()
		}
		return err != nil
	}, "the proxy's listener to close")
	// The drain goes on: the admin server still answers.
	code, body := admin("/lb/status")
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || !st.ShuttingDown {
		t.Fatalf("status during the drain: %d %s", code, body)
	}
	if code, _ := admin("/healthz"); code != 200 {
		t.Fatalf("healthz during the drain: %d", code)
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	release()
	if got := <-res; got != "done" {
		t.Fatalf("in-flight request got %q", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	// Then the admin server is gone too.
	if conn, err := net.Dial("tcp", srv.AdminAddr()); err == nil {
		conn.Close()
		t.Fatal("the admin listener still accepts after Shutdown returned")
	}
}
