package orchestration

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// A webhook step's URL may carry its secret in the path or query; the error of an
// unreachable one (what a run's step shows, through the API, and the logs) names its host
// only. net/http's *url.Error would print the URL whole.
func TestNotifyErrorHidesTheWebhookSecret(t *testing.T) {
	s := &service{httpc: &http.Client{}}
	for _, raw := range []string{
		"http://127.0.0.1:1/hooks/T0PSECRET?sig=T0PSECRET", // refused: transport error
		"http://u:T0PSECRET@127.0.0.1:1/x?token=T0PSECRET", // with user info
		"ftp://127.0.0.1/T0PSECRET",                        // refused before any request
	} {
		_, err := s.notify(context.Background(), "key-1", map[string]any{"url": raw})
		if err == nil {
			t.Fatalf("%s: no error", raw)
		}
		if strings.Contains(err.Error(), "T0PSECRET") {
			t.Errorf("the error shows the webhook's secret: %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("the error does not say which webhook: %v", err)
		}
	}
}
