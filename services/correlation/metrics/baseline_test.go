package metrics

import (
	"math"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }

// The EWMA is a plain mean and population variance for its first 1/alpha samples, then
// weights a new sample by alpha.
func TestMomentsEWMA(t *testing.T) {
	for _, tc := range []struct {
		name       string
		alpha      float64
		xs         []float64
		mean, var_ float64
	}{
		{"one sample", 0.1, []float64{5}, 5, 0},
		{"plain mean while young", 0.1, []float64{2, 4, 6, 8}, 5, 5},
		{"constant", 0.5, []float64{7, 7, 7, 7, 7}, 7, 0},
		// alpha 0.5: n=1 → 0; n=2 (a=.5) → mean 1, var .5*(0+.5*4)=1; n=3 (a=.5) → d=3, mean 2.5, var .5*(1+.5*9)=2.75
		{"exponential once old", 0.5, []float64{0, 2, 4}, 2.5, 2.75},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Moments
			for _, x := range tc.xs {
				m.Add(x, tc.alpha)
			}
			if !near(m.Mean, tc.mean) || !near(m.Var, tc.var_) || m.N != int64(len(tc.xs)) {
				t.Fatalf("after %v (alpha %g): n %d mean %g var %g, want mean %g var %g", tc.xs, tc.alpha, m.N, m.Mean, m.Var, tc.mean, tc.var_)
			}
		})
	}
}

func TestHourOfWeek(t *testing.T) {
	for _, tc := range []struct {
		at   string
		want int
	}{
		{"2026-11-30T00:00:00Z", 0},        // a Monday
		{"2026-11-30T09:30:00Z", 9},        // Monday 09:xx
		{"2026-12-01T00:00:00Z", 24},       // Tuesday
		{"2026-12-06T23:59:59Z", 167},      // Sunday's last hour
		{"2026-12-07T01:00:00+02:00", 167}, // Monday 01:00 at +2 is Sunday 23:00 UTC
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := HourOfWeek(at); got != tc.want {
			t.Errorf("HourOfWeek(%s) = %d, want %d", tc.at, got, tc.want)
		}
	}
}

// A series on a timeline: no score before MinSamples, an anomaly scored in deviations, a
// spike learnt clamped, the next normal sample clearing it, a redelivered sample skipped,
// the hour-of-week band excusing a value it expects, counters as rates with a 32-bit wrap.
func TestObserveTimeline(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC) // Monday 09:00
	cfg := api.Baseline{Alpha: 0.1, Threshold: 4, MinSamples: 5}.Defaults()
	type step struct {
		at      time.Duration
		x       float64
		skipped string
		ready   bool
		anomaly bool
		cleared bool
		score   float64 // checked when >= 0
		band    bool
	}
	run := func(t *testing.T, st *State, counter bool, steps []step) {
		t.Helper()
		for i, s := range steps {
			out := st.Observe(cfg, s.x, t0.Add(s.at), counter)
			if out.Skipped != s.skipped || out.Ready != s.ready || out.Anomaly != s.anomaly || out.Cleared != s.cleared || out.Band != s.band ||
				(s.score >= 0 && !near(out.Score, s.score)) {
				t.Fatalf("step %d (x=%g at +%s): %+v, want skipped %q ready %v anomaly %v cleared %v band %v score %g",
					i, s.x, s.at, out, s.skipped, s.ready, s.anomaly, s.cleared, s.band, s.score)
			}
		}
	}
	t.Run("gauge", func(t *testing.T) {
		st := &State{}
		steps := []step{}
		for i := range 5 { // 100 ±1: mean 100, var 1 (population), so stddev 1 — but floored at 1 % of 100 = 1
			x := 99.0
			if i%2 == 1 {
				x = 101
			}
			if i == 4 {
				x = 100
			}
			steps = append(steps, step{at: time.Duration(i) * time.Minute, x: x, score: 0})
		}
		run(t, st, false, steps)
		if st.EWMA.N != 5 || !near(st.EWMA.Mean, 100) {
			t.Fatalf("baseline after 5 samples: %+v", st.EWMA)
		}
		sd := st.EWMA.StdDev()
		run(t, st, false, []step{
			{at: 5 * time.Minute, x: 101, ready: true, band: true, score: 1 / sd},
			{at: 6 * time.Minute, x: 200, ready: true, band: true, anomaly: true, score: -1},
			{at: 6 * time.Minute, x: 200, skipped: "old", score: 0},              // the same slot again
			{at: 5*time.Minute + 30*time.Second, x: 1, skipped: "old", score: 0}, // older than the last
		})
		if !st.Series.Anomalous || st.EWMA.Mean > 101 {
			t.Fatalf("after the spike: anomalous %v, mean %g (the spike must be learnt clamped to the band, not as 200)", st.Series.Anomalous, st.EWMA.Mean)
		}
		run(t, st, false, []step{{at: 7 * time.Minute, x: 100, ready: true, band: true, cleared: true, score: -1}})
		if st.Series.Anomalous {
			t.Fatal("still anomalous after a normal sample")
		}
	})
	t.Run("hour-of-week band excuses what it expects", func(t *testing.T) {
		st := &State{}
		// Monday 09:00 had 500 for five weeks; the rest of the week 100.
		for w := range 5 {
			week := time.Duration(w) * 7 * 24 * time.Hour
			for i := range 5 {
				st.Observe(cfg, 500, t0.Add(week+time.Duration(i)*time.Minute), false)
			}
			for i := range 60 { // enough for the EWMA to forget the 500s: alpha 0.1 keeps 0.9^60 of them
				st.Observe(cfg, 100, t0.Add(week+time.Hour+time.Duration(i)*time.Minute), false)
			}
		}
		// Monday 09:00 of week 6: 500 is far from the EWMA (~100) but what the band expects.
		out := st.Observe(cfg, 500, t0.Add(5*7*24*time.Hour), false)
		if !out.Band || out.Anomaly || out.Score >= cfg.Threshold {
			t.Fatalf("500 at the band's hour: %+v, want the band used and no anomaly", out)
		}
		// At 11:00 the band says 100: 500 there is an anomaly.
		// At 10:xx the band says 100, and so does the EWMA after an hour of 100s: an anomaly.
		for i := range 60 {
			st.Observe(cfg, 100, t0.Add(5*7*24*time.Hour+time.Hour+time.Duration(i)*time.Minute), false)
		}
		out = st.Observe(cfg, 500, t0.Add(5*7*24*time.Hour+time.Hour+59*time.Minute+30*time.Second), false)
		if !out.Band || !out.Anomaly {
			t.Fatalf("500 at 10:59:30: %+v, want an anomaly", out)
		}
	})
	t.Run("counter", func(t *testing.T) {
		st := &State{}
		run(t, st, true, []step{
			{at: 0, x: 1000, skipped: "first reading", score: 0},
			{at: 10 * time.Second, x: 2000, score: 0}, // 100/s
		})
		if !near(st.Series.LastValue, 100) {
			t.Fatalf("rate %g, want 100/s", st.Series.LastValue)
		}
		st.Raw = &Reading{Value: 1<<32 - 500, Time: t0.Add(10 * time.Second)}
		run(t, st, true, []step{{at: 20 * time.Second, x: 500, score: -1}}) // wrapped: 1000 in 10 s
		if !near(st.Series.LastValue, 100) {
			t.Fatalf("rate across a 32-bit wrap %g, want 100/s", st.Series.LastValue)
		}
		st.Raw = &Reading{Value: 1 << 40, Time: t0.Add(20 * time.Second)}
		run(t, st, true, []step{{at: 30 * time.Second, x: 5, skipped: "reset", score: 0}})
	})
}
