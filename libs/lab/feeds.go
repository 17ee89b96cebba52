package lab

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// feeds are what the lab's web servers answer for other tools' APIs, which tests change
// while they run: /feeds/metrics.json, a JSON document of gauges (a monitoring agent's
// status page: {"gauges": {"name": value}}), and /feeds/events.json, an event list (another
// tool's alert API: {"events": [...]}, newest last). Every web server answers the same.
type feeds struct {
	mu     sync.Mutex
	gauges map[string]float64
	events []FeedEvent
	hits   map[string]int
}

// FeedEvent is one event of /feeds/events.json, shaped like a third-party tool's.
type FeedEvent struct {
	ID       string            `json:"id"`
	Host     string            `json:"host"`
	Check    string            `json:"check"`
	Level    string            `json:"level"` // the tool's own words: ok, warn, crit
	Summary  string            `json:"summary"`
	Occurred time.Time         `json:"occurred"`
	Tags     map[string]string `json:"tags,omitempty"`
}

// SetGauge sets a gauge of /feeds/metrics.json.
func (l *Lab) SetGauge(name string, v float64) {
	l.feeds.mu.Lock()
	defer l.feeds.mu.Unlock()
	if l.feeds.gauges == nil {
		l.feeds.gauges = map[string]float64{}
	}
	l.feeds.gauges[name] = v
}

// AddFeedEvents appends events to /feeds/events.json.
func (l *Lab) AddFeedEvents(evs ...FeedEvent) {
	l.feeds.mu.Lock()
	defer l.feeds.mu.Unlock()
	l.feeds.events = append(l.feeds.events, evs...)
}

// FeedHits reports how many requests a feed ("metrics", "events") answered.
func (l *Lab) FeedHits(feed string) int {
	l.feeds.mu.Lock()
	defer l.feeds.mu.Unlock()
	return l.feeds.hits[feed]
}

// serveFeed answers /feeds/<feed>.json; ok is false for any other path.
func (l *Lab) serveFeed(w http.ResponseWriter, r *http.Request) bool {
	var body any
	l.feeds.mu.Lock()
	if l.feeds.hits == nil {
		l.feeds.hits = map[string]int{}
	}
	switch r.URL.Path {
	case "/feeds/metrics.json":
		l.feeds.hits["metrics"]++
		g := make(map[string]float64, len(l.feeds.gauges))
		for k, v := range l.feeds.gauges {
			g[k] = v
		}
		body = map[string]any{"gauges": g}
	case "/feeds/events.json":
		l.feeds.hits["events"]++
		evs := []FeedEvent{}
		since, _ := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
		for _, e := range l.feeds.events {
			if !e.Occurred.Before(since) {
				evs = append(evs, e)
			}
		}
		body = map[string]any{"events": evs}
	default:
		l.feeds.mu.Unlock()
		return false
	}
	l.feeds.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
	return true
}
