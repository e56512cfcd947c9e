package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
)

// hostileCase is a request the API must refuse without changing the catalog.
type hostileCase struct {
	name   string
	method string // default PUT
	target string // default instancePath, the existing instance web-1
	body   string
	// The answer: status, error code and (for validation errors) field.
	status int
	code   string
	field  string
	// reachesFSM is set for requests that are valid as far as the API can
	// tell and are refused by the FSM (missing instances): they take a log entry
	// but change no record.
	reachesFSM bool
	// allow is the Allow header a 405 must carry.
	allow string
}

const instancePath = "/v1/services/web/instances/web-1"

// validBody is a registration the API accepts; the cases change it.
func validBody() map[string]any {
	return map[string]any{"address": "10.0.0.9", "port": 9090, "tags": []string{"v9"}, "meta": map[string]any{"zone": "z9"}}
}

// body returns validBody changed by set (a nil value deletes the key).
func body(set map[string]any) string {
	m := validBody()
	for k, v := range set {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// withCheck returns a valid body with the given checks.
func withChecks(checks ...map[string]any) string {
	return body(map[string]any{"checks": checks})
}

func repeat[T any](n int, f func(i int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func manyMeta(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func httpCheck(url string) map[string]any { return map[string]any{"http": url} }

func invalidCase(name, body, field string) hostileCase {
	return hostileCase{name: name, body: body, status: http.StatusBadRequest, code: "invalid", field: field}
}

func badJSONCase(name, body string) hostileCase {
	return hostileCase{name: name, body: body, status: http.StatusBadRequest, code: "bad_json"}
}

func badPathCase(name, target, field string) hostileCase {
	return hostileCase{name: name, target: target, body: body(nil), status: http.StatusBadRequest, code: "invalid", field: field}
}

func badQueryCase(name, target, field string) hostileCase {
	return hostileCase{name: name, method: http.MethodGet, target: target, status: http.StatusBadRequest, code: "invalid", field: field}
}

func badJoinCase(name, body, field string) hostileCase {
	return hostileCase{name: name, method: http.MethodPost, target: "/v1/cluster/join", body: body, status: http.StatusBadRequest, code: "invalid", field: field}
}

var big = strings.Repeat

// hostileCases is the table of TestHostileInput, and the fuzz tests' seeds.
var hostileCases = []hostileCase{
	// The body as a whole.
	{name: "a body over 64 KiB of valid JSON is too large", body: `{"address":"10.0.0.9","port":9090,"meta":{"k":"` + big("a", 70000) + `"}}`, status: http.StatusRequestEntityTooLarge, code: "too_large"},
	{name: "a body over 64 KiB of garbage is too large", body: big("\x00garbage", 10000), status: http.StatusRequestEntityTooLarge, code: "too_large"},
	badJSONCase("an empty body is refused", ""),
	badJSONCase("a body of white space is refused", " \n\t "),
	badJSONCase("a truncated object is refused", `{"address":"10.0.0.9","port":`),
	badJSONCase("a body that is not JSON is refused", `address=10.0.0.9&port=80`),
	badJSONCase("a JSON array instead of an object is refused", `[{"address":"10.0.0.9","port":9090}]`),
	badJSONCase("a JSON string instead of an object is refused", `"10.0.0.9:9090"`),
	badJSONCase("a JSON number instead of an object is refused", `9090`),
	badJSONCase("a second object after the first is refused", body(nil)+body(nil)),
	badJSONCase("garbage after the object is refused", body(nil)+` x`),
	badJSONCase("JSON nested 17 levels deep is refused", `{"address":"10.0.0.9","port":9090,"tags":`+big("[", 16)+big("]", 16)+`}`),
	badJSONCase("JSON nested 30000 levels deep is refused", big("[", 30000)+big("]", 30000)),
	badJSONCase("a raw control character inside a string is refused", "{\"address\":\"10.0.0.9\",\"port\":9090,\"tags\":[\"a\x01b\"]}"),
	badJSONCase("invalid UTF-8 inside a string is refused", "{\"address\":\"10.0.0.9\",\"port\":9090,\"tags\":[\"a\xffb\"]}"),
	badJSONCase("a single quoted string is refused", `{'address':'10.0.0.9','port':9090}`),
	badJSONCase("a comment is refused", `{"address":"10.0.0.9", /* hi */ "port":9090}`),
	badJSONCase("NaN is refused", `{"address":"10.0.0.9","port":NaN}`),
	invalidCase("a duplicate top-level key is refused", `{"address":"10.0.0.9","port":9090,"port":8080}`, "port"),
	invalidCase("a duplicate key differing only in case is refused", `{"address":"10.0.0.9","port":9090,"PORT":8080}`, "PORT"),
	invalidCase("a duplicate key in meta is refused", `{"address":"10.0.0.9","port":9090,"meta":{"zone":"a","zone":"b"}}`, "meta.zone"),
	invalidCase("a duplicate key in a check is refused", `{"address":"10.0.0.9","port":9090,"checks":[{"ttl":"10s"},{"http":"http://a/","http":"http://b/"}]}`, "checks[1].http"),
	invalidCase("an unknown field is refused", body(map[string]any{"adress": "10.0.0.9"}), "adress"),
	invalidCase("an unknown field in a check is refused with its path", withChecks(map[string]any{"ttl": "10s", "script": "rm -rf /"}), "checks[0].script"),
	invalidCase("an unknown field in the second check is named with its index", `{"address":"10.0.0.9","port":9090,"checks":[{"ttl":"10s"},{"ttl":"5s","bogus":1}]}`, "checks[1].bogus"),
	invalidCase("a header name is no unknown field, a key beside the header map is", `{"address":"10.0.0.9","port":9090,"checks":[{"http":"http://10.0.0.9:9090/","header":{"X-A":["b"]},"Bogus":{"x":1}}]}`, "checks[0].Bogus"),

	// Types.
	invalidCase("a port given as a string is refused", body(map[string]any{"port": "9090"}), "port"),
	invalidCase("a port with a fraction is refused", body(map[string]any{"port": 9090.5}), "port"),
	invalidCase("a port of 1e20 is refused", `{"address":"10.0.0.9","port":1e20}`, "port"),
	invalidCase("tags given as an object are refused", body(map[string]any{"tags": map[string]any{"a": "b"}}), "tags"),
	invalidCase("tags given as a string are refused", body(map[string]any{"tags": "a,b"}), "tags"),
	invalidCase("a meta value given as a number is refused", body(map[string]any{"meta": map[string]any{"zone": 1}}), "meta"),
	invalidCase("an address given as an array is refused", body(map[string]any{"address": []string{"10.0.0.9"}}), "address"),
	invalidCase("a check interval given as a number is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "interval": 5}), "checks.interval"),
	invalidCase("a check interval that is not a duration is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "interval": "5 parsecs"}), "checks.interval"),
	invalidCase("checks given as an object are refused", body(map[string]any{"checks": map[string]any{"ttl": "10s"}}), "checks"),

	// Path tricks in the service name and the id.
	{name: "a dot-dot segment in the path is not routed", target: "/v1/services/web/instances/../web-1", body: body(nil), status: http.StatusNotFound, code: "no_route"},
	{name: "a dot segment in the path is not routed", target: "/v1/services/web/./instances/web-1", body: body(nil), status: http.StatusNotFound, code: "no_route"},
	{name: "an empty segment in the path is not routed", target: "/v1/services//web/instances/web-1", body: body(nil), status: http.StatusNotFound, code: "no_route"},
	badPathCase("an id of an escaped dot-dot is refused", "/v1/services/web/instances/%2E%2E", "id"),
	badPathCase("an id of dot-dot-slash-x is refused", "/v1/services/web/instances/..%2Fx", "id"),
	badPathCase("an id with an escaped slash is refused", "/v1/services/web/instances/a%2Fb", "id"),
	badPathCase("an id with a backslash is refused", "/v1/services/web/instances/a%5Cb", "id"),
	badPathCase("an id with a NUL is refused", "/v1/services/web/instances/web%00-1", "id"),
	badPathCase("an id with a newline is refused", "/v1/services/web/instances/web%0A1", "id"),
	badPathCase("an id with a space is refused", "/v1/services/web/instances/web%201", "id"),
	badPathCase("an id with a leading dot is refused", "/v1/services/web/instances/.web", "id"),
	badPathCase("an id with a leading dash is refused", "/v1/services/web/instances/-web", "id"),
	badPathCase("an id of 129 characters is refused", "/v1/services/web/instances/"+big("a", 129), "id"),
	badPathCase("an id with a non-ASCII letter is refused", "/v1/services/web/instances/w%C3%A9b-1", "id"),
	badPathCase("an id with a right-to-left override is refused", "/v1/services/web/instances/web-1%E2%80%AEtxt", "id"),
	badPathCase("an uppercase service name is refused", "/v1/services/Web/instances/web-1", "service"),
	badPathCase("a service name of 64 characters is refused", "/v1/services/"+big("w", 64)+"/instances/web-1", "service"),
	badPathCase("a service name with a leading dash is refused", "/v1/services/-web/instances/web-1", "service"),
	badPathCase("a service name with a trailing dash is refused", "/v1/services/web-/instances/web-1", "service"),
	badPathCase("a service name with a leading dot is refused", "/v1/services/.web/instances/web-1", "service"),
	badPathCase("a service name with an underscore is refused", "/v1/services/web_1/instances/web-1", "service"),
	badPathCase("a service name with an escaped slash is refused", "/v1/services/web%2Fx/instances/web-1", "service"),
	badPathCase("a service name with a Cyrillic look-alike is refused", "/v1/services/w%D0%B5b/instances/web-1", "service"),
	badPathCase("a service name with a fullwidth letter is refused", "/v1/services/%EF%BD%97eb/instances/web-1", "service"),

	// Address and port.
	invalidCase("a missing address is refused", body(map[string]any{"address": nil}), "address"),
	invalidCase("an empty address is refused", body(map[string]any{"address": ""}), "address"),
	invalidCase("an address with a space is refused", body(map[string]any{"address": "10.0.0.9 evil"}), "address"),
	invalidCase("an address that is a URL is refused", body(map[string]any{"address": "http://10.0.0.9:80/"}), "address"),
	invalidCase("an address with a port is refused", body(map[string]any{"address": "10.0.0.9:80"}), "address"),
	invalidCase("an address of 256 characters is refused", body(map[string]any{"address": big("a", 256)}), "address"),
	invalidCase("an address with an empty label is refused", body(map[string]any{"address": "web..example.com"}), "address"),
	invalidCase("an address that is an IPv4 address out of range is refused", body(map[string]any{"address": "10.0.0.999"}), "address"),
	invalidCase("an address with a NUL is refused", body(map[string]any{"address": "10.0.0.9\x00"}), "address"),
	invalidCase("a missing port is refused", body(map[string]any{"port": nil}), "port"),
	invalidCase("port 0 is refused", body(map[string]any{"port": 0}), "port"),
	invalidCase("port -1 is refused", body(map[string]any{"port": -1}), "port"),
	invalidCase("port 65536 is refused", body(map[string]any{"port": 65536}), "port"),
	invalidCase("port 70000 is refused", body(map[string]any{"port": 70000}), "port"),

	// Tags, meta, version, weight, node.
	invalidCase("65 tags are refused", body(map[string]any{"tags": repeat(65, func(i int) string { return fmt.Sprint("t", i) })}), "tags"),
	invalidCase("a tag of 129 characters is refused", body(map[string]any{"tags": []string{"ok", big("t", 129)}}), "tags[1]"),
	invalidCase("an empty tag is refused", body(map[string]any{"tags": []string{""}}), "tags[0]"),
	invalidCase("a tag with a NUL is refused", body(map[string]any{"tags": []string{"a\x00b"}}), "tags[0]"),
	invalidCase("a tag with a newline is refused", body(map[string]any{"tags": []string{"a\nb"}}), "tags[0]"),
	invalidCase("a tag with a C1 control character is refused", body(map[string]any{"tags": []string{"a\u0085b"}}), "tags[0]"),
	invalidCase("a tag with a right-to-left override is refused", body(map[string]any{"tags": []string{"prod\u202Edorp"}}), "tags[0]"),
	invalidCase("a tag with a zero-width space is refused", body(map[string]any{"tags": []string{"can\u200Bary"}}), "tags[0]"),
	invalidCase("a tag with a line separator is refused", body(map[string]any{"tags": []string{"a\u2028b"}}), "tags[0]"),
	invalidCase("65 meta keys are refused", body(map[string]any{"meta": manyMeta(65)}), "meta"),
	invalidCase("a meta key with a space is refused", body(map[string]any{"meta": map[string]any{"a b": "v"}}), "meta"),
	invalidCase("an empty meta key is refused", body(map[string]any{"meta": map[string]any{"": "v"}}), "meta"),
	invalidCase("a meta key with a leading dot is refused", body(map[string]any{"meta": map[string]any{".zone": "v"}}), "meta"),
	invalidCase("a meta key of 129 characters is refused", body(map[string]any{"meta": map[string]any{big("k", 129): "v"}}), "meta"),
	invalidCase("a meta value of 513 characters is refused", body(map[string]any{"meta": map[string]any{"zone": big("v", 513)}}), "meta.zone"),
	invalidCase("a huge meta value is refused", body(map[string]any{"meta": map[string]any{"zone": big("v", 60000)}}), "meta.zone"),
	invalidCase("a meta value with a control character is refused", body(map[string]any{"meta": map[string]any{"zone": "eu\x1b[31m"}}), "meta.zone"),
	invalidCase("a meta key differing only in case is a duplicate", `{"address":"10.0.0.9","port":9090,"meta":{"Zone":"a","zone":"b"}}`, "meta.zone"),
	invalidCase("a version with a space is refused", body(map[string]any{"version": "1.0 beta"}), "version"),
	invalidCase("a version with a leading dash is refused", body(map[string]any{"version": "-1.0"}), "version"),
	invalidCase("a version of 65 characters is refused", body(map[string]any{"version": big("1", 65)}), "version"),
	invalidCase("weight -1 is refused", body(map[string]any{"weight": -1}), "weight"),
	invalidCase("weight 10001 is refused", body(map[string]any{"weight": 10001}), "weight"),
	invalidCase("a node name with a slash is refused", body(map[string]any{"node": "../n1"}), "node"),

	// Checks.
	invalidCase("17 checks are refused", withChecks(repeat(17, func(i int) map[string]any { return map[string]any{"name": fmt.Sprint("c", i), "ttl": "10s"} })...), "checks"),
	invalidCase("a check with two targets is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "tcp": "10.0.0.9:80"}), "checks[0]"),
	invalidCase("a check without a target is refused", withChecks(map[string]any{"interval": "10s"}), "checks[0]"),
	invalidCase("an HTTP check of an ftp URL is refused", withChecks(httpCheck("ftp://10.0.0.9/health")), "checks[0].http"),
	invalidCase("an HTTP check of a file URL is refused", withChecks(httpCheck("file:///etc/passwd")), "checks[0].http"),
	invalidCase("an HTTP check without a host is refused", withChecks(httpCheck("http:///health")), "checks[0].http"),
	invalidCase("an HTTP check of a relative URL is refused", withChecks(httpCheck("/health")), "checks[0].http"),
	invalidCase("an HTTP check with user info is refused", withChecks(httpCheck("http://admin:secret@10.0.0.9/health")), "checks[0].http"),
	invalidCase("an HTTP check with port 0 is refused", withChecks(httpCheck("http://10.0.0.9:0/health")), "checks[0].http"),
	invalidCase("an HTTP check with port 99999 is refused", withChecks(httpCheck("http://10.0.0.9:99999/health")), "checks[0].http"),
	invalidCase("an HTTP check of the link-local metadata address is refused", withChecks(httpCheck("http://169.254.169.254/latest/meta-data/")), "checks[0].http"),
	invalidCase("an HTTP check of an IPv6 link-local address is refused", withChecks(httpCheck("http://[fe80::1]/health")), "checks[0].http"),
	invalidCase("an HTTP check of a host with an underscore is refused", withChecks(httpCheck("http://web_1:8080/health")), "checks[0].http"),
	invalidCase("an HTTP check of an address written as one integer is refused", withChecks(httpCheck("http://2852039166/")), "checks[0].http"),
	invalidCase("an HTTP check with a newline is refused", withChecks(httpCheck("http://10.0.0.9:80/health\nHost: evil")), "checks[0].http"),
	invalidCase("an HTTP check with a TRACE method is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "method": "TRACE"}), "checks[0].method"),
	invalidCase("an HTTP check header with a CR LF is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "header": map[string]any{"X-A": []string{"v\r\nX-Evil: 1"}}}), "checks[0].header.X-A"),
	invalidCase("an HTTP check header with a bad name is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "header": map[string]any{"X A": []string{"v"}}}), "checks[0].header"),
	invalidCase("a TCP check without a port is refused", withChecks(map[string]any{"tcp": "10.0.0.9"}), "checks[0].tcp"),
	invalidCase("a TCP check with port 0 is refused", withChecks(map[string]any{"tcp": "10.0.0.9:0"}), "checks[0].tcp"),
	invalidCase("a TCP check with a named port is refused", withChecks(map[string]any{"tcp": "10.0.0.9:http"}), "checks[0].tcp"),
	invalidCase("a TCP check of a link-local address is refused", withChecks(map[string]any{"tcp": "169.254.1.1:80"}), "checks[0].tcp"),
	invalidCase("a TCP check of the unspecified address is refused", withChecks(map[string]any{"tcp": "0.0.0.0:80"}), "checks[0].tcp"),
	invalidCase("a gRPC check without a port is refused", withChecks(map[string]any{"grpc": "10.0.0.9"}), "checks[0].grpc"),
	invalidCase("a gRPC service name of 257 characters is refused", withChecks(map[string]any{"grpc": "10.0.0.9:50051", "grpc_service": big("s", 257)}), "checks[0].grpc_service"),
	invalidCase("a TTL below 100ms is refused", withChecks(map[string]any{"ttl": "50ms"}), "checks[0].ttl"),
	invalidCase("a negative TTL is refused", withChecks(map[string]any{"ttl": "-10s"}), "checks[0].ttl"),
	invalidCase("a TTL over 24h is refused", withChecks(map[string]any{"ttl": "25h"}), "checks[0].ttl"),
	invalidCase("an interval below 100ms is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "interval": "99ms"}), "checks[0].interval"),
	invalidCase("an interval over 24h is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "interval": "25h"}), "checks[0].interval"),
	invalidCase("a timeout longer than the interval is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "interval": "1s", "timeout": "2s"}), "checks[0].timeout"),
	invalidCase("a negative timeout is refused", withChecks(map[string]any{"http": "http://10.0.0.9:80/", "timeout": "-1s"}), "checks[0].timeout"),
	invalidCase("failures_before_critical -1 is refused", withChecks(map[string]any{"ttl": "10s", "failures_before_critical": -1}), "checks[0].failures_before_critical"),
	invalidCase("failures_before_critical 101 is refused", withChecks(map[string]any{"ttl": "10s", "failures_before_critical": 101}), "checks[0].failures_before_critical"),
	invalidCase("successes_before_passing 101 is refused", withChecks(map[string]any{"ttl": "10s", "successes_before_passing": 101}), "checks[0].successes_before_passing"),
	invalidCase("an unknown initial_status is refused", withChecks(map[string]any{"ttl": "10s", "initial_status": "ok"}), "checks[0].initial_status"),
	invalidCase("a deregister_critical_after below 1s is refused", withChecks(map[string]any{"ttl": "10s", "deregister_critical_after": "500ms"}), "checks[0].deregister_critical_after"),
	invalidCase("a duplicate check name is refused", withChecks(map[string]any{"name": "hb", "ttl": "10s"}, map[string]any{"name": "hb", "ttl": "20s"}), "checks[1].name"),
	invalidCase("a check name equal to another's default is refused", withChecks(map[string]any{"name": "ttl-1", "ttl": "10s"}, map[string]any{"ttl": "20s"}), "checks[1].name"),
	invalidCase("a check name with a slash is refused", withChecks(map[string]any{"name": "a/b", "ttl": "10s"}), "checks[0].name"),
	invalidCase("a check type that disagrees with its target is refused", withChecks(map[string]any{"type": "tcp", "http": "http://10.0.0.9:80/"}), "checks[0].type"),

	// Writes the FSM refuses.
	// (Registering web-1 under another service is no longer refused: IDs are
	// unique per service, so it registers a second instance; deregistering
	// api/web-1 removes nothing and succeeds, as any missing instance does.
	// TestSameIDInTwoServices covers both.)
	{name: "maintenance of an id under a service it is not in is not found", target: "/v1/services/api/instances/web-1/maintenance", body: `{"mode":"maintenance"}`, status: http.StatusNotFound, code: "not_found", reachesFSM: true},
	{name: "deregistering a bad id is refused", method: http.MethodDelete, target: "/v1/services/web/instances/..%2Fweb-1", status: http.StatusBadRequest, code: "invalid", field: "id"},
	{name: "deregistering under a bad service name is refused", method: http.MethodDelete, target: "/v1/services/WEB/instances/web-1", status: http.StatusBadRequest, code: "invalid", field: "service"},

	// Query parameters of reads.
	badQueryCase("index=abc is refused", "/v1/services/web/instances?index=abc", "index"),
	badQueryCase("index=-1 is refused", "/v1/services/web/instances?index=-1", "index"),
	badQueryCase("index beyond 64 bits is refused", "/v1/services/web/instances?index=18446744073709551616", "index"),
	badQueryCase("wait=xyz is refused", "/v1/services/web/instances?index=1&wait=xyz", "wait"),
	badQueryCase("a negative wait is refused", "/v1/services/web/instances?index=1&wait=-1s", "wait"),
	badQueryCase("max_stale=-1 is refused", "/v1/services/web/instances?max_stale=-1", "max_stale"),
	badQueryCase("max_stale=0s is refused", "/v1/services/web/instances?max_stale=0s", "max_stale"),
	badQueryCase("consistent=maybe is refused", "/v1/services/web/instances?consistent=maybe", "consistent"),
	badQueryCase("consistent with max_stale is refused", "/v1/services/web/instances?consistent&max_stale=5s", "max_stale"),
	badQueryCase("healthy=maybe is refused", "/v1/services/web/instances?healthy=maybe", "healthy"),
	badQueryCase("meta without a colon is refused", "/v1/services/web/instances?meta=zone", "meta"),
	badQueryCase("meta without a key is refused", "/v1/services/web/instances?meta=:eu", "meta"),
	badQueryCase("a bad semver range is refused", "/v1/services/web/instances?version=%3E%3Dbanana", "version"),
	badQueryCase("a discovery of a bad service name is refused", "/v1/services/Web/instances", "service"),
	badQueryCase("an instance read of a bad id is refused", "/v1/services/web/instances/%2E%2E", "id"),
	badQueryCase("limit=0 is refused", "/v1/services?limit=0", "limit"),
	badQueryCase("limit=5000 is refused", "/v1/services?limit=5000", "limit"),
	badQueryCase("limit=abc is refused", "/v1/services?limit=abc", "limit"),
	badQueryCase("healthy=maybe on the services list is refused", "/v1/services?healthy=maybe", "healthy"),
	badQueryCase("index=abc on the services list is refused", "/v1/services?index=abc", "index"),
	badQueryCase("index=abc on an instance read is refused", "/v1/services/web/instances/web-1?index=abc", "index"),
	{name: "a read of an instance that does not exist is not found", method: http.MethodGet, target: "/v1/services/web/instances/web-404", status: http.StatusNotFound, code: "not_found"},
	{name: "a read of an instance under another service is not found", method: http.MethodGet, target: "/v1/services/api/instances/web-1", status: http.StatusNotFound, code: "not_found"},

	// Cluster routes.
	badJoinCase("a join without addresses is refused", `{}`, "addresses"),
	badJoinCase("a join with an empty list is refused", `{"addresses":[]}`, "addresses"),
	badJoinCase("a join with 65 addresses is refused", string(mustMarshal(client.JoinRequest{Addresses: repeat(65, func(i int) string { return fmt.Sprintf("10.0.0.%d:8752", i) })})), "addresses"),
	badJoinCase("a join address without a port is refused", `{"addresses":["10.0.0.1"]}`, "addresses[0]"),
	badJoinCase("a join address with port 0 is refused", `{"addresses":["10.0.0.1:8752","10.0.0.2:0"]}`, "addresses[1]"),
	badJoinCase("a join address with a huge port is refused", `{"addresses":["10.0.0.1:99999"]}`, "addresses[0]"),
	badJoinCase("a join address without a host is refused", `{"addresses":[":8752"]}`, "addresses[0]"),
	badJoinCase("a join address with a space is refused", `{"addresses":["evil host:8752"]}`, "addresses[0]"),
	badJoinCase("a join address given as a string is refused", `{"addresses":"10.0.0.1:8752"}`, "addresses"),
	badJoinCase("a join with an unknown field is refused", `{"addresses":["10.0.0.1:8752"],"token":"x"}`, "token"),
	{name: "a join without a body is refused", method: http.MethodPost, target: "/v1/cluster/join", status: http.StatusBadRequest, code: "bad_json"},
	{name: "removing a peer with a control character in its id is refused", method: http.MethodDelete, target: "/v1/cluster/peers/r%1B%5B2Jogue", status: http.StatusBadRequest, code: "invalid", field: "id"},
	{name: "removing a peer with an id over 1024 bytes is refused", method: http.MethodDelete, target: "/v1/cluster/peers/" + strings.Repeat("n", 1025), status: http.StatusBadRequest, code: "invalid", field: "id"},
	{name: "removing a peer by an address with a control character is refused", method: http.MethodDelete, target: "/v1/cluster/peers?address=10.0.0.1%0A:8751", status: http.StatusBadRequest, code: "invalid", field: "address"},
	{name: "removing a peer by an empty address is refused", method: http.MethodDelete, target: "/v1/cluster/peers?address=", status: http.StatusBadRequest, code: "invalid", field: "address"},
	{name: "removing a peer without an id or address is refused", method: http.MethodDelete, target: "/v1/cluster/peers", status: http.StatusBadRequest, code: "invalid", field: "address"},
	{name: "removing a peer with an unknown parameter is refused", method: http.MethodDelete, target: "/v1/cluster/peers?id=n1", status: http.StatusBadRequest, code: "invalid", field: "id"},

	// Routes and methods.
	{name: "an unknown route is not found", method: http.MethodGet, target: "/v1/nope", status: http.StatusNotFound, code: "no_route"},
	{name: "a path with a trailing slash is not found", method: http.MethodGet, target: "/v1/services/", status: http.StatusNotFound, code: "no_route"},
	{name: "POST on the services list is not allowed", method: http.MethodPost, target: "/v1/services", body: `{}`, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: "GET, HEAD"},
	{name: "PATCH on an instance is not allowed", method: http.MethodPatch, target: instancePath, body: body(nil), status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: "DELETE, GET, HEAD, PUT"},
	{name: "POST on an instance is not allowed", method: http.MethodPost, target: instancePath, body: body(nil), status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: "DELETE, GET, HEAD, PUT"},
	{name: "GET on join is not allowed", method: http.MethodGet, target: "/v1/cluster/join", status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: "POST"},
	{name: "PUT on the discovery route is not allowed", method: http.MethodPut, target: "/v1/services/web/instances", body: body(nil), status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: "GET, HEAD"},
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// populate registers the instances the hostile cases try to damage.
func populate(ts *testServer) {
	ts.t.Helper()
	ts.register("web", "web-1", client.Registration{
		Address: "10.0.0.1", Port: 8080, Tags: []string{"v1", "canary"},
		Meta: map[string]string{"zone": "eu-1a"}, Version: "1.2.0", Weight: 5,
		Checks: []client.CheckDefinition{
			{Name: "heartbeat", TTL: client.Duration(30e9)},
			{HTTP: "http://10.0.0.1:8080/health", Interval: client.Duration(5e9), Timeout: client.Duration(1e9)},
		},
	})
	ts.register("web", "web-2", client.Registration{Address: "10.0.0.2", Port: 8080, Tags: []string{"v1"}, Version: "1.4.2"})
	ts.register("api", "api-1", client.Registration{Address: "api-1.internal", Port: 9000})
}

// TestHostileInput sends each hostile case to a populated server: each is
// answered with its 4xx and a JSON error body naming the code and field,
// and nothing stored changes.
func TestHostileInput(t *testing.T) {
	if len(hostileCases) < 40 {
		t.Fatalf("only %d hostile cases", len(hostileCases))
	}
	ts := newTestServer(t)
	populate(ts)
	for _, tc := range hostileCases {
		t.Run(tc.name, func(t *testing.T) {
			ts := *ts
			ts.t = t
			method, target := tc.method, tc.target
			if method == "" {
				method = http.MethodPut
			}
			if target == "" {
				target = instancePath
			}
			var b []byte
			if tc.body != "" || method == http.MethodPut || method == http.MethodPost {
				b = []byte(tc.body)
			}
			before := snapshotCatalog(ts.cl.Store())
			applies := ts.cl.Applies()
			r := ts.do(method, target, b)
			assertError(t, r, tc.status, tc.code, tc.field)
			if tc.allow != "" {
				if got := r.header.Get("Allow"); got != tc.allow {
					t.Errorf("Allow: %q, want %q", got, tc.allow)
				}
			}
			ts.assertUnchanged(before)
			if got := ts.cl.Applies() - applies; !tc.reachesFSM && got != 0 {
				t.Errorf("%d commands reached the cluster; a refused request must not write", got)
			}
			if len(ts.cl.Joined()) != 0 {
				t.Errorf("the cluster was asked to join %v", ts.cl.Joined())
			}
		})
	}
}
