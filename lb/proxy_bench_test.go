package lb

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyPath sends keep-alive GETs through the balancer to one
// backend, all in this process (client, balancer and backend share the
// CPUs): use it for allocations per request and CPU profiles of the proxy
// path, not for rates; `make bench-lb` measures those against nginx.
//
//	go test ./lb -run '^$' -bench ProxyPath -benchmem -memprofile /tmp/lb.mem
func BenchmarkProxyPath(b *testing.B) {
	be := startBackend(b, "b1")
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	bal, base := startBalancer(b, cat, nil)
	waitTable(b, bal, "web", idx)
	c := newClient(b)
	url := base + "/web/"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}
