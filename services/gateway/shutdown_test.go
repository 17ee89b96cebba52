package gateway_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/console"
)

// A console live stream open in a browser does not hold the gateway's graceful shutdown:
// the stream ends as soon as shutdown starts (the timeout here is far longer than the test).
func TestShutdownEndsLiveStreams(t *testing.T) {
	e := newEnvWith(t, true, func(c *gateway.Config, _ *gateway.Deps) { c.ShutdownTimeout = 10 * time.Minute })

	// no discovery service runs: the stream reports the problem and keeps polling
	req, _ := http.NewRequest("GET", e.base+console.Prefix+"/discovery/runs/01ABC/events", nil)
	req.AddCookie(signIn(t, http.DefaultClient, e.base, e.admin))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "event: ") {
	}

	done := make(chan error, 1)
	go func() { done <- e.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the gateway is still shutting down a minute later: the live stream holds it")
	}
}
