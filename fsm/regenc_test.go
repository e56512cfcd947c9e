package fsm

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// goMsgpackEncode is Encode through go-msgpack alone.
func goMsgpackEncode(t testing.TB, r *RegisterRequest) []byte {
	t.Helper()
	pe := encoders.Get().(*pooledEncoder)
	defer encoders.Put(pe)
	pe.buf = pe.buf[:0]
	pe.enc.ResetBytes(&pe.buf)
	if err := pe.enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return append([]byte{byte(RegisterType)}, pe.buf...)
}

// FuzzEncodeRegister: the hand encoder writes go-msgpack's bytes for every
// registration, checks included, and Encode uses it.
func FuzzEncodeRegister(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(0))
	f.Fuzz(func(t *testing.T, s1, s2 uint64) {
		rng := rand.New(rand.NewPCG(s1, s2))
		for range 20 {
			r := randomRegister(rng)
			if rng.IntN(4) == 0 {
				r.Meta = map[string]string{}
				for range rng.IntN(40) {
					r.Meta[string(rune('a'+rng.IntN(26)))+string(rune('A'+rng.IntN(26)))] = "v"
				}
			}
			want := goMsgpackEncode(t, &r)
			got, err := Encode(RegisterType, &r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode differs from go-msgpack for a request with ID %.40q:\n%.400x\ngo-msgpack writes\n%.400x", r.ID, got, want)
			}
			if hand := encodeRegister(nil, &r); !bytes.Equal(hand, want[1:]) {
				t.Fatalf("encodeRegister of a request with ID %.40q = %.400x", r.ID, hand)
			}
		}
	})
}
