package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/client"
)

func nest(open, close string, n int, inner string) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
}

// nestObjects is n objects one inside the other: {"a":{"a":...}}.
func nestObjects(n int) string {
	return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1)
}

func TestCheckJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		// want is "" for accepted, "bad_json", or the field of a
		// duplicate-key validation error.
		want string
	}{
		{"an empty object is accepted", `{}`, ""},
		{"an empty array is accepted", `[]`, ""},
		{"empty objects and arrays inside are accepted", `{"a":{},"b":[],"c":[{},[]]}`, ""},
		{"a scalar is accepted", `"x"`, ""},
		{"the same key in sibling objects is accepted", `[{"a":1},{"a":2}]`, ""},
		{"the same key at different depths is accepted", `{"a":{"a":{"a":1}}}`, ""},
		{"the same key in an object and after it is accepted", `{"a":1,"b":{"a":2},"c":3}`, ""},
		{"string values that look like keys are accepted", `{"a":"b","b":"a","c":["a","a"]}`, ""},
		{"a value equal to a later key is accepted", `{"k":"port","port":1}`, ""},
		{"an array of strings with repeats is accepted", `{"tags":["a","a","a"]}`, ""},
		{"keys that fold differently are accepted", `{"ss":1,"ß":2}`, ""},
		{"a duplicate top-level key is refused", `{"a":1,"b":2,"a":3}`, "a"},
		{"a duplicate after a nested object is refused", `{"a":{"x":1},"a":2}`, "a"},
		{"a duplicate after a nested array is refused", `{"a":[1,{"a":1}],"b":1,"a":2}`, "a"},
		{"a duplicate in a nested object is refused", `{"a":{"b":{"c":1,"c":2}}}`, "a.b.c"},
		{"a duplicate in meta is refused", `{"address":"x","meta":{"zone":"a","zone":"a"}}`, "meta.zone"},
		{"a duplicate in an object in an array is refused", `{"checks":[{"name":"x"},{"name":"y","name":"z"}]}`, "checks[1].name"},
		{"a duplicate in an object in a top-level array is refused", `[{},{},{"k":1,"k":2}]`, "[2].k"},
		{"a duplicate in an array in an array is refused", `{"a":[[],[{"k":1}],[{"j":1,"j":1}]]}`, "a[2][0].j"},
		{"a duplicate differing in ASCII case is refused", `{"port":1,"Port":2}`, "Port"},
		{"a duplicate differing in non-ASCII case is refused", `{"é":1,"É":2}`, "É"},
		{"the Kelvin sign duplicates k", `{"k":1,"\u212a":2}`, "\u212a"},
		{"the long s duplicates S", `{"S":1,"ſ":2}`, "ſ"},
		{"an escaped key duplicates its plain form", `{"port":1,"\u0070ort":2}`, "port"},
		{"arrays nested 16 deep are accepted", nest("[", "]", MaxJSONDepth, ""), ""},
		{"arrays nested 17 deep are refused", nest("[", "]", MaxJSONDepth+1, ""), "bad_json"},
		{"objects nested 16 deep are accepted", nestObjects(MaxJSONDepth), ""},
		{"objects nested 17 deep are refused", nestObjects(MaxJSONDepth + 1), "bad_json"},
		{"mixed nesting of 16 is accepted", `{"a":` + nest("[", "]", MaxJSONDepth-2, "{}") + `}`, ""},
		{"mixed nesting of 17 is refused", `{"a":` + nest("[", "]", MaxJSONDepth-1, "{}") + `}`, "bad_json"},
		{"deep nesting is refused before the input ends", nest("[", "]", 100000, ""), "bad_json"},
		{"nesting 16 deep twice in a row is accepted", nest("[", "]", MaxJSONDepth, "") + nest("[", "]", MaxJSONDepth, ""), ""},
		{"invalid JSON is refused", `{"a":}`, "bad_json"},
		{"an unclosed object is refused", `{"a":1`, "bad_json"},
		{"a stray closing bracket is refused", `{}]`, "bad_json"},
		{"a non-string key is refused", `{1:2}`, "bad_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkJSON([]byte(tc.in))
			var ve *ValidationError
			var se *statusError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
			case tc.want == "bad_json":
				if !errors.As(err, &se) || se.code != "bad_json" {
					t.Fatalf("got %v, want bad_json", err)
				}
			default:
				if !errors.As(err, &ve) || ve.Field != tc.want || ve.Msg != "duplicate key" {
					t.Fatalf("got %#v, want a duplicate key at %q", err, tc.want)
				}
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Run("a valid registration decodes", func(t *testing.T) {
		var reg client.Registration
		err := decodeJSON([]byte(` {"address":"10.0.0.1","port":80,"checks":[{"ttl":"10s","interval":null}]}`+"\n"), &reg)
		if err != nil || reg.Address != "10.0.0.1" || reg.Port != 80 || len(reg.Checks) != 1 || reg.Checks[0].TTL != client.Duration(10e9) {
			t.Fatalf("%+v, %v", reg, err)
		}
	})
	for _, tc := range []struct {
		name, in    string
		code, field string
		msg         string // a part of the message
	}{
		{"a type error names the field and the JSON type", `{"port":"80"}`, "invalid", "port", "must be an integer"},
		{"a type error in a check names the field", `{"checks":[{"failures_before_critical":true}]}`, "invalid", "checks.failures_before_critical", "must be an integer"},
		{"an object for a string says object", `{"address":{}}`, "invalid", "address", "must be a string"},
		{"a string for an array says array", `{"tags":"a"}`, "invalid", "tags", "must be an array"},
		{"a bad duration names the field", `{"checks":[{"ttl":"soon"}]}`, "invalid", "checks.ttl", "duration"},
		{"a number for a duration names the field", `{"checks":[{"ttl":10}]}`, "invalid", "checks.ttl", "duration"},
		{"an unknown field is named", `{"address":"x","portt":1}`, "invalid", "portt", "unknown field"},
		{"an unknown field in a check is named with its path", `{"checks":[{"ttl":"5s","bogus":1}]}`, "invalid", "checks[0].bogus", "unknown field"},
		{"the first unknown field in document order is named", `{"checks":[{"ttl":"5s"},{"TTL":"5s","x":{"y":1}}],"zz":1}`, "invalid", "checks[1].x", "unknown field"},
		{"null is not an object", `null`, "bad_json", "", "JSON object"},
		{"an array is not an object", `[]`, "bad_json", "", "JSON object"},
		{"a byte order mark is not an object", "\ufeff{}", "bad_json", "", "JSON object"},
		{"invalid UTF-8 is refused", "{\"address\":\"\xc3\x28\"}", "bad_json", "", "UTF-8"},
		{"trailing data is refused", `{} {}`, "bad_json", "", "after the JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reg client.Registration
			err := decodeJSON([]byte(tc.in), &reg)
			if err == nil {
				t.Fatalf("accepted %q", tc.in)
			}
			status, code, field := statusOf(err)
			if status != 400 || code != tc.code || field != tc.field || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %d %s %q: %v; want 400 %s %q containing %q", status, code, field, err, tc.code, tc.field, tc.msg)
			}
		})
	}
}

// jsonShape is an oracle for checkJSON written another way: recursively,
// comparing keys with strings.EqualFold. For one valid JSON value it
// reports whether some object has two keys encoding/json would take for the
// same field, and how deep the value nests, counting at most to limit.
func jsonShape(raw []byte, limit int) (dup bool, depth int) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || (raw[0] != '{' && raw[0] != '[') {
		return false, 0
	}
	if limit == 0 {
		return false, 1 // deeper than asked: stop counting
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		panic(err)
	}
	var keys []string
	for dec.More() {
		if raw[0] == '{' {
			tok, err := dec.Token()
			if err != nil {
				panic(err)
			}
			k := tok.(string)
			for _, seen := range keys {
				dup = dup || strings.EqualFold(seen, k)
			}
			keys = append(keys, k)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			panic(err)
		}
		d, dd := jsonShape(v, limit-1)
		dup = dup || d
		depth = max(depth, dd)
	}
	return dup, depth + 1
}

// FuzzDecodeJSON feeds arbitrary bytes to the strict decoder. It must not
// panic; what it accepts encoding/json accepts too, to the same value, with
// no duplicate keys and no deep nesting; what it refuses is a 400. On any
// valid JSON, checkJSON agrees with the jsonShape oracle.
func FuzzDecodeJSON(f *testing.F) {
	for _, tc := range hostileCases {
		f.Add([]byte(tc.body))
	}
	f.Add([]byte(body(nil)))
	f.Add([]byte(withChecks(map[string]any{"http": "http://10.0.0.9:80/", "header": map[string]any{"X-A": []string{"b"}}})))
	f.Add([]byte(`{"addresses":["10.0.0.1:8752"]}`))
	f.Add([]byte(nestObjects(MaxJSONDepth)))
	f.Add([]byte(`{"k":1,"\u212a":2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, v := range []any{&client.Registration{}, &client.JoinRequest{}} {
			err := decodeJSON(in, v)
			if err != nil {
				if status, code, _ := statusOf(err); status != 400 || (code != "invalid" && code != "bad_json") {
					t.Fatalf("refused with %d %s: %v", status, code, err)
				}
				continue
			}
			if !utf8.Valid(in) || !json.Valid(in) {
				t.Fatalf("accepted input encoding/json calls invalid")
			}
			v2 := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := json.Unmarshal(in, v2); err != nil {
				t.Fatalf("accepted input encoding/json refuses: %v", err)
			}
			if !reflect.DeepEqual(v, v2) {
				t.Fatalf("decoded %+v; encoding/json decodes %+v", v, v2)
			}
			if dup, depth := jsonShape(in, MaxJSONDepth+1); dup || depth > MaxJSONDepth {
				t.Fatalf("accepted input with duplicate keys (%v) or nesting %d", dup, depth)
			}
		}
		if !utf8.Valid(in) || !json.Valid(in) {
			return
		}
		err := checkJSON(in)
		dup, depth := jsonShape(in, MaxJSONDepth+1)
		var ve *ValidationError
		switch {
		case depth > MaxJSONDepth:
			// Refused, for depth or for a duplicate met first.
			if err == nil {
				t.Fatalf("checkJSON accepted nesting deeper than %d", MaxJSONDepth)
			}
		case dup:
			if !errors.As(err, &ve) || ve.Msg != "duplicate key" {
				t.Fatalf("checkJSON missed a duplicate key: %v", err)
			}
		case err != nil:
			t.Fatalf("checkJSON refused valid JSON without duplicates: %v", err)
		}
	})
}
