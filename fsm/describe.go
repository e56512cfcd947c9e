package fsm

import (
	"strconv"
	"strings"
)

// Command is a decoded catalog command. The FSM decodes each log entry once
// and hands the command to observers (Applied.Cmd) and to the proposer
// (ApplyResult.Cmd), so that metrics and the audit log never decode it
// again.
type Command interface {
	// Describe returns key/value pairs that say what the command does, for
	// an audit line. It never returns secrets (a token command carries only
	// a hash of the secret, and Describe leaves even that out).
	Describe() []any
}

// maxDescribed bounds the items listed in one description.
const maxDescribed = 16

// Describe implements Command.
func (r *RegisterRequest) Describe() []any {
	return []any{"service", r.Service, "instance", r.ID, "address", r.Address, "port", r.Port, "checks", len(r.Checks)}
}

// Describe implements Command.
func (r *DeregisterRequest) Describe() []any {
	return []any{"service", r.Service, "instance", r.ID}
}

// Describe implements Command.
func (r *MaintenanceRequest) Describe() []any {
	return []any{"service", r.Service, "instance", r.ID, "mode", r.Mode, "reason", r.Reason}
}

// Describe implements Command.
func (r *CheckUpdateRequest) Describe() []any {
	parts := make([]string, 0, min(len(r.Updates), maxDescribed+1))
	for i, u := range r.Updates {
		if i == maxDescribed {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, u.Check+"="+string(u.Status))
	}
	return []any{"checks", strings.Join(parts, ",")}
}

// Describe implements Command.
func (r *AssignChecksRequest) Describe() []any {
	return []any{"assignments", len(r.Assignments)}
}

// Describe implements Command.
func (r *NodeUpdateRequest) Describe() []any {
	parts := make([]string, 0, min(len(r.Upserts), maxDescribed+1))
	for i, n := range r.Upserts {
		if i == maxDescribed {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, n.Name+"="+string(n.Status))
	}
	return []any{"nodes", strings.Join(parts, ","), "removed", strings.Join(r.Removes, ",")}
}

// Describe implements Command.
func (r *MetricsRequest) Describe() []any {
	return []any{"instances", strconv.Itoa(len(r.Updates))}
}

// Describe implements Command.
func (r *TokenSetRequest) Describe() []any {
	return []any{"token", r.Token.Accessor, "policy", r.Token.Policy, "prefixes", strings.Join(r.Token.Prefixes, ",")}
}

// Describe implements Command.
func (r *TokenDeleteRequest) Describe() []any {
	return []any{"token", r.Accessor}
}

// Describe implements Command.
func (r *CatalogRegisterRequest) Describe() []any {
	out := []any{"node", r.Node, "address", r.Address}
	if r.Service != nil {
		out = append(out, r.Service.Describe()...)
	}
	return out
}

// Describe implements Command.
func (r *CatalogDeregisterRequest) Describe() []any {
	if r.Check != "" {
		return []any{"node", r.Node, "check", r.Check}
	}
	return []any{"node", r.Node}
}
