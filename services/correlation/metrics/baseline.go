package metrics

import (
	"math"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// bandAlpha is the weight of a new sample in an hour-of-week band. A band sees a whole
// hour's samples each week, so it must remember weeks, not minutes: 1/100 keeps about the
// last hundred samples of that hour (a fortnight at one sample a minute), where the EWMA
// (Baseline.Alpha, 0.1) follows the last few.
const bandAlpha = 0.01

// relFloor and absFloor bound a standard deviation from below, so a perfectly constant
// series (stddev 0) scores a change by its size relative to the mean rather than dividing
// by zero: 1 % of the mean is one "deviation".
const (
	relFloor = 0.01
	absFloor = 1e-6
)

// Moments are an exponentially weighted mean and variance. The weight of a new sample is
// max(alpha, 1/n): the first 1/alpha samples are averaged plainly (Welford's population
// variance), so a young series is not dominated by its first value; after that older
// samples fade geometrically.
type Moments struct {
	N    int64   `json:"n"`
	Mean float64 `json:"mean"`
	Var  float64 `json:"var"`
}

// Add takes x into the moments.
func (m *Moments) Add(x, alpha float64) {
	m.N++
	a := max(alpha, 1/float64(m.N))
	d := x - m.Mean
	m.Mean += a * d
	m.Var = (1 - a) * (m.Var + a*d*d)
}

// StdDev is the floored standard deviation a score is measured in.
func (m Moments) StdDev() float64 {
	return max(math.Sqrt(m.Var), relFloor*math.Abs(m.Mean), absFloor)
}

// z is how many deviations x is from the mean.
func (m Moments) z(x float64) float64 { return math.Abs(x-m.Mean) / m.StdDev() }

// HourOfWeek is the band of t: 0 is Monday 00:00–01:00 UTC, 167 Sunday 23:00–24:00.
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return (int(t.Weekday())+6)%7*24 + t.Hour()
}

// State is one series' baseline, kept in KV between samples.
type State struct {
	Series api.Series `json:"series"`
	EWMA   Moments    `json:"ewma"`
	// Bands by hour of the week (at most 168).
	Bands map[int]*Moments `json:"bands,omitempty"`
	// Raw is a counter's last reading, from which the next one's rate is taken.
	Raw *Reading `json:"raw,omitempty"`
}

// Reading is a counter's value at a time.
type Reading struct {
	Value float64   `json:"value"`
	Time  time.Time `json:"time"`
}

// Outcome is what one sample did to its series.
type Outcome struct {
	// Skipped says why the sample changed nothing: "old" (at or before the last sample —
	// a redelivery), "first reading" (a counter's first value has no rate yet), "reset" (a
	// counter went down further than a 32-bit wrap explains).
	Skipped string
	// Value is the sample (a counter's rate per second).
	Value float64
	// Ready: the baseline had MinSamples before this sample, so Score means something.
	Ready bool
	// Score is the sample's distance from what was expected, in standard deviations: from
	// the EWMA, and when the sample's hour-of-week band is ready the smaller of the two — a
	// value the band expects (the Monday 09:00 backup) or the EWMA has accepted (a level
	// shift already lived with) is not an anomaly.
	Score    float64
	Anomaly  bool
	Expected float64 // the EWMA mean
	Low      float64 // the expected range: mean ± threshold deviations (the band's when used)
	High     float64
	Band     bool // the hour-of-week band took part
	// Cleared: the series was anomalous and this sample is normal again.
	Cleared bool
}

// Observe takes the sample x at t into the series (cfg's defaults applied by the caller):
// rate for a counter, score against the baseline as it was, then the baseline learns the
// sample. An anomalous sample is learnt clamped to the expected range, so one spike does not
// inflate the variance and hide the next, while a lasting shift still moves the mean (by up
// to alpha × threshold deviations a sample) until it is accepted.
func (st *State) Observe(cfg api.Baseline, x float64, t time.Time, counter bool) Outcome {
	if !st.Series.LastTime.IsZero() && !t.After(st.Series.LastTime) {
		return Outcome{Skipped: "old"}
	}
	if counter {
		prev := st.Raw
		st.Raw = &Reading{Value: x, Time: t}
		if prev == nil {
			st.Series.LastTime = t
			return Outcome{Skipped: "first reading"}
		}
		dt := t.Sub(prev.Time).Seconds()
		d := x - prev.Value
		if d < 0 {
			if prev.Value < 1<<32 && x < 1<<32 {
				d += 1 << 32 // a 32-bit counter wrapped
			} else {
				st.Series.LastTime = t
				return Outcome{Skipped: "reset"}
			}
		}
		x = d / dt
	}
	out := Outcome{Value: x, Expected: st.EWMA.Mean}
	how := HourOfWeek(t)
	if st.Bands == nil {
		st.Bands = map[int]*Moments{}
	}
	band := st.Bands[how]
	if band == nil {
		band = &Moments{}
		st.Bands[how] = band
	}
	need := int64(cfg.MinSamples)
	ref := st.EWMA
	if st.EWMA.N >= need {
		out.Ready = true
		out.Score = st.EWMA.z(x)
		if band.N >= need {
			out.Band = true
			if bz := band.z(x); bz < out.Score {
				out.Score, ref = bz, *band
			}
		}
		out.Anomaly = out.Score >= cfg.Threshold
	}
	out.Low = ref.Mean - cfg.Threshold*ref.StdDev()
	out.High = ref.Mean + cfg.Threshold*ref.StdDev()
	learn := x
	if out.Anomaly {
		learn = math.Min(math.Max(x, out.Low), out.High)
	}
	st.EWMA.Add(learn, cfg.Alpha)
	band.Add(learn, bandAlpha)
	out.Cleared = st.Series.Anomalous && out.Ready && !out.Anomaly
	st.Series.Anomalous = out.Anomaly || (st.Series.Anomalous && !out.Cleared)
	st.Series.LastValue, st.Series.LastTime, st.Series.LastScore = x, t, out.Score
	return out
}

// View is the series as the API shows it.
func (st *State) View() api.Series {
	s := st.Series
	s.Samples, s.Mean, s.StdDev = st.EWMA.N, st.EWMA.Mean, math.Sqrt(st.EWMA.Var)
	if b := st.Bands[HourOfWeek(s.LastTime)]; b != nil && !s.LastTime.IsZero() {
		s.Band = &api.Band{Hour: HourOfWeek(s.LastTime), Samples: b.N, Mean: b.Mean, StdDev: math.Sqrt(b.Var)}
	}
	return s
}
