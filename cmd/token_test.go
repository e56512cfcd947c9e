package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cmd"
)

const testManagementToken = "test-management-token-0123456789"

func TestTokenCommandsCreateListAndDelete(t *testing.T) {
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.ManagementToken, c.ClusterSecret, c.AnonymousRead = testManagementToken, "test-cluster-secret-abcdef-0123456789", true
	}))
	addr := c.Node(0).HTTPAddr()
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		f := &cmd.Factory{Out: &out, Err: &errb, Getenv: func(k string) string {
			return map[string]string{"BEACON_ADDR": addr, "BEACON_TOKEN": testManagementToken}[k]
		}}
		root := cmd.NewRootCmd(f)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run("token", "create", "--policy", "write", "--prefix", "web-", "--prefix", "api-", "--description", "ci deployer", "-o", "json")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var created client.TokenCreated
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Secret == "" || len(created.Prefixes) != 2 {
		t.Fatalf("create output %q: %v", out, err)
	}
	out, err = run("token", "list")
	if err != nil || !strings.Contains(out, created.Accessor) || !strings.Contains(out, `"web-","api-"`) || strings.Contains(out, created.Secret) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if _, err := run("token", "delete", created.Accessor); err != nil {
		t.Fatalf("delete: %v", err)
	}
	out, err = run("token", "list", "-o", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after delete: %v %q", err, out)
	}
	// A read token cannot manage tokens.
	out, err = run("token", "create", "--policy", "read", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(out), &created)
	var o2, e2 bytes.Buffer
	f := &cmd.Factory{Out: &o2, Err: &e2, Getenv: func(k string) string {
		return map[string]string{"BEACON_ADDR": addr, "BEACON_TOKEN": created.Secret}[k]
	}}
	root := cmd.NewRootCmd(f)
	root.SetArgs([]string{"token", "list"})
	if err := root.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Fatalf("token list with a read token: %v", err)
	}
}
