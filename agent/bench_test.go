package agent_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// BenchmarkRegister commits registrations through all three nodes of an
// in-process cluster from 64 concurrent clients (the project's write target
// is measured on separate processes by `make bench`; this benchmark is for
// profiling the write path: go test -run=^$ -bench=Register -cpuprofile cpu.out ./cmd).
func BenchmarkRegister(b *testing.B) {
	c := agenttest.New(b, 3)
	c.WaitForVoters(3)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	defer hc.CloseIdleConnections()
	var n atomic.Int64
	b.SetParallelism(32) // 2 cores x 32 = 64 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body := fmt.Sprintf(`{"address":"10.0.%d.%d","port":8080,"tags":["v1"],"meta":{"zone":"a"},"version":"1.0.0"}`, (i>>8)&255, i&255)
			url := fmt.Sprintf("http://%s/v1/services/svc-%d/instances/i-%d", c.Node(int(i%3)).HTTPAddr(), i%50, i)
			// A 503 (an election under load) is retried: writes are idempotent.
			var resp *http.Response
			for try := 0; ; try++ {
				req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader([]byte(body)))
				req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
				var err error
				if resp, err = hc.Do(req); err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable || try == 20 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkDiscover reads a 10-instance service from one node.
func BenchmarkDiscover(b *testing.B) {
	c := agenttest.New(b, 3)
	c.WaitForVoters(3)
	var idx uint64
	for i := 0; i < 10; i++ {
		body := fmt.Sprintf(`{"address":"10.9.0.%d","port":8080,"tags":["v1"],"meta":{"zone":"a"},"version":"1.2.%d"}`, i, i)
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/v1/services/read/instances/r-%d", c.Node(0).HTTPAddr(), i), bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		idx++
	}
	url := fmt.Sprintf("http://%s/v1/services/read/instances", c.Node(1).HTTPAddr())
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
