package fsm

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// reflectDecode is what decodeBody did before decodeRegister: go-msgpack.
func reflectDecode(b []byte) (*RegisterRequest, error) {
	var r RegisterRequest
	err := codec.NewDecoderBytes(b, msgpackHandle).Decode(&r)
	return &r, err
}

func randomRegister(rng *rand.Rand) RegisterRequest {
	str := func() string {
		switch rng.IntN(6) {
		case 0:
			return ""
		case 1:
			return strings.Repeat("x", 31+rng.IntN(3)) // fixstr / str8 edge
		case 2:
			return strings.Repeat("é", 100+rng.IntN(100)) // str8 / str16
		case 3:
			return strings.Repeat("a", 65530+rng.IntN(10)) // str16 / str32 edge
		}
		return []string{"web", "10.0.0.1", "ñ-ü", "a:b", "\x00"}[rng.IntN(5)]
	}
	num64 := func() int64 {
		return []int64{0, 1, 127, 128, 255, 256, 65535, 65536, -1, -32, -33, -128, -129, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64, rng.Int64()}[rng.IntN(18)]
	}
	num := func() int { // an int field: what this platform's int holds
		v := num64()
		for int64(int(v)) != v {
			v /= 1 << 16
		}
		return int(v)
	}
	r := RegisterRequest{ID: str(), Service: str(), Address: str(), Port: num(), Version: str(),
		Weight: num(), Node: str(), Trusted: rng.IntN(2) == 0, Time: num64()}
	switch rng.IntN(3) {
	case 1:
		r.Tags = []string{}
	case 2:
		for range rng.IntN(20) {
			r.Tags = append(r.Tags, str())
		}
	}
	switch rng.IntN(3) {
	case 1:
		r.Meta = map[string]string{}
	case 2:
		r.Meta = map[string]string{}
		for range rng.IntN(20) {
			r.Meta[str()] = str()
		}
	}
	switch rng.IntN(4) {
	case 1:
		r.Checks = []CheckDefinition{}
	case 2, 3:
		for range 1 + rng.IntN(3) {
			r.Checks = append(r.Checks, randomCheck(rng, str, num, num64))
		}
	}
	return r
}

// randomCheck is a check definition with every field set at random: the
// Header nil, empty or filled, its values nil, empty or filled.
func randomCheck(rng *rand.Rand, str func() string, num func() int, num64 func() int64) CheckDefinition {
	c := CheckDefinition{Name: str(), Type: CheckType(str()), Target: str(), Method: str(),
		TLSSkipVerify: rng.IntN(2) == 0, GRPCService: str(), Interval: num64(), Timeout: num64(), TTL: num64(),
		FailuresBeforeCritical: num(), SuccessesBeforePassing: num(), InitialStatus: Health(str()),
		DeregisterCriticalAfter: num64(), AnyTarget: rng.IntN(2) == 0}
	switch rng.IntN(3) {
	case 1:
		c.Header = map[string][]string{}
	case 2:
		c.Header = map[string][]string{}
		for range rng.IntN(5) {
			var v []string
			switch rng.IntN(3) {
			case 1:
				v = []string{}
			case 2:
				for range rng.IntN(4) {
					v = append(v, str())
				}
			}
			c.Header[str()] = v
		}
	}
	return c
}

// Every registration without checks that Encode writes decodes to exactly
// what go-msgpack decodes (nil and empty slices and maps included).
func TestDecodeRegisterMatchesGoMsgpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		in := randomRegister(rng)
		b, err := Encode(RegisterType, &in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := reflectDecode(b[1:])
		if err != nil {
			t.Fatal(err)
		}
		var got RegisterRequest
		if !decodeRegister(b[1:], &got) {
			t.Fatalf("case %d: decodeRegister refused what Encode wrote: %+v", i, in)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("case %d: decodeRegister = %+v, go-msgpack %+v", i, got, *want)
		}
	}
}

// What it does not handle (here: a check with a key it does not know, a
// check key twice, a Header key twice) is left to go-msgpack, and decodeBody
// still decodes it in full.
func TestDecodeRegisterLeavesTheRestToGoMsgpack(t *testing.T) {
	in := RegisterRequest{ID: "i1", Service: "web", Port: 80, Checks: []CheckDefinition{{Name: "http", Type: "http", Target: "http://127.0.0.1/", Interval: 1e9}}}
	b, err := Encode(RegisterType, &in)
	if err != nil {
		t.Fatal(err)
	}
	var r RegisterRequest
	if !decodeRegister(b[1:], &r) || !reflect.DeepEqual(r, in) {
		t.Fatalf("decodeRegister of a registration with a check = %+v, want %+v", r, in)
	}
	// The check's map with a key renamed to one CheckDefinition lacks (same
	// length), with Name written twice, and with a Header whose key repeats.
	for _, body := range [][]byte{
		bytesReplaceOnce(t, b[1:], []byte("\xa6Method"), []byte("\xa6Mathod")),
		bytesReplaceOnce(t, b[1:], []byte("\xa6Method"), []byte("\xa4Name")),
		headerTwice(t),
	} {
		var r RegisterRequest
		if decodeRegister(body, &r) {
			t.Errorf("decodeRegister took %x", body)
		}
		if !reflect.DeepEqual(r, RegisterRequest{}) {
			t.Fatalf("a refused decode left %+v", r)
		}
		want, werr := reflectDecode(body)
		var got RegisterRequest
		if err := decodeBody(body, &got); (err != nil) != (werr != nil) || (err == nil && !reflect.DeepEqual(&got, want)) {
			t.Fatalf("decodeBody = %+v, %v; go-msgpack %+v, %v", got, err, want, werr)
		}
	}
	// Another command's body, an unknown key, trailing bytes.
	d, _ := Encode(DeregisterType, &DeregisterRequest{Service: "web", ID: "i1", IfIndex: 3})
	for _, body := range [][]byte{d[1:], append(append([]byte{}, b[1:]...), 0xc0), {0x81, 0xa1, 'X', 0x01}, {}} {
		var r RegisterRequest
		if decodeRegister(body, &r) {
			t.Errorf("decodeRegister took %x", body)
		}
	}
}

// Whatever bytes decodeRegister accepts, go-msgpack decodes to the same
// request.
func FuzzDecodeRegister(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		in := randomRegister(rng)
		if len(in.ID) > 1000 || len(in.Service) > 1000 || len(in.Address) > 1000 || len(in.Version) > 1000 || len(in.Node) > 1000 {
			continue
		}
		b, _ := Encode(RegisterType, &in)
		if len(b) < 4000 {
			f.Add(b[1:])
		}
	}
	f.Add([]byte{0x81, 0xa2, 'I', 'D', 0xc0})
	// The same key twice: go-msgpack merges a map decoded twice.
	f.Add([]byte{0x82, 0xa4, 'M', 'e', 't', 'a', 0x81, 0xa1, 'a', 0xa1, '1', 0xa4, 'M', 'e', 't', 'a', 0x81, 0xa1, 'b', 0xa1, '2'})
	f.Add([]byte{0x82, 0xa4, 'T', 'a', 'g', 's', 0x92, 0xa1, 'a', 0xa1, 'b', 0xa4, 'T', 'a', 'g', 's', 0x91, 0xa1, 'x'})
	f.Add([]byte{0x81, 0xa4, 'P', 'o', 'r', 't', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got RegisterRequest
		if !decodeRegister(b, &got) {
			if !reflect.DeepEqual(got, RegisterRequest{}) {
				t.Fatalf("a refused decode left %+v", got)
			}
			return
		}
		want, err := reflectDecode(b)
		if err != nil {
			t.Fatalf("decodeRegister took %x, go-msgpack refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("%x: decodeRegister = %+v, go-msgpack %+v", b, got, *want)
		}
		// The apply path's decoder takes it too, to the same request,
		// with an interner fresh and then warm.
		in := newInterner()
		for range 2 {
			var shared RegisterRequest
			if !decodeRegisterShared(b, &shared, in) {
				t.Fatalf("%x: decodeRegister takes it, decodeRegisterShared refuses it", b)
			}
			if p := plainOf(shared); !reflect.DeepEqual(p, got) {
				t.Fatalf("%x: decodeRegisterShared = %+v, decodeRegister %+v", b, p, got)
			}
		}
	})
}

// Time is an int64 everywhere; an int field refuses what the platform's int
// cannot hold, as go-msgpack does (a review ran this on 32-bit ARM).
func TestDecodeRegisterIntegers(t *testing.T) {
	in := RegisterRequest{ID: "i1", Service: "web", Port: 80, Time: 1700736869737837380}
	b, err := Encode(RegisterType, &in)
	if err != nil {
		t.Fatal(err)
	}
	var r RegisterRequest
	if !decodeRegister(b[1:], &r) || r.Time != in.Time {
		t.Fatalf("Time = %d, want %d", r.Time, in.Time)
	}
	big := []byte{0x81, 0xa4, 'P', 'o', 'r', 't', 0xd3, 0, 0, 0, 1, 0, 0, 0, 0x50} // 2^32 + 80
	var p RegisterRequest
	ok := decodeRegister(big, &p)
	v := int64(1)<<32 + 80
	if want := int64(int(v)) == v; ok != want {
		t.Fatalf("a Port of 2^32+80 accepted = %v, want %v on this platform", ok, want)
	}
	if ok && int64(p.Port) != v {
		t.Fatalf("Port = %d", p.Port)
	}
}

// Into a request that already holds values, go-msgpack merges (maps, and the
// fields the input leaves out): decodeRegister leaves that to it.
func TestDecodeRegisterIntoANonZeroRequest(t *testing.T) {
	b, err := Encode(RegisterType, &RegisterRequest{ID: "i1", Service: "web", Meta: map[string]string{"a": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	r := RegisterRequest{Meta: map[string]string{"x": "1"}}
	if decodeRegister(b[1:], &r) {
		t.Fatal("decodeRegister decoded into a request that was not zero")
	}
	if _, err := Decode(b, &r); err != nil {
		t.Fatal(err)
	}
	want, _ := reflectDecode(b[1:])
	want.Meta["x"] = "1"
	if !reflect.DeepEqual(&r, want) {
		t.Fatalf("Decode into a non-zero request = %+v, want go-msgpack's merge %+v", r, *want)
	}
}

// bytesReplaceOnce replaces the one occurrence of old in b.
func bytesReplaceOnce(t *testing.T, b, old, new []byte) []byte {
	t.Helper()
	if bytes.Count(b, old) != 1 {
		t.Fatalf("%q occurs %d times", old, bytes.Count(b, old))
	}
	return bytes.Replace(b, old, new, 1)
}

// headerTwice is a registration whose one check's Header holds the key "A"
// twice.
func headerTwice(t *testing.T) []byte {
	t.Helper()
	in := RegisterRequest{ID: "i1", Service: "web", Checks: []CheckDefinition{{Name: "h", Header: map[string][]string{"A": {"1"}, "B": {"2", "3"}}}}}
	b, err := Encode(RegisterType, &in)
	if err != nil {
		t.Fatal(err)
	}
	return bytesReplaceOnce(t, b[1:], []byte("\xa1B"), []byte("\xa1A"))
}

// BenchmarkDecodeRegisterWithCheck decodes a registration with one HTTP
// check, as the Consul API's agents send them, by hand and with go-msgpack
// (what such a registration cost every node before decodeCheck).
func BenchmarkDecodeRegisterWithCheck(b *testing.B) {
	in := checkedRegistration()
	enc, err := Encode(RegisterType, &in)
	if err != nil {
		b.Fatal(err)
	}
	body := enc[1:]
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r RegisterRequest
			if !decodeRegister(body, &r) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("go-msgpack", func(b *testing.B) { // as decodeBody's fallback: a pooled decoder
		b.ReportAllocs()
		for b.Loop() {
			var r RegisterRequest
			dec := decoders.Get().(*codec.Decoder)
			dec.ResetBytes(body)
			if err := dec.Decode(&r); err != nil {
				b.Fatal(err)
			}
			dec.ResetBytes(nil)
			decoders.Put(dec)
		}
	})
}

// checkedRegistration is a registration with one HTTP check, as a
// Consul-API agent sends it.
func checkedRegistration() RegisterRequest {
	return RegisterRequest{ID: "i-2000001", Service: "bench-1", Address: "10.0.7.209", Port: 3025,
		Tags: []string{"bench", "v1"}, Meta: map[string]string{"zone": "z1"}, Version: "1.0.1", Time: 1,
		Checks: []CheckDefinition{{Name: "http", Type: CheckHTTP, Target: "http://10.0.7.209:3025/health",
			Interval: 10e9, Timeout: 2e9, FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: Passing}}}
}

// BenchmarkEncodeRegisterWithCheck encodes a registration with one HTTP
// check by hand (Encode) and with go-msgpack (what Encode did for one
// with checks before appendDefinition).
func BenchmarkEncodeRegisterWithCheck(b *testing.B) {
	in := checkedRegistration()
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(RegisterType, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			goMsgpackEncode(b, &in)
		}
	})
}

// plainOf is what decodeRegister gives for a request decodeRegisterShared
// gave: Meta as a map (MetaMap), and the apply path's fields cleared.
func plainOf(r RegisterRequest) RegisterRequest {
	r.Meta = r.MetaMap()
	r.meta, r.interned = nil, false
	return r
}

// The apply path's decoder gives what decodeRegister gives, with the
// repeated values taken from the interner: a second decode of the same
// registration shares every one of them with the first.
func TestDecodeRegisterSharedMatchesAndShares(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	in := newInterner()
	for i := range 3000 {
		reg := randomRegister(rng)
		b, err := Encode(RegisterType, &reg)
		if err != nil {
			t.Fatal(err)
		}
		var want, first, second RegisterRequest
		if !decodeRegister(b[1:], &want) {
			t.Fatalf("case %d: decodeRegister refused what Encode wrote", i)
		}
		if !decodeRegisterShared(b[1:], &first, in) || !decodeRegisterShared(b[1:], &second, in) {
			t.Fatalf("case %d: decodeRegisterShared refused what Encode wrote: %+v", i, reg)
		}
		short := true
		for k, v := range reg.Meta {
			short = short && len(k)+len(v) <= internMaxLen
		}
		if !first.interned || (len(reg.Meta) > 0 && len(reg.Meta) <= maxSharedMeta && short) != (first.meta != nil) {
			t.Fatalf("case %d: interned %v, meta as pairs %v for %d keys", i, first.interned, first.meta != nil, len(reg.Meta))
		}
		if got := plainOf(first); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: decodeRegisterShared = %+v, decodeRegister %+v", i, got, want)
		}
		if got := plainOf(second); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: a second decodeRegisterShared = %+v, decodeRegister %+v", i, got, want)
		}
		if in.full() {
			continue // the tables were dropped between the two decodes
		}
		for _, s := range [][2]string{{first.Service, second.Service}, {first.Version, second.Version}, {first.Node, second.Node}} {
			if s[0] != "" && len(s[0]) <= internMaxLen && unsafe.StringData(s[0]) != unsafe.StringData(s[1]) {
				t.Fatalf("case %d: %q decoded twice into two copies", i, s[0])
			}
		}
		if len(first.Tags) > 0 && &first.Tags[0] != &second.Tags[0] && slices.IndexFunc(first.Tags, func(t string) bool { return len(t) > internMaxLen }) < 0 {
			t.Fatalf("case %d: tags %q decoded twice into two slices", i, first.Tags)
		}
		if len(first.meta) > 0 && &first.meta[0] != &second.meta[0] {
			t.Fatalf("case %d: meta %v decoded twice into two slices", i, first.meta)
		}
	}
}

// Tags or meta that a separator byte would confuse are not shared.
func TestSharedTagsAndMetaKeepTheirBoundaries(t *testing.T) {
	in := newInterner()
	decode := func(r RegisterRequest) RegisterRequest {
		b, err := Encode(RegisterType, &r)
		if err != nil {
			t.Fatal(err)
		}
		var got RegisterRequest
		if !decodeRegisterShared(b[1:], &got, in) {
			t.Fatalf("refused %+v", r)
		}
		return got
	}
	a := decode(RegisterRequest{ID: "1", Service: "s", Tags: []string{"a\x00", "b"}, Meta: map[string]string{"k": "v\x00w"}})
	b := decode(RegisterRequest{ID: "2", Service: "s", Tags: []string{"a", "\x00b"}, Meta: map[string]string{"k": "v\x00w"}})
	c := decode(RegisterRequest{ID: "3", Service: "s", Meta: map[string]string{"k\x00v": "w"}})
	if !slices.Equal(a.Tags, []string{"a\x00", "b"}) || !slices.Equal(b.Tags, []string{"a", "\x00b"}) {
		t.Fatalf("tags %q and %q", a.Tags, b.Tags)
	}
	if !slices.Equal(c.meta, []Pair{{"k\x00v", "w"}}) || !slices.Equal(a.meta, []Pair{{"k", "v\x00w"}}) {
		t.Fatalf("meta %v and %v", a.meta, c.meta)
	}
	// The apply path's tagsOf and metaOf keep the same boundaries.
	if got := in.tagsOf([]string{"a", "\x00b"}); !slices.Equal(got, []string{"a", "\x00b"}) {
		t.Fatalf("tagsOf = %q", got)
	}
	if got := in.metaOf([]Pair{{"k\x00v", "w"}}); !slices.Equal(got, []Pair{{"k\x00v", "w"}}) {
		t.Fatalf("metaOf = %v", got)
	}
}

// Decoding a registration whose service, version, node, tags and meta the
// catalog holds already allocates only its own ID and address: every node
// decodes every registration.
func TestDecodeRegisterSharedAllocatesOnlyWhatIsNew(t *testing.T) {
	reg := RegisterRequest{ID: "i-1", Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"bench", "v1"},
		Meta: map[string]string{"zone": "z1", "rack": "r2"}, Version: "1.0.3", Weight: 1, Node: "b1", Time: 1}
	b, err := Encode(RegisterType, &reg)
	if err != nil {
		t.Fatal(err)
	}
	in := newInterner()
	var r RegisterRequest
	if !decodeRegisterShared(b[1:], &r, in) {
		t.Fatal("refused")
	}
	shared := testing.AllocsPerRun(100, func() {
		r = RegisterRequest{}
		if !decodeRegisterShared(b[1:], &r, in) {
			t.Fatal("refused")
		}
	})
	plain := testing.AllocsPerRun(100, func() {
		r = RegisterRequest{}
		if !decodeRegister(b[1:], &r) {
			t.Fatal("refused")
		}
	})
	if shared != 2 {
		t.Fatalf("decodeRegisterShared allocates %v times, want 2 (ID and address); decodeRegister %v", shared, plain)
	}
	t.Logf("allocations per decode: %v shared, %v plain", shared, plain)
}
