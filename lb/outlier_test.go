package lb

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestOutlierEjection(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EjectAfter, cfg.EjectBase, cfg.EjectMax = 3, time.Second, 4*time.Second
	always := func() bool { return true }
	t.Run("consecutive failures eject with a doubling back-off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &instanceState{}
			now := func() int64 { return time.Now().UnixNano() }
			for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
				for i := 0; i < 2; i++ {
					if d := s.fail(now(), &cfg, always); d != 0 {
						t.Fatalf("ejected after %d failures", i+1)
					}
				}
				if d := s.fail(now(), &cfg, always); d != want {
					t.Fatalf("ejected for %v, want %v", d, want)
				}
				if !s.ejected(now()) {
					t.Fatal("not ejected after ejection")
				}
				time.Sleep(want - time.Nanosecond)
				if !s.ejected(now()) {
					t.Fatal("ejection ended early")
				}
				time.Sleep(time.Nanosecond)
				if s.ejected(now()) {
					t.Fatal("ejection did not end")
				}
			}
		})
	})
	t.Run("a success resets the count of failures", func(t *testing.T) {
		s := &instanceState{}
		now := time.Now().UnixNano()
		s.fail(now, &cfg, always)
		s.fail(now, &cfg, always)
		s.succeed(now, &cfg)
		if d := s.fail(now, &cfg, always); d != 0 {
			t.Fatal("ejected although failures were not consecutive")
		}
	})
	t.Run("the back-off forgets after good behaviour", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &instanceState{}
			for i := 0; i < 3; i++ {
				s.fail(time.Now().UnixNano(), &cfg, always)
			}
			time.Sleep(cfg.EjectBase + cfg.EjectMax + time.Millisecond)
			s.succeed(time.Now().UnixNano(), &cfg)
			for i := 0; i < 2; i++ {
				s.fail(time.Now().UnixNano(), &cfg, always)
			}
			if d := s.fail(time.Now().UnixNano(), &cfg, always); d != cfg.EjectBase {
				t.Fatalf("ejected for %v after a long good spell, want the base %v", d, cfg.EjectBase)
			}
		})
	})
	t.Run("no ejection beyond the allowed share", func(t *testing.T) {
		tbl := build(cfg, be("a", Passing, ""), be("b", Passing, ""), be("c", Passing, ""), be("d", Passing, ""))
		now := time.Now().UnixNano()
		ejected := 0
		for _, e := range tbl.routed {
			for i := 0; i < 3; i++ {
				if e.state.fail(now, &cfg, func() bool { return tbl.canEject(&cfg, now) }) > 0 {
					ejected++
				}
			}
		}
		if ejected != 2 {
			t.Fatalf("%d of 4 ejected, want 2 (max share 0.5)", ejected)
		}
		// With every candidate left ejected or tried, the ejected ones still serve.
		if _, e := tbl.pick(Key{}, []int{0, 1}, now); e == nil {
			t.Fatal("no pick with only ejected candidates left")
		}
	})
}

func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.RetryBudgetRatio, cfg.RetryBudgetMinPerSecond = 0.2, 10
		b := newRetryBudget(&cfg, time.Now())
		now := func() int64 { return time.Now().UnixNano() }
		n := 0
		for b.withdraw(now()) {
			n++
		}
		if n != 100 {
			t.Fatalf("a full budget allowed %d retries, want 100", n)
		}
		for i := 0; i < 50; i++ {
			b.deposit()
		}
		n = 0
		for b.withdraw(now()) {
			n++
		}
		if n != 10 {
			t.Fatalf("50 requests earned %d retries, want 10 (20%%)", n)
		}
		time.Sleep(time.Second)
		n = 0
		for b.withdraw(now()) {
			n++
		}
		if n != 10 {
			t.Fatalf("a second earned %d retries, want 10", n)
		}
	})
}
