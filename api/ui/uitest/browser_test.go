package uitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns the path of a Chromium to drive. Without one the tests
// skip, except in CI (CI set), where a missing browser is a failure:
// .ci/run installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BEACON_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH, and CI is set: the browser tests must run in CI (apt-get install chromium)")
	}
	t.Skip("browser tests skipped: no chromium on PATH (apt-get install chromium, or set BEACON_CHROMIUM)")
	return ""
}

// browser is one headless Chromium with one tab, and every console message
// the tab's pages wrote.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// newBrowser starts a headless Chromium with a window of w x h pixels; it
// stops when the test ends. The browser returned is its first tab (newTab
// opens more).
func newBrowser(t *testing.T, w, h int, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests may run as root, where the sandbox refuses to start
		chromedp.WindowSize(w, h),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-gpu", true),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	// The first action starts the browser. Headless windows are at least
	// 500 pixels wide: a phone's width is emulated.
	var start []chromedp.Action[chromedp.Void]
	if w < 500 {
		start = append(start, chromedp.EmulateViewport(int64(w), int64(h), chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	}
	return openTab(t, actx, start, chromedp.WithLogf(t.Logf))
}

// newTab opens another tab in b's browser; it closes when the test ends.
func (b *browser) newTab() *browser {
	b.t.Helper()
	return openTab(b.t, b.ctx, nil)
}

// openTab makes a tab of the browser in parent (starting the browser when
// parent has none yet), runs start in it and records its console.
func openTab(t *testing.T, parent context.Context, start []chromedp.Action[chromedp.Void], opts ...chromedp.ContextOption) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent, opts...)
	if err := chromedp.Do(ctx, start...); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return b
}

// do runs actions with a bound on the time they take.
func (b *browser) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v\npage text:\n%s", err, b.text())
	}
}

// click clicks the element sel names, as a user's mouse would, within
// timeout. The UI replaces a view's elements each time it reloads (a live
// change, a new token), so the node chromedp found may leave the document
// before the click reaches it ("Could not find node with given id"): then
// click finds the element again and clicks that. chromedp fails before it
// dispatches the mouse events in that case, so a retry never clicks twice.
func (b *browser) click(timeout time.Duration, sel string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	for tries := 1; ; tries++ {
		err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
		if err == nil {
			return
		}
		if ctx.Err() != nil || !nodeGone(err) {
			b.t.Fatalf("click %s (try %d): %v\npage text:\n%s", sel, tries, err, b.text())
		}
		b.t.Logf("click %s: the node left the page before the click (%v); clicking the new one", sel, err)
	}
}

// nodeGone reports whether err says the node chromedp held left the page
// (the DevTools protocol's errors for a node replaced or detached).
func nodeGone(err error) bool {
	if errors.Is(err, chromedp.ErrInvalidDimensions) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"Could not find node", "No node with given id", "Node is detached", "Could not compute", "does not have a layout object", "does not belong to the document"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is truthy, for at most timeout.
func (b *browser) waitJS(timeout time.Duration, expr, what string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.t.Fatalf("waiting %v for %s: %v\npage text:\n%s", timeout, what, err, b.text())
	}
}

// text is the page's visible text, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// errors returns the console errors and exceptions written so far.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.console {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			out = append(out, fmt.Sprintf("%s (%s:%d)", m.String(), m.URL, m.Line))
		}
	}
	return out
}

// screenshot saves a PNG of the page when BEACON_UI_SCREENSHOTS names a
// directory (docs/ui.md: how the pictures there were taken).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("BEACON_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
