package uitest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestClickFollowsAReplacedButton: a page that replaces its button every
// 25 ms with the UI's own replace (dom.js; a live view reloads at most
// every 200 ms) gets exactly one click from each b.click, though the
// button chromedp finds is often gone before the click reaches it.
func TestClickFollowsAReplacedButton(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/js/", http.StripPrefix("/js/", http.FileServer(http.Dir("../static/js"))))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<!doctype html><link rel="icon" href="data:,"><body><div id="box"></div><script type="module">
import { h, replace } from '/js/dom.js';
window.clicks = 0;
const box = document.getElementById('box');
const draw = () => replace(box, h('button', { id: 'go', onclick: () => { window.clicks++; } }, 'Go'));
draw();
setInterval(draw, 25);
</script></body>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := newBrowser(t, 800, 600)
	b.do(30*time.Second, chromedp.Navigate(srv.URL))
	b.waitJS(30*time.Second, `document.getElementById('go') !== null`, "the button")
	for i := 1; i <= 20; i++ {
		b.click(20*time.Second, `#go`)
		b.waitJS(10*time.Second, `window.clicks >= `+strconv.Itoa(i), "the click")
		if n := eval[int](b, `window.clicks`); n != i {
			t.Fatalf("%d clicks after %d calls", n, i)
		}
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("console errors: %v", errs)
	}
}
