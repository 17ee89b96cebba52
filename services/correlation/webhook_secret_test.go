package correlation

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A webhook's URL often is its secret (a token in the path, a key in the query). When the
// webhook cannot be reached, net/http's error carries the whole URL: neither the log nor
// the dead letter's reason may show it.
func TestWebhookSecretNeverShown(t *testing.T) {
	const secretPath, secretQuery = "T0PSECRETPATH", "T0PSECRETQUERY"
	// Port 1 on loopback: connection refused, a transport error.
	hook := "http://user:T0PSECRETPASS@127.0.0.1:1/services/" + secretPath + "?key=" + secretQuery
	tl := newTimelineWith(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
`, func(c *Config) {
		c.NotifyRetries = 1
		c.Notifiers = []NotifierConfig{{Name: "leaky", Webhook: hook}}
	})
	tl.event("n1", "cpu", "critical")
	tl.at(30 * time.Second)
	var reason string
	eventually(t, 30*time.Second, func() error {
		var err error
		reason, err = dlqReason(tl.rig, "notify.leaky")
		return err
	})
	if !strings.Contains(reason, "http://127.0.0.1:1/…") || !strings.Contains(reason, "refused") {
		t.Errorf("the dead letter's reason should name the webhook's host and the cause: %q", reason)
	}
	for what, text := range map[string]string{"dead letter reason": reason, "log": tl.rig.logs.String()} {
		for _, secret := range []string{secretPath, secretQuery, "T0PSECRETPASS"} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s shows the webhook's secret %s:\n%s", what, secret, text)
			}
		}
	}
	// And a notifier spec refused at start-up does not echo it either.
	if _, err := ParseNotifier("x=ftp://u:T0PSECRETPASS@127.0.0.1/" + secretPath + "?k=" + secretQuery); err == nil ||
		strings.Contains(err.Error(), "T0PSECRET") {
		t.Errorf("ParseNotifier: %v", err)
	}
}
