package api

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
)

// compareRegistration decodes body both ways and fails when the fast path
// answers differently from decodeJSON. It reports whether the fast path
// answered.
func compareRegistration(t *testing.T, body []byte) bool {
	t.Helper()
	var slow client.Registration
	slowErr := decodeJSON(body, &slow)
	var fast client.Registration
	took := fastRegistration(body, &fast)
	if took {
		if slowErr != nil {
			t.Fatalf("%q: the fast path decoded what decodeJSON refuses (%v): %+v", body, slowErr, fast)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast path %#v, decodeJSON %#v", body, fast, slow)
		}
	}
	var got client.Registration
	err := decodeRegistration(body, &got)
	if fmt.Sprint(err) != fmt.Sprint(slowErr) {
		t.Fatalf("%q: decodeRegistration's error %v, decodeJSON's %v", body, err, slowErr)
	}
	if err == nil && !reflect.DeepEqual(got, slow) {
		t.Fatalf("%q: decodeRegistration %#v, decodeJSON %#v", body, got, slow)
	}
	return took
}

func TestFastRegistrationAnswersAsDecodeJSON(t *testing.T) {
	if len(registrationKeys) > 16 || len(checkKeys) > 16 {
		t.Fatalf("%d registration keys, %d check keys: object records the keys seen in 16 bits", len(registrationKeys), len(checkKeys))
	}
	fast := []string{
		`{"address":"10.0.0.1","port":8080}`,
		`{}`,
		` { "address" : "10.1.2.3" , "port" : 1024 , "tags" : [ "bench" , "v1" ] , "meta" : { "zone" : "z1" } , "version" : "1.0.3" } ` + "\n",
		"{\"address\":\"h\",\r\n\t\"port\":-0,\"weight\":0,\"node\":\"n1\"}",
		`{"tags":[],"meta":{}}`,
		`{"port":-5,"weight":-2}`,
		`{"port":999999999999999999}`,
		`{"meta":{"a":"","A-b":"x y","c":"~!@#$%^&*()"}}`,
		`{"address":"2001:db8::1","port":65535,"tags":["a","a","b"],"node":""}`,
		`{"checks":[]}`,
		`{"address":"127.0.0.1","port":80,"checks":[{"name":"ttl","ttl":"1h","initial_status":"passing"}]}`,
		`{"checks":[{}, {"name":"h","type":"http","http":"http://127.0.0.1:1/h?x=1","method":"HEAD","tls_skip_verify":true,"interval":"10s","timeout":"1.5s","failures_before_critical":3,"successes_before_passing":2,"deregister_critical_after":"1m30s"}]}`,
		`{"checks":[{"tcp":"127.0.0.1:22","tls_skip_verify":false,"interval":"-1s"},{"grpc":"127.0.0.1:9","grpc_service":"x.y"}] , "port":1}`,
	}
	for _, b := range fast {
		if !compareRegistration(t, []byte(b)) {
			t.Errorf("%q: not taken by the fast path", b)
		}
	}
	// What the fast path leaves to decodeJSON: every error and every
	// form it does not know. Each still gets decodeJSON's answer.
	slow := []string{
		``, ` `, `[]`, `null`, `"x"`, `{`, `{"port":1`, `{"port":1}x`, `{"port":1}{}`, `{"port":1,}`, `{,}`,
		`{"Port":1}`, `{"ADDRESS":"a"}`, `{"port":1,"port":2}`, `{"port":1,"PORT":2}`,
		`{"address":"a\"b"}`, `{"address":"\u0041"}`, `{"address":"é"}`, "{\"address\":\"a\x7fb\"}", "{\"address\":\"a\tb\"}",
		`{"address":null}`, `{"tags":null}`, `{"meta":null}`, `{"address":1}`, `{"port":"1"}`,
		`{"port":1.0}`, `{"port":1e3}`, `{"port":01}`, `{"port":-}`, `{"port":+1}`, `{"port":9999999999999999999}`,
		`{"port":1234567890123456789}`, `{"tags":["a",1]}`, `{"tags":["a",]}`, `{"tags":[,]}`, `{"tags":"a"}`,
		`{"meta":{"a":"1","A":"2"}}`, `{"meta":{"a":"1","a":"2"}}`, `{"meta":{"a":1}}`, `{"meta":{"a":"1",}}`, `{"meta":[]}`,
		`{"unknown":1}`, `{"address":"a" "port":1}`,
		`{"checks":null}`, `{"checks":{}}`, `{"checks":[null]}`, `{"checks":[{"name":"a"},]}`, `{"checks":[{"name":"a",}]}`,
		`{"checks":[{"Name":"a"}]}`, `{"checks":[{"name":"a","name":"b"}]}`, `{"checks":[{"name":"a","NAME":"b"}]}`,
		`{"checks":[{"header":{"a":["b"]}}]}`, `{"checks":[{"ttl":"10"}]}`, `{"checks":[{"ttl":10}]}`, `{"checks":[{"ttl":null}]}`,
		`{"checks":[{"ttl":"1h","x":1}]}`, `{"checks":[{"tls_skip_verify":"true"}]}`, `{"checks":[{"tls_skip_verify":tru}]}`,
		`{"checks":[{"tls_skip_verify":truex}]}`, `{"checks":[{"failures_before_critical":1.5}]}`, `{"checks":[{"name":"\u0041"}]}`,
		`{"checks":[],"checks":[]}`, `{"checks":[` + strings.Repeat(`{},`, maxFastChecks) + `{}]}`,
		`{"meta":{` + metaEntries(maxFastMeta+1) + `}}`,
	}
	for _, b := range slow {
		if compareRegistration(t, []byte(b)) {
			t.Errorf("%q: taken by the fast path", b)
		}
	}
	// The bound on meta entries: at it, still fast.
	if b := `{"meta":{` + metaEntries(maxFastMeta) + `}}`; !compareRegistration(t, []byte(b)) {
		t.Errorf("%d meta entries: not taken by the fast path", maxFastMeta)
	}
}

func metaEntries(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":"v%d"`, i, i)
	}
	return strings.Join(parts, ",")
}

func FuzzFastRegistration(f *testing.F) {
	for _, s := range []string{
		`{"address":"10.0.0.1","port":8080,"tags":["a","b"],"meta":{"zone":"z1"},"version":"1.0","weight":3,"node":"n1"}`,
		`{"port":-0}`, `{"tags":[]}`, `{"meta":{"a":"1","A":"2"}}`, `{"port":1e3}`, `{"address":"\u0041"}`,
		`{"checks":[{"name":"c","ttl":"10s"}]}`, ` {} `, `{"Port":1}`,
		`{"checks":[{"name":"h","http":"http://127.0.0.1/","method":"GET","tls_skip_verify":true,"interval":"1s","timeout":"2s","failures_before_critical":1,"successes_before_passing":1,"initial_status":"critical","deregister_critical_after":"1m"},{"tcp":"127.0.0.1:1","grpc":"a","grpc_service":"b","type":"tcp"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		compareRegistration(t, body)
	})
}

// BenchmarkDecodeRegistrationWithCheck decodes the bench's registration
// with a TTL check (scripts/bench -write-ttl-check) by the fast path and by
// decodeJSON.
func BenchmarkDecodeRegistrationWithCheck(b *testing.B) {
	body := []byte(`{"address":"10.0.1.2","port":1284,"tags":["bench","v1"],"meta":{"zone":"z1"},"version":"1.0.3","checks":[{"name":"ttl","ttl":"1h","initial_status":"passing"}]}`)
	for _, bc := range []struct {
		name string
		fn   func([]byte, *client.Registration) error
	}{{"fast", decodeRegistration}, {"decodeJSON", func(b []byte, v *client.Registration) error { return decodeJSON(b, v) }}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r client.Registration
				if err := bc.fn(body, &r); err != nil || len(r.Checks) != 1 {
					b.Fatal(err)
				}
			}
		})
	}
}
