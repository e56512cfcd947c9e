package main

// The one-shot failover phases (issue 14): what a client that does not
// retry sees when it writes to a follower at the instant the leader stops
// answering.
//
//   oneshot          loopback: SIGSTOP of the leader's process (its sockets
//                    stay open; nothing answers), -trials times
//   oneshot-compose  the compose cluster: `docker kill` of the leader's
//                    container (its IP vanishes; packets are dropped), or
//                    with -compose-fault pause `docker pause` of it (the
//                    kernel still answers TCP, the process is frozen),
//                    -trials times. Needs docker, docker-compose and the
//                    image -compose-image (make image IMAGE=beacon:fo).
//
// Each trial starts from a settled cluster, sends one warm-up write through
// the follower (so that it holds a connection to the leader, and the
// one-shot write is sent on it and left without an answer: the hard case),
// stops the leader, and at once sends one registration to a follower with no
// retry: a plain HTTP request with a 15 s timeout, or with -oneshot-client
// cli one run of the real CLI (`beacon register`, -beacon) with BEACON_ADDR
// naming that follower alone, as a user would type it (its latency then
// includes starting the process). It reports the answer's status and
// latency, and the time until a new leader was elected, measured apart.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"
)

// oneShot is one trial's outcome.
type oneShot struct {
	status int
	code   string
	took   time.Duration
	// fromKill: from the moment the stop was issued to the answer (compose:
	// docker kill takes a while; loopback: the same as took).
	fromKill time.Duration
	elected  time.Duration
}

// oneShotWrite sends one registration to api and waits up to 15 s.
func oneShotWrite(api string, n int64) (int, string, time.Duration) {
	hc := &http.Client{Timeout: 15 * time.Second}
	method, url, body := registerReq(api, n)
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
	start := time.Now()
	resp, err := hc.Do(req)
	took := time.Since(start)
	if err != nil {
		return 0, "client: " + err.Error(), took
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	code := ""
	if resp.StatusCode != http.StatusOK {
		code = strings.TrimSpace(string(b))
	}
	return resp.StatusCode, code, took
}

// oneShotCLI runs one `beacon register` with BEACON_ADDR=api alone and no
// other BEACON_ settings; an exit status 0 counts as 200.
func oneShotCLI(api string, n int64) (int, string, time.Duration) {
	cmd := exec.Command(*beaconBin, "register", fmt.Sprintf("bench-%d", n%100), fmt.Sprintf("i-%d", n),
		"--address", fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255), "--port", fmt.Sprint(1024+n%60000),
		"--tag", "bench", "--tag", "v1")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BEACON_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "BEACON_ADDR="+api)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, "beacon register: " + err.Error() + ": " + strings.TrimSpace(string(out)), took
	}
	return http.StatusOK, "", took
}

// oneShotSend sends the trial's write with the client -oneshot-client names.
func oneShotSend(api string, n int64) (int, string, time.Duration) {
	if *oneshotClient == "cli" {
		return oneShotCLI(api, n)
	}
	return oneShotWrite(api, n)
}

// watchElection reports how long after t0 one of apis (other than skip)
// reports itself leader, polling every 5ms for up to 30 s.
func watchElection(apis []string, skip int, t0 time.Time) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	go func() {
		for time.Since(t0) < 30*time.Second {
			for i, a := range apis {
				if i == skip {
					continue
				}
				if st, err := getStatus(a); err == nil && st.State == "Leader" {
					ch <- time.Since(t0)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		ch <- 0
	}()
	return ch
}

func reportOneShots(name string, shots []oneShot) {
	var took, fromKill, elected, after []time.Duration
	ok := 0
	for _, s := range shots {
		took = append(took, s.took)
		fromKill = append(fromKill, s.fromKill)
		elected = append(elected, s.elected)
		if s.status == http.StatusOK {
			ok++
			after = append(after, s.fromKill-min(s.fromKill, s.elected))
		}
	}
	report(name+": answered 200", "%d of %d", ok, len(shots))
	report(name+": one-shot write latency", "p50 %s  p90 %s  max %s", pct(took, 50), pct(took, 90), pct(took, 100))
	report(name+": from the stop to the answer", "p50 %s  p90 %s  max %s", pct(fromKill, 50), pct(fromKill, 90), pct(fromKill, 100))
	report(name+": new leader elected", "p50 %s  max %s", pct(elected, 50), pct(elected, 100))
	report(name+": write answered after the election", "p50 %s  max %s", pct(after, 50), pct(after, 100))
	sort.Slice(shots, func(i, j int) bool { return shots[i].took > shots[j].took })
	for _, s := range shots {
		if s.status != http.StatusOK {
			fmt.Printf("    non-200: status %d after %s: %s\n", s.status, s.took.Round(time.Millisecond), s.code)
		}
	}
}

// benchOneShot: SIGSTOP of the leader on loopback.
func benchOneShot(c *cluster) {
	var shots []oneShot
	for t, attempts := 0, 0; t < *trials && attempts < 3**trials; t, attempts = t+1, attempts+1 {
		if err := c.waitLeader(30 * time.Second); err != nil {
			fmt.Println("oneshot:", err)
			return
		}
		c.waitCaughtUp(30 * time.Second)
		l := c.leader()
		f := (l + 1 + t%2) % len(c.procs)
		if st, _, _ := oneShotWrite(c.api(f), 800000+int64(t)*2); st != http.StatusOK {
			fmt.Println("oneshot: warm-up write failed with status", st)
		}
		if now := c.leader(); now != l {
			fmt.Printf("  trial %d: leadership moved from n%d to n%d before the stop; settling again\n", t+1, l+1, now+1)
			t--
			continue
		}
		_ = c.procs[l].Process.Signal(syscall.SIGSTOP)
		t0 := time.Now()
		elected := watchElection(c.apis(), l, t0)
		st, code, took := oneShotSend(c.api(f), 800001+int64(t)*2)
		s := oneShot{status: st, code: code, took: took, fromKill: time.Since(t0), elected: <-elected}
		shots = append(shots, s)
		_ = c.procs[l].Process.Signal(syscall.SIGCONT)
		fmt.Printf("  trial %d: SIGSTOP n%d, write to n%d: %d in %s (elected after %s)\n", t+1, l+1, f+1, st, took.Round(time.Millisecond), s.elected.Round(time.Millisecond))
	}
	reportOneShots("one-shot write ("+*oneshotClient+") at leader SIGSTOP (loopback)", shots)
}

// compose drives the compose cluster of the oneshot-compose phase.
type compose struct {
	project string
	env     []string
	ports   []int // agents' API ports on 127.0.0.1
}

// newCompose: the agents' APIs on -compose-port+1..3 (n4's on +4), the
// balancers' on +31..34; by default 29751-29784, below the kernel's
// ephemeral range (32768 and up on Linux), where a port can be taken at any
// moment by some outgoing connection.
func newCompose() *compose {
	b := *composePort
	c := &compose{project: *composeProject, ports: []int{b + 1, b + 2, b + 3}}
	c.env = append(os.Environ(),
		"BEACON_IMAGE="+*composeImage, "BEACON_NET=10.87.61",
		fmt.Sprintf("BEACON_N1_PORT=%d", b+1), fmt.Sprintf("BEACON_N2_PORT=%d", b+2),
		fmt.Sprintf("BEACON_N3_PORT=%d", b+3), fmt.Sprintf("BEACON_N4_PORT=%d", b+4),
		fmt.Sprintf("BEACON_LB1_PORT=%d", b+31), fmt.Sprintf("BEACON_LB1_ADMIN_PORT=%d", b+32),
		fmt.Sprintf("BEACON_LB2_PORT=%d", b+33), fmt.Sprintf("BEACON_LB2_ADMIN_PORT=%d", b+34),
		"BEACON_LOG_LEVEL=warn")
	return c
}

func (c *compose) api(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", c.ports[i]) }
func (c *compose) apis() []string {
	return []string{c.api(0), c.api(1), c.api(2)}
}

func (c *compose) run(args ...string) (string, error) {
	cmd := exec.Command("docker-compose", append([]string{"-p", c.project}, args...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (c *compose) container(i int) string {
	out, _ := c.run("ps", "-q", fmt.Sprintf("n%d", i+1))
	return out
}

func (c *compose) leader() int {
	for i, a := range c.apis() {
		if st, err := getStatus(a); err == nil && st.State == "Leader" && len(st.Peers) == 3 {
			return i
		}
	}
	return -1
}

// settle waits until one node leads with three peers and every node knows it.
func (c *compose) settle(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.leader(); l >= 0 {
			agree := true
			lst, _ := getStatus(c.api(l))
			for _, a := range c.apis() {
				st, err := getStatus(a)
				agree = agree && err == nil && st.Leader == lst.Node
			}
			if agree {
				return l
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1
}

// benchOneShotCompose: docker kill (or pause) of the leader's container.
func benchOneShotCompose() {
	c := newCompose()
	defer func() {
		if out, err := c.run("--profile", "join-demo", "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
			fmt.Println("oneshot-compose: down:", err, out)
		}
	}()
	if out, err := c.run("up", "-d", "n1", "n2", "n3"); err != nil {
		fmt.Println("oneshot-compose: up:", err, out)
		return
	}
	var shots []oneShot
	for t, attempts := 0, 0; t < *trials && attempts < 3**trials; t, attempts = t+1, attempts+1 {
		l := c.settle(90 * time.Second)
		if l < 0 {
			fmt.Println("oneshot-compose: the cluster did not settle")
			break
		}
		time.Sleep(time.Second) // let the last restart's catch-up finish
		f := (l + 1 + t%2) % 3
		if st, _, _ := oneShotWrite(c.api(f), 700000+int64(t)*2); st != http.StatusOK {
			fmt.Println("oneshot-compose: warm-up write failed with status", st)
		}
		// Leadership may have moved since settle (a restarted node's
		// catch-up on a busy machine): kill whoever leads now.
		if now := c.leader(); now != l {
			fmt.Printf("  trial %d: leadership moved from n%d to n%d before the kill; settling again\n", t+1, l+1, now+1)
			t--
			continue
		}
		id := c.container(l)
		// `docker kill` returns once the container is dead (`docker pause`
		// once it is frozen), which takes a while on a busy machine; the
		// followers may elect meanwhile. So times are from the moment the
		// fault was issued, and the write is sent the moment it returned
		// (the leader is gone or frozen for sure).
		t0 := time.Now()
		elected := watchElection(c.apis(), l, t0)
		if out, err := exec.Command("docker", *composeFault, id).CombinedOutput(); err != nil {
			fmt.Printf("oneshot-compose: docker %s: %v %s\n", *composeFault, err, out)
			break
		}
		stopped := time.Since(t0)
		st, code, took := oneShotSend(c.api(f), 700001+int64(t)*2)
		s := oneShot{status: st, code: code, took: took, fromKill: time.Since(t0), elected: <-elected}
		shots = append(shots, s)
		fmt.Printf("  trial %d: docker %s n%d (returned after %s), write (%s) to n%d: %d in %s, %s after the fault (elected after %s)\n",
			t+1, *composeFault, l+1, stopped.Round(time.Millisecond), *oneshotClient, f+1, st, took.Round(time.Millisecond), s.fromKill.Round(time.Millisecond), s.elected.Round(time.Millisecond))
		restart := "start"
		if *composeFault == "pause" {
			restart = "unpause"
		}
		if out, err := exec.Command("docker", restart, id).CombinedOutput(); err != nil {
			fmt.Printf("oneshot-compose: docker %s: %v %s\n", restart, err, out)
			break
		}
	}
	reportOneShots(fmt.Sprintf("one-shot write (%s) at leader docker %s (compose)", *oneshotClient, *composeFault), shots)
}
