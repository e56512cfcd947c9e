// Package dns answers discovery queries over DNS (UDP and TCP) from the
// node's local catalog, for programs that only know how to resolve names:
//
//	NAME.service.beacon.          A, AAAA and SRV records of NAME's healthy instances
//	TAG.NAME.service.beacon.      the same, only instances carrying TAG
//	_NAME._TAG.service.beacon.    RFC 2782 form (_tcp or _udp as TAG means any tag)
//	HEX.addr.beacon.              the IP address HEX encodes (SRV targets)
//
// Only healthy instances (passing, not in maintenance, not draining) are
// answered, in an order shuffled for every answer. A and AAAA records come
// from instances whose address is an IP; an instance registered with a host
// name appears only in SRV answers, with that host name as the target. A
// name that no registered instance matches is NXDOMAIN; a name whose
// instances are all unhealthy is an empty answer (NOERROR). Every record
// carries the configured TTL.
//
// A UDP answer that does not fit the client's buffer (512 bytes, or the
// EDNS0 size it advertises, up to Config.MaxUDPSize) keeps the records that
// fit and sets the TC bit; the same question over TCP gets every record.
//
// With Config.Authorize set, a service query it refuses is REFUSED (the
// agent's token rules: with anonymous reads off, only a configured DNS
// token opens service queries); HEX.addr names and the apex carry no
// catalog data and are always answered.
//
// A node that has not heard from the Raft leader for longer than
// Config.MaxStale answers SERVFAIL rather than possibly stale records,
// unless Config.AllowStale is set.
//
// The package sees the cluster only through the Freshness interface; cmd
// wires in the node.
package dns
