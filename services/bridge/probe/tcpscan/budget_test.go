package tcpscan

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// The bucket, on given times: a burst of 20 ms of tokens, then one token per 1/rate, the
// wait it asks is the time to the next token, and a token given back can be taken again.
func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBucket(500) // burst: 10
	for i := range 10 {
		if ok, _ := b.take(t0); !ok {
			t.Fatalf("token %d of the burst refused", i+1)
		}
	}
	ok, wait := b.take(t0)
	if ok || wait != 2*time.Millisecond {
		t.Fatalf("after the burst: ok %v, wait %s; want refused, wait 2ms", ok, wait)
	}
	if ok, _ := b.take(t0.Add(2 * time.Millisecond)); !ok {
		t.Fatal("no token 2 ms (1/500 s) after the burst")
	}
	if ok, _ := b.take(t0.Add(2 * time.Millisecond)); ok {
		t.Fatal("a second token within the same 2 ms")
	}
	b.giveBack()
	if ok, _ := b.take(t0.Add(2 * time.Millisecond)); !ok {
		t.Fatal("a token given back cannot be taken")
	}
	// a long idle refills only the burst
	n := 0
	for ok, _ := b.take(t0.Add(time.Hour)); ok; ok, _ = b.take(t0.Add(time.Hour)) {
		n++
	}
	if n != 10 {
		t.Errorf("after an hour idle %d tokens at once, want the burst of 10", n)
	}
	if nb := newBucket(0); nb != nil {
		t.Errorf("rate 0: a bucket %+v, want none (unlimited)", nb)
	}
	var unlimited *bucket
	if ok, _ := unlimited.take(t0); !ok {
		t.Error("the unlimited bucket refused a token")
	}
}

// The bridge's rate is one budget for all its tcp_scan probes: three scans at once on a
// bridge of 500 attempts/s take at least as long as their attempts together need at that
// rate (three per-probe rates would have finished in a third of it), a probe asking more
// than the budget gets no more, and a probe's own lower rate holds. Only lower bounds of
// time are asserted: a loaded machine makes scans slower, never faster.
func TestBridgeRateIsShared(t *testing.T) {
	const rate = 500.0
	f := NewFactory()
	cfg := f.DefaultConfig().(Config)
	cfg.Rate = rate
	r, err := f.Create(context.Background(), probe.Settings{Allowed: func(ip net.IP) bool { return ip.IsLoopback() }}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// an address nothing listens on in a free lab range: every port answers with a reset
	scan := func(params map[string]any) (*Summary, error) {
		params["targets"] = "127.77.117.9"
		params["retries"] = 0
		b, _ := json.Marshal(params)
		res, err := r.Run(context.Background(), probe.Request{Params: b}, nil)
		s, _ := res.(*Summary)
		return s, err
	}
	// at least the time n attempts need once the burst (20 ms of them) is spent
	atLeast := func(n int64, rate float64) time.Duration {
		return time.Duration((float64(n) - max(1, rate/50)) / rate * float64(time.Second))
	}

	t.Run("three scans at once share it", func(t *testing.T) {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var probes int64
		var errs []string
		for range 3 {
			wg.Go(func() {
				s, err := scan(map[string]any{"ports": "1-100"})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err.Error())
					return
				}
				probes += s.Probes
				if s.BridgeRate != rate || s.Rate != rate {
					errs = append(errs, "summary rate "+jsonOf(s))
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		if len(errs) > 0 {
			t.Fatal(strings.Join(errs, "; "))
		}
		if probes != 300 {
			t.Fatalf("%d attempts, want 300 (3 × 100 closed ports, no retries)", probes)
		}
		if want := atLeast(probes, rate); took < want {
			t.Errorf("3 scans of %d attempts together took %s at a bridge rate of %v/s: faster than the budget allows (%s)", probes, took, rate, want)
		}
	})
	t.Run("a probe's rate above the budget does not lift it", func(t *testing.T) {
		start := time.Now()
		s, err := scan(map[string]any{"ports": "1-200", "rate": 5000})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if s.Rate != rate {
			t.Errorf("summary rate %v, want the bridge's %v", s.Rate, rate)
		}
		if want := atLeast(s.Probes, rate); took < want {
			t.Errorf("%d attempts asking 5000/s took %s: faster than the bridge's %v/s allows (%s)", s.Probes, took, rate, want)
		}
	})
	t.Run("a probe's own lower rate holds", func(t *testing.T) {
		start := time.Now()
		s, err := scan(map[string]any{"ports": "1-60", "rate": 100})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if s.Rate != 100 || s.BridgeRate != rate {
			t.Errorf("summary rate %v of bridge %v, want 100 of %v", s.Rate, s.BridgeRate, rate)
		}
		if want := atLeast(s.Probes, 100); took < want {
			t.Errorf("%d attempts at 100/s took %s: faster than its own rate allows (%s)", s.Probes, took, want)
		}
	})
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

// The config's rate is validated, and max_rate — the per-probe ceiling of old — is refused
// with what to do instead.
func TestConfigRate(t *testing.T) {
	def := NewFactory().DefaultConfig().(Config)
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"unlimited", func(c *Config) { c.Rate = 0 }, ""},
		{"negative", func(c *Config) { c.Rate = -1 }, "rate: -1: want connection attempts per second for the whole bridge"},
		{"max_rate", func(c *Config) { c.MaxRate = 5000 }, "max_rate: no longer a setting: rate is now the bridge's budget"},
		{"both", func(c *Config) { c.Rate = -1; c.Engine = "x" }, `engine: "x"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := def
			c.edit(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one saying %q", err, c.want)
			}
			if c.name == "both" && (err == nil || !strings.Contains(err.Error(), "rate: -1")) {
				t.Errorf("error %v: want every problem reported", err)
			}
		})
	}
}
