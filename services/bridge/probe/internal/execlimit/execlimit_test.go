package execlimit

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

type cmd struct{ line, timeout string }

func fields(c cmd) (string, string) { return c.line, c.timeout }

func TestTimeouts(t *testing.T) {
	l := Default(3)
	l.MaxCommandTime = time.Hour
	cases := []struct {
		name    string
		cmds    []cmd
		timeout string
		want    []time.Duration
		wantErr string
	}{
		{"defaults", []cmd{{"uptime", ""}, {"id", "5s"}}, "", []time.Duration{120 * time.Second, 5 * time.Second}, ""},
		{"params.timeout is the default", []cmd{{"uptime", ""}, {"id", "5s"}}, "1m", []time.Duration{time.Minute, 5 * time.Second}, ""},
		{"none", nil, "", nil, "params.commands: empty: give at least one command"},
		{"too many", []cmd{{"a", ""}, {"b", ""}, {"c", ""}, {"d", ""}}, "", nil, "params.commands: 4 commands is beyond the limit of 3"},
		{"empty command", []cmd{{"a", ""}, {" \t", ""}}, "", nil, "params.commands[1]: empty command"},
		{"default beyond max_command_time", []cmd{{"a", ""}}, "2h", nil, "params.timeout: 2h0m0s is beyond the 1h0m0s limit"},
		{"own beyond max_command_time", []cmd{{"a", ""}, {"b", "61m"}}, "", nil, "params.commands[1].timeout: 1h1m0s is beyond the 1h0m0s limit"},
		{"own not a duration", []cmd{{"a", "soon"}}, "", nil, `params.commands[0].timeout: "soon" is not a positive duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Timeouts(l, tc.cmds, tc.timeout, fields)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || probe.CodeOf(err) != probe.CodeBadParams {
					t.Fatalf("got %v, %v; want bad_params %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestPerStream(t *testing.T) {
	l := Default(100) // MaxOutput 1 MiB
	cases := []struct {
		name               string
		asked, chunk, cmds int
		want               int
		wantErr            string
	}{
		{"default within a large chunk", 0, 64 << 20, 1, 64 << 10, ""},
		{"asked within both", 200 << 10, 64 << 20, 1, 200 << 10, ""},
		{"asked beyond max_output", 2 << 20, 64 << 20, 1, 0, "params.max_output: 2097152 is beyond the limit of 1048576"},
		{"chunk shared by the streams", 0, 600 << 10, 2, (600 << 10) / 10, ""},
		{"default chunk", 0, 0, 10, (512 << 10) / 42, ""},
		{"never below 1 KiB", 0, 10 << 10, 100, 1024, ""},
		{"negative", -1, 0, 1, 0, "params.max_output: -1 is negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.PerStream(tc.asked, tc.chunk, tc.cmds)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %d, %v; want %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestConnect(t *testing.T) {
	l := Default(1)
	if d, err := l.Connect(""); err != nil || d != 15*time.Second {
		t.Errorf("default: %s, %v", d, err)
	}
	if d, err := l.Connect("3s"); err != nil || d != 3*time.Second {
		t.Errorf("3s: %s, %v", d, err)
	}
	if _, err := l.Connect("6m"); err == nil || !strings.Contains(err.Error(), "params.connect_timeout: 6m0s is beyond the 5m0s limit") {
		t.Errorf("6m: %v", err)
	}
}

func TestValidate(t *testing.T) {
	if err := Default(50).Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	var zero Limits
	err := zero.Validate()
	for _, want := range []string{"connect_timeout: want a positive duration", "command_timeout: want a positive duration no longer than max_command_time",
		"max_commands: want at least 1", "max_output: want at least 1024 bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("zero limits: %v; want every problem, among them %q", err, want)
		}
	}
}

func TestStop(t *testing.T) {
	zero, one := 0, 1
	cases := []struct {
		name        string
		stopOnError bool
		errText     string
		timedOut    bool
		exit        *int
		want        bool
	}{
		{"success", true, "", false, &zero, false},
		{"failure goes on", false, "", false, &one, false},
		{"failure with stop_on_error", true, "", false, &one, true},
		{"timeout goes on", false, "no exit within 1s: killed", true, nil, false},
		{"timeout with stop_on_error", true, "no exit within 1s: killed", true, nil, true},
		{"connection gone", false, "cannot open a session: EOF", false, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Stop(tc.stopOnError, tc.errText, tc.timedOut, tc.exit); got != tc.want {
				t.Errorf("Stop = %v, want %v", got, tc.want)
			}
		})
	}
}
