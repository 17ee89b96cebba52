package correlation

import (
	"strings"
	"testing"
	"time"
)

func TestRank(t *testing.T) {
	want := map[string]int{"critical": 5, "major": 4, "minor": 3, "warning": 2, "info": 1, "clear": 0, "loud": -1, "": -1}
	for sev, r := range want {
		if got := Rank(sev); got != r {
			t.Errorf("Rank(%q) = %d, want %d", sev, got, r)
		}
	}
}

func TestEventInputValidate(t *testing.T) {
	tests := []struct {
		name string
		in   EventInput
		want []string // substrings of the error; none: valid
	}{
		{"minimal", EventInput{Node: "n"}, nil},
		{"message key stands for node", EventInput{MessageKey: "k"}, nil},
		{"every problem at once", EventInput{Severity: "loud", Message: strings.Repeat("m", MaxMessageLen+1)},
			[]string{`"severity" "loud"`, `"message"`, `"node" is required`}},
		{"long field", EventInput{Node: strings.Repeat("n", MaxFieldLen+1)}, []string{`"node"`}},
	}
	for _, tt := range tests {
		err := tt.in.Validate()
		if len(tt.want) == 0 && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to say %s", tt.name, err, w)
			}
		}
	}
}

func TestEventDefaults(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	ev := EventInput{Node: "n", Additional: map[string]any{"v": 97.5, "s": "x"}}.Event("id1", "dc1", SourceWebhook, now)
	if ev.Type != SourceWebhook || ev.Severity != DefaultSeverity || !ev.Time.Equal(now) || ev.Fields["v"] != "97.5" || ev.Fields["s"] != "x" {
		t.Errorf("%+v", ev)
	}
	if err := ev.Validate(); err != nil {
		t.Error(err)
	}
}

func TestSilence(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	if _, err := (SilenceAddRequest{Match: map[string]string{"colour": "red", "node": ""}, For: "forever"}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "colour") || !strings.Contains(err.Error(), "empty value") || !strings.Contains(err.Error(), "forever") {
		t.Errorf("Validate: %v", err)
	}
	d, err := SilenceAddRequest{Match: map[string]string{"node": "n", "additional.rack": "r1"}, For: "2h"}.Validate()
	if err != nil || d != 2*time.Hour {
		t.Fatalf("Validate: %v %v", d, err)
	}
	s := Silence{Match: map[string]string{"node": "n", "additional.rack": "r1"}, StartsAt: now, EndsAt: now.Add(d)}
	a := &Alert{Node: "n", Additional: map[string]string{"rack": "r1"}}
	if !s.Matches(a) || !s.Active(now) || s.Active(now.Add(d)) || s.Active(now.Add(-time.Second)) {
		t.Error("silence match or window wrong")
	}
	a.Additional["rack"] = "r2"
	if s.Matches(a) {
		t.Error("matched an alert with another rack")
	}
}
