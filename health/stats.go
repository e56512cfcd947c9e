package health

import "sync/atomic"

// Stats are counters of the health subsystem on one agent, for metrics.
type Stats struct {
	// RunningChecks is how many checks this node probes now.
	RunningChecks int64
	// Probes counts probes run; ProbesFailed those that did not pass.
	Probes       uint64
	ProbesFailed uint64
	// Proposals counts status changes proposed by this node's runner or, on
	// the leader, for TTL checks; ProposalErrors those that failed.
	Proposals      uint64
	ProposalErrors uint64
	// FlapEpisodes counts checks that started flapping (runner and TTL).
	FlapEpisodes uint64
	// TTLReports counts TTL reports handled by this node as leader;
	// TTLExpiries the TTLs that ran out.
	TTLReports  uint64
	TTLExpiries uint64
	// TTLTimers is how many entries this node's TTL timer heap holds as
	// leader (0 otherwise): one per TTL check not expired since its last
	// report, plus, until their time comes, those of checks gone or
	// redefined and those armed with a new leader's grace before a report
	// moved the deadline earlier.
	TTLTimers int64
	// TTLTrackers is how many TTL checks hold a tracker on this node as
	// leader (0 otherwise): those whose results hold something the catalog
	// does not yet (a write to retry, a status change inside the flap
	// window, a flapping episode). A calm check holds none.
	TTLTrackers int64
	// MetricsWrites counts instances whose custom metrics were replicated.
	MetricsWrites uint64
	// Reassignments counts checks given a new owner by this node as leader.
	Reassignments uint64
	// DeregisteredCritical and DeregisteredDrained count instances removed
	// by this node as leader after deregister_critical_after or a drain deadline.
	DeregisteredCritical uint64
	DeregisteredDrained  uint64
	// FullScans counts the scans by this node as leader that read every
	// check; ScannedChecks the checks its scans read, full or not.
	FullScans     uint64
	ScannedChecks uint64
}

type counters struct {
	running, ttlTimers, ttlTrackers           atomic.Int64
	probes, probesFailed                      atomic.Uint64
	proposals, proposalErrors                 atomic.Uint64
	flapEpisodes                              atomic.Uint64
	ttlReports, ttlExpiries                   atomic.Uint64
	metricsWrites, reassignments              atomic.Uint64
	deregisteredCritical, deregisteredDrained atomic.Uint64
	fullScans, scannedChecks                  atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		RunningChecks: c.running.Load(),
		Probes:        c.probes.Load(), ProbesFailed: c.probesFailed.Load(),
		Proposals: c.proposals.Load(), ProposalErrors: c.proposalErrors.Load(),
		FlapEpisodes: c.flapEpisodes.Load(),
		TTLReports:   c.ttlReports.Load(), TTLExpiries: c.ttlExpiries.Load(), TTLTimers: c.ttlTimers.Load(), TTLTrackers: c.ttlTrackers.Load(),
		MetricsWrites: c.metricsWrites.Load(), Reassignments: c.reassignments.Load(),
		DeregisteredCritical: c.deregisteredCritical.Load(), DeregisteredDrained: c.deregisteredDrained.Load(),
		FullScans: c.fullScans.Load(), ScannedChecks: c.scannedChecks.Load(),
	}
}
