package uitest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/chromedp/chromedp"
)

// TestTheUIActsOverHTTPS drains an instance from the UI of an agent that
// serves HTTPS: the page's write carries Origin https://HOST:PORT, the
// agent's own origin (it was refused as cross-site while net/http could not
// see the TLS connection under the connection cap's wrapper).
func TestTheUIActsOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := agent.CreateCA(dir, 30, "UI test CA"); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.CreateCert(agent.CertRequest{Node: "node1", Dir: dir, Days: 30,
		CAFile: filepath.Join(dir, "beacon-ca.pem"), CAKeyFile: filepath.Join(dir, "beacon-ca-key.pem")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "beacon-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	caCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, c.Node+".pem"), filepath.Join(dir, c.Node+"-key.pem")
		c.TLSCAFile = filepath.Join(dir, "beacon-ca.pem")
	}), agenttest.WithClient(func(cc *client.Config) {
		cc.Addresses = []string{"https://" + cc.Addresses[0]}
		cc.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}))
	c.WaitForLeader()
	register(t, c.Client(0), "web", "web-2", &client.Registration{Address: "127.0.0.2", Port: 8080,
		Checks: []client.CheckDefinition{{Name: "heartbeat", TTL: client.Duration(time.Hour), InitialStatus: "passing"}}})

	br := newBrowser(t, 1280, 800, chromedp.Flag("ignore-certificate-errors", true))
	br.do(30*time.Second, chromedp.Navigate("https://"+c.Node(0).HTTPAddr()+"/ui/#/services/web/web-2"))
	br.waitJS(60*time.Second, `document.querySelector('.actionbar button[data-action="drain"]') !== null`, "the actions")
	drainFromUI(br, "10m")
	br.waitJS(10*time.Second, `!document.querySelector('#confirm-dialog').open && document.querySelector('main .badge.draining') !== null`, "the drain shown")
	if in := instance(t, c.Client(0), "web", "web-2"); in.Draining == nil {
		t.Fatalf("the API shows no drain: %+v", in)
	}
}
