package cmd

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func testFactory() *Factory {
	return &Factory{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
}

func TestCheckCommandParsesVerbOutputAndMetrics(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		usage bool
		check func(*checkOptions) bool
	}{
		{"pass with output and metrics", []string{"pass", "web:web-1:ttl", "--output", "ok", "--metric", "load=0.4", "--metric", "queue=12"}, false,
			func(o *checkOptions) bool {
				return o.verb == "pass" && o.id == "web:web-1:ttl" && o.output == "ok" && len(o.metrics) == 2
			}},
		{"fail without flags", []string{"fail", "web:web-1:ttl"}, false, func(o *checkOptions) bool { return o.verb == "fail" }},
		{"an unknown verb is a usage error", []string{"ok", "web:web-1:ttl"}, true, nil},
		{"a metric that is not a number is a usage error", []string{"pass", "x:y", "--metric", "load=high"}, true, nil},
		{"a missing id is a usage error", []string{"pass"}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got *checkOptions
			c := newCheckCmd(testFactory(), func(_ context.Context, o *checkOptions) error { got = o; return nil })
			c.SetArgs(tc.args)
			c.SetOut(&bytes.Buffer{})
			c.SetErr(&bytes.Buffer{})
			err := c.Execute()
			var ue usageError
			if tc.usage != errors.As(err, &ue) {
				t.Fatalf("err %v, want usage error %v", err, tc.usage)
			}
			if !tc.usage && (got == nil || !tc.check(got)) {
				t.Fatalf("parsed %+v", got)
			}
		})
	}
}

func TestMaintCommandParsesActions(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		usage bool
		want  maintOptions
	}{
		{"enable with a reason", []string{"enable", "web", "w1", "--reason", "upgrade"}, false, maintOptions{action: "enable", service: "web", id: "w1", reason: "upgrade"}},
		{"disable", []string{"disable", "web", "w1"}, false, maintOptions{action: "disable", service: "web", id: "w1"}},
		{"drain with a deadline", []string{"drain", "web", "w1", "--deadline", "2m"}, false, maintOptions{action: "drain", service: "web", id: "w1", deadline: 2 * time.Minute}},
		{"drain without a deadline is a usage error", []string{"drain", "web", "w1"}, true, maintOptions{}},
		{"a deadline with enable is a usage error", []string{"enable", "web", "w1", "--deadline", "1m"}, true, maintOptions{}},
		{"an unknown action is a usage error", []string{"pause", "web", "w1"}, true, maintOptions{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got *maintOptions
			c := newMaintCmd(testFactory(), func(_ context.Context, o *maintOptions) error { got = o; return nil })
			c.SetArgs(tc.args)
			c.SetOut(&bytes.Buffer{})
			c.SetErr(&bytes.Buffer{})
			err := c.Execute()
			var ue usageError
			if tc.usage != errors.As(err, &ue) {
				t.Fatalf("err %v, want usage error %v", err, tc.usage)
			}
			if tc.usage {
				return
			}
			if got.action != tc.want.action || got.service != tc.want.service || got.id != tc.want.id || got.reason != tc.want.reason || got.deadline != tc.want.deadline {
				t.Fatalf("parsed %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestChecksCommandRejectsAnUnknownStatus(t *testing.T) {
	c := newChecksCmd(testFactory(), func(context.Context, *checksOptions) error { return nil })
	c.SetArgs([]string{"--status", "sick"})
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	var ue usageError
	if err := c.Execute(); !errors.As(err, &ue) {
		t.Fatalf("got %v, want a usage error", err)
	}
}
