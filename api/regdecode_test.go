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
		`{"checks":[{"name":"c","http":"http://127.0.0.1:1/"}]}`, `{"unknown":1}`, `{"address":"a" "port":1}`,
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		compareRegistration(t, body)
	})
}
