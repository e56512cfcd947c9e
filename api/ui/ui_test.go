package ui

import (
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"
)

// TestPagesNeedNoInlineScriptOrStyle checks what the CSP enforces in the
// browser: no inline script, event handler attribute or style.
func TestPagesNeedNoInlineScriptOrStyle(t *testing.T) {
	page, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, tag := range regexp.MustCompile(`<script[^>]*>[^<]*`).FindAllString(html, -1) {
		if !strings.Contains(tag, " src=") || !strings.HasSuffix(tag, ">") {
			t.Errorf("index.html has an inline script: %q", tag)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`https?://`),
	} {
		if m := bad.FindString(html); m != "" {
			t.Errorf("index.html has %q", m)
		}
	}
	if err := fs.WalkDir(static, "static/js", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, _ := static.ReadFile(p)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://"} {
			if strings.Contains(string(src), bad) {
				t.Errorf("%s uses %s", p, bad)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestEveryImportResolves follows every relative import of the modules,
// so that a renamed file breaks this test rather than the page.
func TestEveryImportResolves(t *testing.T) {
	imp := regexp.MustCompile(`(?m)^import [^'"]*['"](\.[^'"]+)['"]`)
	assets := load()
	for name := range assets {
		if path.Ext(name) != ".js" {
			continue
		}
		for _, m := range imp.FindAllStringSubmatch(string(assets[name].body), -1) {
			target := path.Join(path.Dir(name), m[1])
			if _, ok := assets[target]; !ok {
				t.Errorf("%s imports %s: no such file (%s)", name, m[1], target)
			}
		}
	}
	if _, ok := assets["js/app.js"]; !ok {
		t.Fatal("no js/app.js")
	}
}

// TestAssetsStaySmall keeps the UI light (docs/ui.md states the size).
func TestAssetsStaySmall(t *testing.T) {
	const limit = 100 << 10
	if n := Size(); n > limit || n == 0 {
		t.Fatalf("the UI's files take %d bytes; keep them under %d (and update docs/ui.md)", n, limit)
	}
	t.Logf("%d bytes", Size())
}
