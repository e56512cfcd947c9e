package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// Limits on input. They are part of the public contract (docs/api.md).
const (
	MaxIDLen          = 128
	MaxServiceLen     = 63
	MaxAddressLen     = 255
	MaxTags           = 64
	MaxTagLen         = 128
	MaxMetaKeys       = 64
	MaxMetaKeyLen     = 128
	MaxMetaValueLen   = 512
	MaxVersionLen     = 64
	MaxWeight         = 10000
	MaxChecks         = 16
	MaxCheckNameLen   = 64
	MaxCheckHeaders   = 32
	MaxHeaderValueLen = 1024
	MaxThreshold      = 100
	MaxJSONDepth      = 16

	MinCheckInterval     = 100 * time.Millisecond
	MaxCheckInterval     = 24 * time.Hour
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 5 * time.Second
	MinDeregisterAfter   = time.Second
)

var (
	idPattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	servicePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	metaKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	hostPattern    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	versionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]*$`)
)

func validateID(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case len(v) > MaxIDLen:
		return invalid(field, "longer than %d characters", MaxIDLen)
	case !idPattern.MatchString(v):
		return invalid(field, "may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit")
	}
	return nil
}

func validateService(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case len(v) > MaxServiceLen:
		return invalid(field, "longer than %d characters", MaxServiceLen)
	case !servicePattern.MatchString(v):
		return invalid(field, "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit")
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

func validateHost(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case len(v) > MaxAddressLen:
		return invalid(field, "longer than %d characters", MaxAddressLen)
	case net.ParseIP(v) != nil:
		return nil
	case !hostPattern.MatchString(v):
		return invalid(field, "must be an IP address or a host name")
	}
	return nil
}

func validateHostPort(field, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return invalid(field, "must be host:port")
	}
	if err := validateHost(field, host); err != nil {
		return err
	}
	if p, err := parsePort(port); err != nil || p == 0 {
		return invalid(field, "port must be 1-65535")
	}
	return nil
}

func parsePort(s string) (int, error) {
	var p int
	if _, err := fmt.Sscanf(s, "%d", &p); err != nil || p < 0 || p > 65535 || fmt.Sprint(p) != s {
		return 0, errors.New("bad port")
	}
	return p, nil
}

// buildRegister validates a registration and turns it into a command.
func buildRegister(service, id string, r *client.Registration, now time.Time) (*fsm.RegisterRequest, error) {
	if err := validateService("service", service); err != nil {
		return nil, err
	}
	if err := validateID("id", id); err != nil {
		return nil, err
	}
	if err := validateHost("address", r.Address); err != nil {
		return nil, err
	}
	if r.Port < 1 || r.Port > 65535 {
		return nil, invalid("port", "must be 1-65535")
	}
	if len(r.Tags) > MaxTags {
		return nil, invalid("tags", "more than %d tags", MaxTags)
	}
	for i, t := range r.Tags {
		if t == "" || len(t) > MaxTagLen || !printable(t) {
			return nil, invalid(fmt.Sprintf("tags[%d]", i), "must be 1-%d printable characters", MaxTagLen)
		}
	}
	if len(r.Meta) > MaxMetaKeys {
		return nil, invalid("meta", "more than %d keys", MaxMetaKeys)
	}
	for k, v := range r.Meta {
		if len(k) > MaxMetaKeyLen || !metaKeyPattern.MatchString(k) {
			return nil, invalid("meta", "key %q: 1-%d letters, digits, '.', '_', '/' or '-'", truncateForError(k), MaxMetaKeyLen)
		}
		if len(v) > MaxMetaValueLen || !printable(v) {
			return nil, invalid("meta."+k, "value must be at most %d printable characters", MaxMetaValueLen)
		}
	}
	if r.Version != "" && (len(r.Version) > MaxVersionLen || !versionPattern.MatchString(r.Version)) {
		return nil, invalid("version", "must be at most %d characters of letters, digits, '.', '+', '_' or '-'", MaxVersionLen)
	}
	weight := r.Weight
	if weight == 0 {
		weight = 1
	}
	if weight < 1 || weight > MaxWeight {
		return nil, invalid("weight", "must be 1-%d", MaxWeight)
	}
	if r.Node != "" {
		if err := validateID("node", r.Node); err != nil {
			return nil, err
		}
	}
	if len(r.Checks) > MaxChecks {
		return nil, invalid("checks", "more than %d checks", MaxChecks)
	}
	req := &fsm.RegisterRequest{
		ID: id, Service: service, Address: r.Address, Port: r.Port,
		Tags: r.Tags, Meta: r.Meta, Version: r.Version, Weight: weight, Node: r.Node,
		Time: now.UnixNano(),
	}
	names := map[string]bool{}
	for i := range r.Checks {
		def, err := buildCheck(fmt.Sprintf("checks[%d]", i), &r.Checks[i], i)
		if err != nil {
			return nil, err
		}
		if names[def.Name] {
			return nil, invalid(fmt.Sprintf("checks[%d].name", i), "duplicate check name %q", def.Name)
		}
		names[def.Name] = true
		req.Checks = append(req.Checks, def)
	}
	return req, nil
}

func truncateForError(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// buildCheck validates one check definition and fills in defaults.
func buildCheck(field string, c *client.CheckDefinition, i int) (fsm.CheckDefinition, error) {
	var def fsm.CheckDefinition
	set := 0
	for _, v := range []bool{c.HTTP != "", c.TCP != "", c.GRPC != "", c.TTL != 0} {
		if v {
			set++
		}
	}
	if set != 1 {
		return def, invalid(field, "exactly one of http, tcp, grpc or ttl must be set")
	}
	switch {
	case c.HTTP != "":
		def.Type, def.Target = fsm.CheckHTTP, c.HTTP
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return def, invalid(field+".http", "must be an http:// or https:// URL with a host")
		}
		if u.Port() != "" {
			if p, err := parsePort(u.Port()); err != nil || p == 0 {
				return def, invalid(field+".http", "port must be 1-65535")
			}
		}
		if len(c.HTTP) > 2048 || !printable(c.HTTP) {
			return def, invalid(field+".http", "must be at most 2048 printable characters")
		}
		def.Method = strings.ToUpper(c.Method)
		if def.Method == "" {
			def.Method = http.MethodGet
		}
		switch def.Method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodOptions:
		default:
			return def, invalid(field+".method", "must be GET, HEAD, POST, PUT or OPTIONS")
		}
		if len(c.Header) > MaxCheckHeaders {
			return def, invalid(field+".header", "more than %d headers", MaxCheckHeaders)
		}
		for k, vs := range c.Header {
			if k == "" || !metaKeyPattern.MatchString(k) || len(k) > MaxMetaKeyLen {
				return def, invalid(field+".header", "bad header name %q", truncateForError(k))
			}
			for _, v := range vs {
				if len(v) > MaxHeaderValueLen || !printable(v) {
					return def, invalid(field+".header."+k, "value must be at most %d printable characters", MaxHeaderValueLen)
				}
			}
		}
		def.Header = c.Header
		def.TLSSkipVerify = c.TLSSkipVerify
	case c.TCP != "":
		def.Type, def.Target = fsm.CheckTCP, c.TCP
		if err := validateHostPort(field+".tcp", c.TCP); err != nil {
			return def, err
		}
	case c.GRPC != "":
		def.Type, def.Target, def.GRPCService = fsm.CheckGRPC, c.GRPC, c.GRPCService
		if err := validateHostPort(field+".grpc", c.GRPC); err != nil {
			return def, err
		}
		if len(c.GRPCService) > 256 || !printable(c.GRPCService) {
			return def, invalid(field+".grpc_service", "must be at most 256 printable characters")
		}
	default:
		def.Type = fsm.CheckTTL
		def.TTL = int64(c.TTL)
		if c.TTL < client.Duration(MinCheckInterval) || c.TTL > client.Duration(MaxCheckInterval) {
			return def, invalid(field+".ttl", "must be between %s and %s", MinCheckInterval, MaxCheckInterval)
		}
	}
	if c.Type != "" && c.Type != string(def.Type) {
		return def, invalid(field+".type", "is %q but the check's target is for %q", c.Type, def.Type)
	}
	def.Name = c.Name
	if def.Name == "" {
		def.Name = string(def.Type)
		if i > 0 {
			def.Name = fmt.Sprintf("%s-%d", def.Type, i)
		}
	}
	if len(def.Name) > MaxCheckNameLen || !idPattern.MatchString(def.Name) {
		return def, invalid(field+".name", "must be 1-%d letters, digits, '.', '_' or '-'", MaxCheckNameLen)
	}
	interval := time.Duration(c.Interval)
	if interval == 0 {
		interval = DefaultCheckInterval
	}
	if def.Type != fsm.CheckTTL && (interval < MinCheckInterval || interval > MaxCheckInterval) {
		return def, invalid(field+".interval", "must be between %s and %s", MinCheckInterval, MaxCheckInterval)
	}
	def.Interval = int64(interval)
	timeout := time.Duration(c.Timeout)
	if timeout == 0 {
		timeout = min(DefaultCheckTimeout, interval)
	}
	if timeout <= 0 || (def.Type != fsm.CheckTTL && timeout > interval) {
		return def, invalid(field+".timeout", "must be positive and at most the interval")
	}
	def.Timeout = int64(timeout)
	def.FailuresBeforeCritical, def.SuccessesBeforePassing = c.FailuresBeforeCritical, c.SuccessesBeforePassing
	if def.FailuresBeforeCritical == 0 {
		def.FailuresBeforeCritical = 1
	}
	if def.SuccessesBeforePassing == 0 {
		def.SuccessesBeforePassing = 1
	}
	if def.FailuresBeforeCritical < 1 || def.FailuresBeforeCritical > MaxThreshold {
		return def, invalid(field+".failures_before_critical", "must be 1-%d", MaxThreshold)
	}
	if def.SuccessesBeforePassing < 1 || def.SuccessesBeforePassing > MaxThreshold {
		return def, invalid(field+".successes_before_passing", "must be 1-%d", MaxThreshold)
	}
	def.InitialStatus = fsm.Health(c.InitialStatus)
	if def.InitialStatus == "" {
		def.InitialStatus = fsm.Critical
	}
	if !def.InitialStatus.Valid() {
		return def, invalid(field+".initial_status", "must be passing, warning or critical")
	}
	if c.DeregisterCriticalAfter != 0 && time.Duration(c.DeregisterCriticalAfter) < MinDeregisterAfter {
		return def, invalid(field+".deregister_critical_after", "must be at least %s", MinDeregisterAfter)
	}
	def.DeregisterCriticalAfter = int64(c.DeregisterCriticalAfter)
	return def, nil
}

// decodeBody reads a JSON body of at most MaxBodyBytes into v. Unknown
// fields, duplicate keys, nesting deeper than MaxJSONDepth and trailing data
// are all rejected with a 400 that says what was wrong.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return &statusError{http.StatusBadRequest, "bad_body", "cannot read request body: " + err.Error()}
	}
	return decodeJSON(body, v)
}

// decodeJSON is the strict decoder behind decodeBody.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &statusError{http.StatusBadRequest, "bad_json", "request body is empty; a JSON object is required"}
	}
	if err := checkJSON(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute):
			return invalid(ute.Field, "must be a JSON %s", ute.Type.Kind())
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return invalid(f, "unknown field")
		}
		return &statusError{http.StatusBadRequest, "bad_json", "invalid JSON: " + err.Error()}
	}
	if dec.More() {
		return &statusError{http.StatusBadRequest, "bad_json", "unexpected data after the JSON value"}
	}
	return nil
}

// checkJSON rejects duplicate object keys and excessive nesting, which the
// standard decoder accepts silently.
func checkJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		object bool
		keys   map[string]struct{}
		expect bool // next string token in an object is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &statusError{http.StatusBadRequest, "bad_json", "invalid JSON: " + err.Error()}
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			top := &stack[len(stack)-1]
			if top.expect {
				if key, ok := tok.(string); ok {
					if _, dup := top.keys[key]; dup {
						return invalid(key, "duplicate key")
					}
					top.keys[key] = struct{}{}
					top.expect = false
					continue
				}
			} else if d, ok := tok.(json.Delim); !ok || d == '{' || d == '[' {
				top.expect = true // a value: the next string is a key again
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, keys: map[string]struct{}{}, expect: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].expect = true
			}
		}
		if len(stack) > MaxJSONDepth {
			return &statusError{http.StatusBadRequest, "bad_json", fmt.Sprintf("JSON nested deeper than %d levels", MaxJSONDepth)}
		}
	}
}
