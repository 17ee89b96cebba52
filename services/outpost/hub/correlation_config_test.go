package hub_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/services/correlation"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// `outpost up --correlation-rules DIR` refuses a bad rule file before anything starts, with
// its file:line; --notify specs are read into notifiers or refused saying what to give.
func TestUpChecksCorrelationRulesAndNotifiers(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(bad, []byte("grouping:\n  group_wait: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := hub.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CorrelationRules = dir
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), bad+":2:") {
		t.Errorf("Validate() = %v, want the bad rule at %s:2", err, bad)
	}
	cfg.CorrelationRules = filepath.Join(dir, "missing")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--correlation-rules") {
		t.Errorf("Validate() = %v, want --correlation-rules refused", err)
	}
	if err := os.WriteFile(bad, []byte("topology: {window: 2m}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.CorrelationRules = dir
	if err := cfg.Validate(); err != nil {
		t.Errorf("good rules refused: %v", err)
	}

	for _, tc := range []struct{ spec, want string }{
		{"ops=https://hooks.example.test/x", ""},
		{"mail=smtp://127.0.0.1:25?from=o@example.test&to=a@example.test&to=b@example.test", ""},
		{"https://hooks.example.test/x", "want NAME=URL"},
		{"mail=smtp://127.0.0.1:25?from=o@example.test", "smtp needs addr, from and to"},
		{"x=ftp://h/", "want http, https or smtp"},
	} {
		n, err := correlation.ParseNotifier(tc.spec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.spec, err, tc.want)
		case tc.want == "" && n.SMTP != nil && len(n.SMTP.To) != 2:
			t.Errorf("%s: %+v", tc.spec, n.SMTP)
		}
	}
}
