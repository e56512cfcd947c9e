package dns

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/beaconhq/beacon/fsm"
)

// ServeDNS answers one query. It implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := s.answer(req)
	tcp := false
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		tcp = true
	}
	s.fit(req, m, tcp)
	if err := w.WriteMsg(m); err != nil {
		s.logger.Debug("dns write failed", "remote", w.RemoteAddr().String(), "error", err)
	}
}

// fit sizes the answer for its transport: over UDP it keeps what fits the
// client's buffer (512 bytes, or its EDNS0 size up to MaxUDPSize) and sets
// TC when answer records had to go; over TCP everything up to 64 KiB.
func (s *Server) fit(req, m *dns.Msg, tcp bool) {
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		size = min(size, s.cfg.MaxUDPSize)
		m.SetEdns0(uint16(size), false)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	answers := len(m.Answer)
	m.Truncate(size)
	// RFC 2181 section 9: dropping only additional records (the addresses of
	// SRV targets, which a client can look up) is not truncation.
	if len(m.Answer) == answers {
		m.Truncated = false
	}
}

// answer builds the reply to req, before sizing.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name != s.domain && !strings.HasSuffix(name, "."+s.domain) {
		// Not our zone, and we do not recurse.
		m.Authoritative = false
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	labels := dns.SplitDomainName(strings.TrimSuffix(strings.TrimSuffix(name, s.domain), "."))
	switch {
	case len(labels) == 0:
		s.apex(m, q)
	case len(labels) == 2 && labels[1] == "addr":
		s.addrLookup(m, q, labels[0])
	case len(labels) >= 2 && len(labels) <= 3 && labels[len(labels)-1] == "service":
		svc, tag, ok := parseService(labels[:len(labels)-1])
		if !ok {
			s.nxdomain(m)
			return m
		}
		if s.cfg.Authorize != nil {
			if err := s.cfg.Authorize(svc); err != nil {
				s.logger.Debug("dns refusing a service query", "service", svc, "error", err)
				m.SetRcode(req, dns.RcodeRefused)
				return m
			}
		}
		if d, ok := s.fresh.(diverger); ok && d.Diverged() {
			// This server holds a catalog the cluster never committed
			// (cluster.Node.Diverged): no answer, stale or not.
			m.SetRcode(req, dns.RcodeServerFailure)
			return m
		}
		if !s.cfg.AllowStale {
			if lc := s.fresh.LastContact(); lc > s.cfg.MaxStale {
				s.logger.Debug("dns refusing a stale answer", "last_contact", lc, "max_stale", s.cfg.MaxStale)
				m.SetRcode(req, dns.RcodeServerFailure)
				return m
			}
		}
		s.service(m, q, svc, tag)
	default:
		s.nxdomain(m)
	}
	return m
}

// parseService reads [TAG.]NAME or _NAME._TAG (where _tcp and _udp mean no tag).
func parseService(labels []string) (service, tag string, ok bool) {
	if len(labels) == 2 && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_") {
		service, tag = labels[0][1:], labels[1][1:]
		if tag == "tcp" || tag == "udp" {
			tag = ""
		}
		return service, tag, service != "" && tag != "_"
	}
	if len(labels) == 2 {
		return labels[1], labels[0], true
	}
	return labels[0], "", true
}

// service answers NAME (and TAG) with the healthy instances' records.
func (s *Server) service(m *dns.Msg, q dns.Question, service, tag string) {
	// A registration this node acknowledged a moment ago is answered here
	// too (fsm.Store.WaitAcked), within a resolver's patience; a node that
	// cannot apply it fails rather than answer without it.
	if !s.store.WaitAcked(context.Background(), time.Second) {
		m.Rcode = dns.RcodeServerFailure
		return
	}
	_, insts := s.store.ServiceInstances(nil, service)
	exists := false
	healthy := insts[:0:0]
	for _, i := range insts {
		if tag != "" && !hasTagFold(i, tag) {
			continue
		}
		exists = true
		if i.Healthy() {
			healthy = append(healthy, i)
		}
	}
	if !exists {
		s.nxdomain(m)
		return
	}
	rand.Shuffle(len(healthy), func(a, b int) { healthy[a], healthy[b] = healthy[b], healthy[a] })
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		seen := map[string]bool{}
		for _, i := range healthy {
			ip := net.ParseIP(i.Address)
			if ip == nil || seen[ip.String()] {
				continue // host names are answered in SRV records only
			}
			if rr := s.addrRR(q.Name, ip, q.Qtype); rr != nil {
				seen[ip.String()] = true
				m.Answer = append(m.Answer, rr)
			}
		}
	case dns.TypeSRV:
		extra := map[string]bool{}
		for _, i := range healthy {
			target := dns.Fqdn(i.Address)
			ip := net.ParseIP(i.Address)
			if ip != nil {
				target = ipLabel(ip) + ".addr." + s.domain
			}
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      s.hdr(q.Name, dns.TypeSRV),
				Priority: 1, Weight: uint16(min(max(i.Weight, 1), 65535)), Port: uint16(i.Port),
				Target: target,
			})
			if ip != nil && !extra[target] {
				extra[target] = true
				m.Extra = append(m.Extra, s.addrRR(target, ip, dns.TypeANY))
			}
		}
	}
	if len(m.Answer) == 0 {
		s.soa(m)
	}
}

func hasTagFold(i *fsm.Instance, tag string) bool {
	for _, t := range i.Tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// addrLookup answers HEX.addr with the address it encodes.
func (s *Server) addrLookup(m *dns.Msg, q dns.Question, label string) {
	b, err := hex.DecodeString(label)
	if err != nil || (len(b) != net.IPv4len && len(b) != net.IPv6len) {
		s.nxdomain(m)
		return
	}
	if rr := s.addrRR(q.Name, net.IP(b), q.Qtype); rr != nil {
		m.Answer = append(m.Answer, rr)
		return
	}
	s.soa(m)
}

// addrRR returns an A or AAAA record for ip when it suits qtype (ANY suits
// both), else nil.
func (s *Server) addrRR(name string, ip net.IP, qtype uint16) dns.RR {
	if v4 := ip.To4(); v4 != nil {
		if qtype != dns.TypeA && qtype != dns.TypeANY {
			return nil
		}
		return &dns.A{Hdr: s.hdr(name, dns.TypeA), A: v4}
	}
	if qtype != dns.TypeAAAA && qtype != dns.TypeANY {
		return nil
	}
	return &dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: ip}
}

// ipLabel encodes ip as hex: 8 digits for IPv4, 32 for IPv6.
func ipLabel(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return hex.EncodeToString(v4)
	}
	return hex.EncodeToString(ip.To16())
}

func (s *Server) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
}

// apex answers the zone's own name: its SOA, nothing else.
func (s *Server) apex(m *dns.Msg, q dns.Question) {
	if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, s.soaRR())
		return
	}
	s.soa(m)
}

func (s *Server) nxdomain(m *dns.Msg) {
	m.Rcode = dns.RcodeNameError
	s.soa(m)
}

// soa adds the zone's SOA to the authority section, so that resolvers cache
// a negative answer for at most the TTL.
func (s *Server) soa(m *dns.Msg) { m.Ns = append(m.Ns, s.soaRR()) }

func (s *Server) soaRR() dns.RR {
	return &dns.SOA{
		Hdr: s.hdr(s.domain, dns.TypeSOA),
		Ns:  "ns." + s.domain, Mbox: "hostmaster." + s.domain,
		Serial: uint32(s.store.AppliedIndex()), Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.ttl,
	}
}
