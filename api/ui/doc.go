// Package ui holds Beacon's web UI: plain HTML, CSS and JavaScript modules
// embedded in the binary and served by every agent at /ui/ (docs/ui.md).
// There is no build step: the files under static/ are what the browser gets.
// The pages read the same public API as any client, with the token the
// operator types (kept in the tab's sessionStorage), and follow changes
// through blocking queries.
package ui
