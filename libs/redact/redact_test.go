package redact_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/redact"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://hooks.example.test/services/T0/B0/s3cr3t", "https://hooks.example.test/…"},
		{"https://user:s3cr3t@hooks.example.test/x?key=s3cr3t", "https://hooks.example.test/…"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
		{"http://127.0.0.1:8080/?token=s3cr3t", "http://127.0.0.1:8080/…"},
		{"http://127.0.0.1:8080/hook#s3cr3t", "http://127.0.0.1:8080/…"},
		{"::not a url s3cr3t", "(unparsable URL, not shown)"},
	} {
		if got := redact.URLString(tc.in); got != tc.want || strings.Contains(got, "s3cr3t") {
			t.Errorf("URLString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// net/http's errors carry the whole URL; HTTPError leaves only the cause.
func TestHTTPErrorDropsTheURL(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:9/services/s3cr3t?key=s3cr3t", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = http.DefaultClient.Do(req)
	var ue *url.Error
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("the premise changed: %v", err)
	}
	got := redact.HTTPError(err)
	if strings.Contains(got.Error(), "s3cr3t") || !errors.Is(got, context.Canceled) {
		t.Errorf("HTTPError = %v", got)
	}
}
