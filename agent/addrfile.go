package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// AddrFile is what an agent writes to Config.AddrFile once it serves: for
// each listener the address it bound (with the port the kernel picked when
// port 0 was asked for) and the address it advertises to peers and clients.
// DNS, LB and LBAdmin are present only when those listeners run.
type AddrFile struct {
	Node    string    `json:"node"`
	HTTP    AddrPair  `json:"http"`
	Cluster AddrPair  `json:"cluster"`
	Gossip  AddrPair  `json:"gossip"`
	DNS     *AddrPair `json:"dns,omitempty"`
	LB      *AddrPair `json:"lb,omitempty"`
	LBAdmin *AddrPair `json:"lb_admin,omitempty"`
}

// AddrPair is one listener's bound and advertised address (host:port).
type AddrPair struct {
	Bind      string `json:"bind"`
	Advertise string `json:"advertise"`
}

// ReadAddrFile reads a file an agent wrote for Config.AddrFile.
func ReadAddrFile(path string) (AddrFile, error) {
	var af AddrFile
	b, err := os.ReadFile(path)
	if err != nil {
		return af, err
	}
	if err := json.Unmarshal(b, &af); err != nil {
		return af, fmt.Errorf("agent: address file %s: %w", path, err)
	}
	return af, nil
}

// addrs returns the addresses the running agent bound and advertises.
func (a *Agent) addrs(httpAdv string) AddrFile {
	af := AddrFile{
		Node:    a.cfg.Node,
		HTTP:    AddrPair{Bind: a.HTTPAddr(), Advertise: httpAdv},
		Cluster: AddrPair{Bind: a.node.ClusterBindAddr(), Advertise: a.node.ClusterAddr()},
		Gossip:  AddrPair{Bind: a.node.GossipBindAddr(), Advertise: a.node.GossipAddr()},
	}
	if d := a.DNSAddr(); d != "" {
		af.DNS = &AddrPair{Bind: d, Advertise: d}
	}
	if l := a.LBAddr(); l != "" {
		af.LB = &AddrPair{Bind: l, Advertise: l}
	}
	if l := a.LBAdminAddr(); l != "" {
		af.LBAdmin = &AddrPair{Bind: l, Advertise: l}
	}
	return af
}

// writeAddrFile writes Config.AddrFile, if set: to a temporary file in the
// same directory, then renamed over the path, so a reader sees either no
// file (or an older one) or the whole new one, never a partial write.
func (a *Agent) writeAddrFile(httpAdv string) error {
	path := a.cfg.AddrFile
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(a.addrs(httpAdv), "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("agent: address file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("agent: address file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("agent: address file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("agent: address file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("agent: address file: %w", err)
	}
	a.wroteAddrFile = true
	return nil
}

// removeAddrFile removes the address file this agent wrote, at shutdown:
// the addresses in it no longer answer.
func (a *Agent) removeAddrFile() {
	if !a.wroteAddrFile {
		return
	}
	if err := os.Remove(a.cfg.AddrFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.logger.Warn("cannot remove the address file", "path", a.cfg.AddrFile, "error", err)
	}
}
