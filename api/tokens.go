package api

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// Limits on token requests (docs/api.md).
const (
	MaxTokenPrefixes       = 64
	MaxTokenDescriptionLen = 256
	// TokenSecretPrefix starts every secret Beacon makes, so that secret
	// scanners and people recognise one.
	TokenSecretPrefix = "bcn_"
)

// prefixPattern is the start of a service name: lowercase letters, digits
// and '-', not starting with '-'. The empty prefix covers every service.
var prefixPattern = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*)?$`)

var errAuthDisabled = &statusError{http.StatusConflict, "auth_disabled", "tokens need auth: start every agent with --management-token"}

// buildToken validates a token request.
func buildToken(req *client.TokenRequest) (policy string, prefixes []string, desc string, err error) {
	switch req.Policy {
	case PolicyRead:
		if len(req.Prefixes) > 0 {
			return "", nil, "", invalid("prefixes", "a read token has no prefixes (it reads every service)")
		}
	case PolicyWrite:
		if len(req.Prefixes) == 0 {
			return "", nil, "", invalid("prefixes", "a write token needs at least one service-name prefix (\"\" for every service)")
		}
	case PolicyManagement:
		return "", nil, "", invalid("policy", "the management token is set by configuration (--management-token), not created")
	default:
		return "", nil, "", invalid("policy", "must be read or write")
	}
	if len(req.Prefixes) > MaxTokenPrefixes {
		return "", nil, "", invalid("prefixes", "more than %d prefixes", MaxTokenPrefixes)
	}
	seen := map[string]bool{}
	for i, p := range req.Prefixes {
		field := fmt.Sprintf("prefixes[%d]", i)
		if utf8.RuneCountInString(p) > MaxServiceLen {
			return "", nil, "", invalid(field, "longer than %d characters", MaxServiceLen)
		}
		if !prefixPattern.MatchString(p) {
			return "", nil, "", invalid(field, "must be the start of a service name: lowercase letters, digits and '-', not starting with '-'")
		}
		if seen[p] {
			return "", nil, "", invalid(field, "duplicate prefix %q", p)
		}
		seen[p] = true
	}
	if utf8.RuneCountInString(req.Description) > MaxTokenDescriptionLen {
		return "", nil, "", invalid("description", "longer than %d characters", MaxTokenDescriptionLen)
	}
	// The JSON decoder turns invalid UTF-8 into U+FFFD; refuse it here.
	if !printable(req.Description) || strings.ContainsRune(req.Description, utf8.RuneError) {
		return "", nil, "", invalid("description", "must be printable UTF-8 without control characters")
	}
	return req.Policy, req.Prefixes, req.Description, nil
}

// newAccessor returns a random accessor in UUID form.
func newAccessor() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newSecret returns a random secret with 130 bits of entropy.
func newSecret() string { return TokenSecretPrefix + rand.Text() }

// handleTokenCreate: POST /v1/tokens (management). The answer carries the
// secret, the only time it is shown.
func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Auth.Enabled() {
		writeError(w, errAuthDisabled)
		return
	}
	var body client.TokenRequest
	if err := s.decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	policy, prefixes, desc, err := buildToken(&body)
	if err != nil {
		writeError(w, err)
		return
	}
	secret := newSecret()
	t := fsm.Token{
		Accessor: newAccessor(), SecretHash: hex.EncodeToString(HashToken(secret)),
		Description: desc, Policy: policy, Prefixes: prefixes,
	}
	cmd, err := fsm.Encode(fsm.TokenSetType, &fsm.TokenSetRequest{Token: t})
	if err != nil {
		writeError(w, err)
		return
	}
	idx, err := s.cluster.Apply(r.Context(), cmd)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	w.Header().Set("Cache-Control", "no-store")
	t.CreateIndex, t.ModifyIndex = idx, idx
	writeJSON(w, client.TokenCreated{Token: toToken(&t), Secret: secret, Index: idx})
}

// handleTokenList: GET /v1/tokens (management), without secrets or hashes.
func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Auth.Enabled() {
		writeError(w, errAuthDisabled)
		return
	}
	var toks []*fsm.Token
	s.runQueryFuncs(w, r, queryOf(r), func(ws memdb.WatchSet) (uint64, error) {
		var idx uint64
		idx, toks = s.store.Tokens(ws)
		return idx, nil
	}, nil, func(w http.ResponseWriter) {
		out := make([]client.Token, 0, len(toks))
		for _, t := range toks {
			out = append(out, toToken(t))
		}
		writeJSON(w, out)
	})
}

// handleTokenDelete: DELETE /v1/tokens/{accessor} (management). Deleting a
// token that does not exist is 404 not_found (the FSM decides, at apply):
// nothing was revoked, and nothing is audited.
func (s *Server) handleTokenDelete(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Auth.Enabled() {
		writeError(w, errAuthDisabled)
		return
	}
	acc := r.PathValue("accessor")
	if err := validateID("accessor", acc); err != nil {
		writeError(w, err)
		return
	}
	if acc == AccessorManagement {
		writeError(w, invalid("accessor", "the management token is set by configuration; change --management-token on every agent to rotate it"))
		return
	}
	if err := s.decodeOptionalBody(w, r, &struct{}{}); err != nil { // see handleDeregister
		writeError(w, err)
		return
	}
	s.apply(w, r, fsm.TokenDeleteType, &fsm.TokenDeleteRequest{Accessor: acc})
}

func toToken(t *fsm.Token) client.Token {
	p := t.Prefixes
	if p == nil {
		p = []string{}
	}
	return client.Token{
		Accessor: t.Accessor, Policy: t.Policy, Prefixes: p, Description: t.Description,
		CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex,
	}
}
