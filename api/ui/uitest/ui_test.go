package uitest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

const managementToken = "uitest-management-token-0123456789"

// backend is an HTTP server on 127.0.0.1 whose /healthz the test makes
// fail: 200 until fail is set, then 503 with a body the UI must show as
// text (it holds markup).
type backend struct {
	*httptest.Server
	fail atomic.Bool
}

const failBody = `database unreachable <script>alert("x")</script> & <b>bold</b>`

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.fail.Load() {
			http.Error(w, failBody, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) port() int { return b.Listener.Addr().(*net.TCPAddr).Port }

// withLB gives every agent an embedded load balancer (ports picked by the
// kernel), so the UI has routing tables to show.
func withLB(c *agent.Config) {
	c.LBAddr, c.LBAdminAddr = "127.0.0.1:0", "127.0.0.1:0"
}

// register registers an instance, retrying 503s (an election on a loaded
// machine): registrations are idempotent.
func register(t *testing.T, cl *client.Client, service, id string, r *client.Registration) {
	t.Helper()
	agenttest.Retry503(t, "register "+service+"/"+id, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := cl.Register(ctx, service, id, r)
		return err
	})
}

func instance(t *testing.T, cl *client.Client, service, id string) *client.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, _, err := cl.Instance(ctx, service, id, nil)
	if err != nil {
		t.Fatalf("read %s/%s: %v", service, id, err)
	}
	return in
}

// fixtures registers web-1 (HTTP check on be), web-2 (TTL, passing) and
// api-1, and waits for web-1 to pass.
func fixtures(t *testing.T, c *agenttest.Cluster, be *backend) {
	t.Helper()
	cl := c.Client(1)
	register(t, cl, "web", "web-1", &client.Registration{Address: "127.0.0.1", Port: be.port(), Tags: []string{"demo", "v1"},
		Meta: map[string]string{"zone": "eu-1a"}, Version: "1.0.0", Weight: 10,
		Checks: []client.CheckDefinition{{HTTP: be.URL + "/healthz", Interval: client.Duration(2 * time.Second), FailuresBeforeCritical: 1, SuccessesBeforePassing: 1}}})
	register(t, cl, "web", "web-2", &client.Registration{Address: "127.0.0.2", Port: 8080, Tags: []string{"demo", "canary"}, Version: "2.0.0",
		Checks: []client.CheckDefinition{{Name: "heartbeat", TTL: client.Duration(time.Hour), InitialStatus: "passing"}}})
	register(t, cl, "api", "api-1", &client.Registration{Address: "127.0.0.3", Port: 9090})
	agenttest.Eventually(t, 15*time.Second, func() bool {
		return instance(t, cl, "web", "web-1").Status == client.StatusPassing
	}, "web-1 passing")
}

func newCluster(t *testing.T, opts ...func(*agent.Config)) *agenttest.Cluster {
	return agenttest.New(t, 3, agenttest.WithConfig(func(c *agent.Config) {
		withLB(c)
		for _, o := range opts {
			o(c)
		}
	}), agenttest.WithClient(func(cc *client.Config) { cc.Token = managementToken }))
}

func base(c *agenttest.Cluster, i int) string { return "http://" + c.Node(i).HTTPAddr() }

// onPage starts a cluster with the fixtures and opens fragment of node 0's
// UI in a 1280x800 browser.
func onPage(t *testing.T, fragment string) (*agenttest.Cluster, *backend, *browser) {
	t.Helper()
	c := newCluster(t)
	be := newBackend(t)
	fixtures(t, c, be)
	b := newBrowser(t, 1280, 800)
	b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/"+fragment))
	return c, be, b
}

// TestEveryPageLoadsWithoutConsoleErrors opens each page of the UI on a
// 3-node cluster, at desktop and phone width, in light and dark, and fails
// on any console error, exception or CSP violation.
func TestEveryPageLoadsWithoutConsoleErrors(t *testing.T) {
	c := newCluster(t)
	be := newBackend(t)
	fixtures(t, c, be)
	pages := []struct{ name, fragment, ready string }{
		{"overview", "#/", `document.querySelectorAll('table[aria-label="Members"] tbody tr').length === 3 && document.querySelectorAll('table[aria-label="Raft servers"] tr[data-server]:not([data-state="no-answer"])').length === 3`},
		{"services", "#/services", `[...document.querySelectorAll('table[aria-label="Services"] a')].map(a => a.textContent).join() === "api,web"`},
		{"service", "#/services/web", `document.querySelectorAll('tr[data-instance]').length === 2`},
		{"instance", "#/services/web/web-1", `document.querySelector('tr[data-check] .badge') !== null && document.querySelector('ol.timeline, main p.muted') !== null`},
		{"lbs", "#/lbs", `document.querySelector('section.lb table[aria-label="Routing table of web"]') !== null`},
	}
	for _, size := range []struct {
		name string
		w, h int
	}{{"desktop", 1280, 800}, {"phone", 390, 844}} {
		for _, theme := range []string{"light", "dark"} {
			t.Run(size.name+" "+theme, func(t *testing.T) {
				b := newBrowser(t, size.w, size.h)
				b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/"))
				b.waitJS(60*time.Second, `location.pathname === "/ui/" && document.querySelector("main h1") !== null`, "the redirect from / to /ui/")
				if theme == "dark" {
					b.do(10*time.Second, chromedp.Evaluate[chromedp.Void](`localStorage.setItem("beacon.theme", "dark")`), chromedp.Reload())
				}
				for _, p := range pages {
					b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/"+p.fragment), chromedp.Reload())
					b.waitJS(60*time.Second, p.ready, p.name+" page content")
					b.screenshot(size.name + "-" + theme + "-" + p.name)
				}
				if errs := b.errors(); len(errs) > 0 {
					t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
				}
			})
		}
	}
}

// TestRegistrationAppearsWithoutReload registers an instance through
// another node's API while the browser shows the service, and expects the
// row within a second, in the same document (no reload).
func TestRegistrationAppearsWithoutReload(t *testing.T) {
	c, _, b := onPage(t, "#/services/web")
	b.waitJS(60*time.Second, `document.querySelectorAll('tr[data-instance]').length === 2`, "the two instances")
	b.do(5*time.Second, chromedp.Evaluate[chromedp.Void](`window.sameDocument = true`))
	// Let the page's watch settle into its blocking query first.
	b.waitJS(5*time.Second, `Number(document.body.dataset.liveIndex) > 0`, "a blocking watch")

	// A scheduler hiccup on a loaded machine can delay one attempt: the
	// UI must show the change within 1s in one of three attempts (a page
	// that polled, or waited for anything but the change, fails all three).
	var took []time.Duration
	for attempt := range 3 {
		id := fmt.Sprintf("web-new-%d", attempt)
		register(t, c.Client(2), "web", id, &client.Registration{Address: "127.0.0.9", Port: 7000 + attempt, Tags: []string{"fresh"}})
		start := time.Now()
		b.waitJS(60*time.Second, `document.querySelector('tr[data-instance="`+id+`"]') !== null`, id+" shown")
		took = append(took, time.Since(start).Round(time.Millisecond))
		if took[attempt] <= time.Second {
			break
		}
	}
	t.Logf("registration to row: %v", took)
	if took[len(took)-1] > time.Second {
		t.Fatalf("no attempt showed the new instance within 1s: %v", took)
	}
	if !eval[bool](b, `window.sameDocument === true`) {
		t.Fatal("the page reloaded")
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestFailingBackendShowsCriticalWithItsOutput makes web-1's backend
// answer 503 and expects the instance page to show the check critical,
// with the output as text (the markup in it not interpreted).
func TestFailingBackendShowsCriticalWithItsOutput(t *testing.T) {
	c, be, b := onPage(t, "#/services/web/web-1")
	b.waitJS(60*time.Second, `document.querySelector('tr[data-check] .badge.passing') !== null`, "the passing check")

	be.fail.Store(true)
	b.waitJS(60*time.Second, `document.querySelector('tr[data-check] .badge.critical') !== null`, "the check critical")
	b.waitJS(5*time.Second, `[...document.querySelectorAll('tr[data-check] pre.output')].some(p => p.textContent.includes(`+jsString(`<script>alert("x")</script>`)+`))`, "the output as text")
	if n := eval[int](b, `document.querySelectorAll('main script, main b').length`); n != 0 {
		t.Fatalf("check output became markup: %d elements", n)
	}
	b.waitJS(5*time.Second, `[...document.querySelectorAll('ol.timeline li.to-critical')].length > 0`, "a transition to critical in the timeline")
	b.screenshot("instance-critical")
	if in := instance(t, c.Client(0), "web", "web-1"); in.Status != client.StatusCritical {
		t.Fatalf("API says %s", in.Status)
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// drainFromUI clicks Drain on the instance page, sets the deadline and
// confirms.
func drainFromUI(b *browser, deadline string) {
	b.t.Helper()
	b.click(10*time.Second, `.actionbar button[data-action="drain"]`)
	b.do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog[open] #confirm-deadline`)),
		chromedp.SetValue(chromedp.CSS(`#confirm-deadline`), deadline),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)))
}

// TestDrainFromTheUIIsVisibleThroughTheAPI drains web-2 from its page and
// reads the drain back through another node's API.
func TestDrainFromTheUIIsVisibleThroughTheAPI(t *testing.T) {
	c, _, b := onPage(t, "#/services/web/web-2")
	b.waitJS(60*time.Second, `document.querySelector('.actionbar button[data-action="drain"]') !== null`, "the actions")
	before := time.Now()
	drainFromUI(b, "10m")
	b.waitJS(10*time.Second, `!document.querySelector('#confirm-dialog').open && document.querySelector('main .badge.draining') !== null`, "the drain shown")
	in := instance(t, c.Client(2), "web", "web-2")
	if in.Draining == nil {
		t.Fatalf("the API shows no drain: %+v", in)
	}
	if d := in.Draining.Deadline.Sub(before); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("drain deadline %v after the click, want about 10m", d)
	}
	b.screenshot("instance-draining")
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestWithAuthAPageWithoutATokenCannotAct: with tokens on and anonymous
// reads allowed, the page reads but its drain is refused with the API's
// error and nothing changes; with anonymous reads off it asks for a token
// first. With the management token typed in, the same drain works.
func TestWithAuthAPageWithoutATokenCannotAct(t *testing.T) {
	for _, anon := range []bool{true, false} {
		name := "anonymous reads on"
		if !anon {
			name = "anonymous reads off"
		}
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, func(ac *agent.Config) {
				ac.ManagementToken = managementToken
				ac.AnonymousRead = anon
			})
			be := newBackend(t)
			fixtures(t, c, be)
			b := newBrowser(t, 1280, 800)
			b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/#/services/web/web-2"))
			if !anon {
				b.waitJS(60*time.Second, `document.querySelector('#token-dialog').open`, "the token dialog")
				b.waitJS(60*time.Second, `document.body.innerText.includes("401 unauthenticated")`, "the refusal to read")
				b.screenshot("auth-token-dialog")
				b.do(10*time.Second, chromedp.Click(chromedp.CSS(`#token-cancel`)))
				if n := eval[int](b, `document.querySelectorAll('.actionbar button').length`); n != 0 {
					t.Fatalf("%d action buttons without a token and without anonymous reads", n)
				}
				// Then log in and drain.
				b.do(10*time.Second,
					chromedp.Click(chromedp.CSS(`#auth-button`)),
					chromedp.WaitVisible(chromedp.CSS(`#token-input`)),
					chromedp.SendKeys(chromedp.CSS(`#token-input`), managementToken),
					chromedp.Click(chromedp.CSS(`#token-save`)))
				b.waitJS(60*time.Second, `document.querySelector('.actionbar button[data-action="drain"]') !== null`, "the page after the token")
				if eval[bool](b, `location.href.includes(`+jsString(managementToken)+`)`) {
					t.Fatal("the token is in the URL")
				}
				drainFromUI(b, "10m")
				agenttest.Eventually(t, 10*time.Second, func() bool { return instance(t, c.Client(1), "web", "web-2").Draining != nil }, "web-2 draining")
				return
			}
			b.waitJS(60*time.Second, `document.querySelector('.actionbar button[data-action="drain"]') !== null`, "the page, read anonymously")
			drainFromUI(b, "10m")
			b.waitJS(10*time.Second, `!document.querySelector('#confirm-error').hidden && document.querySelector('#confirm-error').textContent.includes("401 unauthenticated")`, "the API's refusal in the dialog")
			b.screenshot("auth-refused")
			if in := instance(t, c.Client(1), "web", "web-2"); in.Draining != nil {
				t.Fatalf("drained without a token: %+v", in.Draining)
			}
			// The same drain with the management token typed in.
			b.click(10*time.Second, `#confirm-error button`)
			b.do(10*time.Second,
				chromedp.WaitVisible(chromedp.CSS(`#token-input`)),
				chromedp.SendKeys(chromedp.CSS(`#token-input`), managementToken),
				chromedp.Click(chromedp.CSS(`#token-save`)))
			b.waitJS(10*time.Second, `!document.querySelector('#token-dialog').open`, "the token accepted")
			if s := eval[string](b, `sessionStorage.getItem("beacon.token")`); s != managementToken {
				t.Fatalf("sessionStorage holds %q", s)
			}
			drainFromUI(b, "10m")
			agenttest.Eventually(t, 10*time.Second, func() bool { return instance(t, c.Client(1), "web", "web-2").Draining != nil }, "web-2 draining")
		})
	}
}

// TestLostConnectionIsShownAndRecovers stops the agent the page talks to:
// the banner appears; once the agent is back it goes away by itself and
// the page follows changes again.
func TestLostConnectionIsShownAndRecovers(t *testing.T) {
	c, _, b := onPage(t, "#/services/web")
	b.waitJS(60*time.Second, `document.querySelectorAll('tr[data-instance]').length === 2`, "the instances")
	c.Stop(0)
	b.waitJS(60*time.Second, `!document.querySelector('#banner').hidden`, "the connection-lost banner")
	b.screenshot("connection-lost")
	c.Restart(0)
	b.waitJS(30*time.Second, `document.querySelector('#banner').hidden`, "the banner gone")
	register(t, c.Client(1), "web", "web-after", &client.Registration{Address: "127.0.0.9", Port: 7001})
	b.waitJS(10*time.Second, `document.querySelector('tr[data-instance="web-after"]') !== null`, "a change after the reconnection")
}

// TestAClickIsNotLostToALiveReload holds the mouse button (or Space) down
// on the drain button of a page that reloads all the time (another service
// registers 20 instances a second, and the page reloads on every change in
// the catalog) until a reload is due. Released, the press still makes its
// click (the dialog opens), and the reload held back meanwhile then comes
// into the page.
func TestAClickIsNotLostToALiveReload(t *testing.T) {
	c, _, b := onPage(t, "#/services/web/web-2")
	const drain = `.actionbar button[data-action="drain"]`
	b.waitJS(60*time.Second, `document.querySelector('`+drain+`') !== null`, "the actions")

	// The churn: at most 600 registrations, 20 a second, until the test ends.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		cl := c.Client(1)
		for i := 0; i < 600; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cl.Register(ctx, "churn", fmt.Sprintf("churn-%d", i), &client.Registration{Address: "127.0.0.1", Port: 10000 + i})
			cancel()
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	// The page follows the churn.
	first := eval[string](b, `document.body.dataset.liveIndex`)
	b.waitJS(30*time.Second, `document.body.dataset.liveIndex !== `+jsString(first), "the page following the churn")

	// Space on the focused button clicks when the key comes up: the same
	// hold, by keyboard.
	space := kb.Encode(' ')
	keys := func(events []*input.DispatchKeyEventParams) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			for _, k := range events {
				if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, *k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// press marks the drain button (a reload replaces it with one without
	// the mark), focuses it and returns its centre.
	press := func() []float64 {
		return eval[[]float64](b, `(() => { const el = document.querySelector('`+drain+`'); el.dataset.pressed = ''; el.focus();
		  const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()`)
	}
	for round := 1; round <= 4; round++ {
		byKey := round%2 == 0
		xy := press()
		if byKey {
			b.do(10*time.Second, keys(space[:len(space)-1]))
		} else {
			b.do(10*time.Second, chromedp.MouseEvent(chromedp.MousePressed, xy[0], xy[1], chromedp.ButtonLeft, chromedp.ClickCount(1)))
		}
		// Until a reload comes: it is held back (data-held), or, were it not,
		// it would have replaced the pressed button.
		b.waitJS(30*time.Second, `document.querySelector('main [data-held]') !== null || document.querySelector('`+drain+`[data-pressed]') === null`, "a reload during the press")
		if byKey {
			b.do(10*time.Second, keys(space[len(space)-1:]))
		} else {
			b.do(10*time.Second, chromedp.MouseEvent(chromedp.MouseReleased, xy[0], xy[1], chromedp.ButtonLeft, chromedp.ClickCount(1)))
		}
		b.waitJS(10*time.Second, `document.querySelector('#confirm-dialog').open`, fmt.Sprintf("round %d (by key: %v): the dialog the click opens", round, byKey))
		b.waitJS(10*time.Second, `document.querySelector('main [data-held]') === null && document.querySelector('`+drain+`[data-pressed]') === null`, "the held reload in the page")
		b.click(10*time.Second, `#confirm-cancel`)
		b.waitJS(10*time.Second, `!document.querySelector('#confirm-dialog').open`, "the dialog closed")
	}
	// A right button held down does not hold reloads back: its release may
	// go to the context menu and never reach the page.
	xy := press()
	b.do(10*time.Second, chromedp.MouseEvent(chromedp.MousePressed, xy[0], xy[1], chromedp.ButtonRight, chromedp.ClickCount(1)))
	b.waitJS(30*time.Second, `document.querySelector('`+drain+`[data-pressed]') === null && document.querySelector('main [data-held]') === null`, "a reload while the right button is down")
	b.do(10*time.Second, chromedp.MouseEvent(chromedp.MouseReleased, xy[0], xy[1], chromedp.ButtonRight, chromedp.ClickCount(1)))
	if in := instance(t, c.Client(1), "web", "web-2"); in.Draining != nil {
		t.Fatalf("drained, but every dialog was cancelled: %+v", in.Draining)
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestRelativeTimesTickOnAQuietCatalog: on a catalog that nothing writes
// to, an instance page's relative times ("since 3s ago", "deregistered in
// 10m") still move, without the page being drawn again.
func TestRelativeTimesTickOnAQuietCatalog(t *testing.T) {
	c := agenttest.New(t, 1)
	cl := c.Client(0)
	register(t, cl, "quiet", "q1", &client.Registration{Address: "127.0.0.1", Port: 8080})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cl.Maintenance(ctx, "quiet", "q1", &client.MaintenanceRequest{Mode: "drain", Deadline: client.Duration(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, 1280, 800)
	b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/#/services/quiet/q1"))
	b.waitJS(30*time.Second, `document.querySelector('main .badge.draining') !== null`, "the drain shown")
	// The first text seen is kept on the heading it was read under: a
	// reload draws a new heading and starts over, so only a change made
	// without a reload counts.
	b.waitJS(30*time.Second, `(() => {
		const h = document.querySelector('main h1');
		const now = [...document.querySelectorAll('main time')].map((e) => e.textContent).join('|');
		if (h.dataset.probe === undefined) { h.dataset.probe = now; return false; }
		return now !== h.dataset.probe;
	})()`, "a relative time to change without a reload")
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestListsSayWhyTheyAreEmptyAndSearchByPort: an empty catalog's services
// list says nothing is registered; a service page's search finds an
// instance by the port its Address column shows; a filter that matches
// none of its instances says so rather than that none is registered.
func TestListsSayWhyTheyAreEmptyAndSearchByPort(t *testing.T) {
	c := agenttest.New(t, 1)
	b := newBrowser(t, 1280, 800)
	b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/#/services"))
	b.waitJS(30*time.Second, `document.querySelector('main table tbody td.muted')?.textContent === 'No services registered.'`, "the empty catalog said so")

	register(t, c.Client(0), "web", "w1", &client.Registration{Address: "127.0.0.1", Port: 43203})
	register(t, c.Client(0), "web", "w2", &client.Registration{Address: "127.0.0.1", Port: 8080})
	b.do(10*time.Second, setHash("#/services/web?q=:43203"))
	b.waitJS(30*time.Second, `(() => {
		const rows = [...document.querySelectorAll('main tr[data-instance]')].map((r) => r.dataset.instance);
		return rows.length === 1 && rows[0] === 'w1';
	})()`, "only w1, found by its port")
	b.do(10*time.Second, setHash("#/services/web?tag=nope"))
	b.waitJS(30*time.Second, `document.querySelector('main table tbody td.muted')?.textContent === 'No instance matches the filters.'`, "the filter named as the reason")
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestLongValuesStayInsideTheWindow: a 128-character instance ID and many
// long tags (valid values) neither widen the instance page past the
// window nor push the service table's columns thousands of pixels away.
func TestLongValuesStayInsideTheWindow(t *testing.T) {
	c := agenttest.New(t, 1)
	id := strings.Repeat("w", 128)
	var tags []string
	for i := 0; i < 64; i++ {
		tags = append(tags, fmt.Sprintf("t%02d-%s", i, strings.Repeat("x", 42)))
	}
	register(t, c.Client(0), "long", id, &client.Registration{Address: "127.0.0.1", Port: 8080, Tags: tags})
	b := newBrowser(t, 1280, 800)
	b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/#/services/long/"+id))
	b.waitJS(30*time.Second, `document.querySelector('main h1')?.textContent.startsWith('wwww')`, "the instance page")
	if w := eval[int](b, `document.documentElement.scrollWidth - innerWidth`); w > 0 {
		t.Fatalf("the instance page is %d px wider than the window", w)
	}
	b.do(10*time.Second, setHash("#/services/long"))
	b.waitJS(30*time.Second, `document.querySelector('main tr[data-instance]') !== null`, "the service page")
	if w := eval[int](b, `(() => { const t = document.querySelector('main .table-wrap'); return t.scrollWidth - t.clientWidth; })()`); w > 200 {
		t.Fatalf("the instances table is %d px wider than its box", w)
	}
	if !eval[bool](b, `document.querySelector('main .tag').title.startsWith('t00-')`) {
		t.Fatal("a tag has no title holding its whole text")
	}
}

// TestARevokedTokenLeavesTheHeader: once the token the page uses is
// revoked, the reads it makes are refused and the header stops naming it.
func TestARevokedTokenLeavesTheHeader(t *testing.T) {
	c := agenttest.New(t, 1, agenttest.WithConfig(func(ac *agent.Config) {
		ac.ManagementToken = managementToken
		ac.AnonymousRead = true
	}), agenttest.WithClient(func(cc *client.Config) { cc.Token = managementToken }))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tok, err := c.Client(0).CreateToken(ctx, &client.TokenRequest{Policy: "write", Prefixes: []string{""}})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, 1280, 800)
	b.do(30*time.Second, chromedp.Navigate(base(c, 0)+"/ui/"),
		chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem("beacon.token", `+jsString(tok.Secret)+`)`),
		chromedp.Reload())
	b.waitJS(30*time.Second, `document.querySelector('#auth-button').textContent.startsWith('Token: write')`, "the token named in the header")
	if _, err := c.Client(0).DeleteToken(ctx, tok.Accessor); err != nil {
		t.Fatal(err)
	}
	b.waitJS(30*time.Second, `document.querySelector('#auth-button').textContent === 'Token refused'`, "the header to stop naming the revoked token")
}
