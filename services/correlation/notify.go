package correlation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/smtp"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/redact"
)

// NotifierConfig is one destination of group notifications: a webhook (POST of the
// Notification as JSON, Idempotency-Key: its ID) or an SMTP relay (one mail per
// notification, Message-ID from its ID).
type NotifierConfig struct {
	Name    string
	Webhook string
	SMTP    *SMTPConfig
}

// SMTPConfig is a relay that takes mail without authentication (a site's or the hub's
// local relay); authenticated relays are not supported yet.
type SMTPConfig struct {
	Addr string // host:port
	From string
	To   []string
}

func (n NotifierConfig) validate() error {
	var errs []error
	if n.Name == "" || keyUnsafe.MatchString(n.Name) {
		errs = append(errs, fmt.Errorf("correlation: notifier name %q: want letters, digits, - and _", n.Name))
	}
	if (n.Webhook == "") == (n.SMTP == nil) {
		errs = append(errs, fmt.Errorf("correlation: notifier %s: give a webhook URL or an SMTP relay (one of them)", n.Name))
	}
	if n.Webhook != "" && !strings.HasPrefix(n.Webhook, "http://") && !strings.HasPrefix(n.Webhook, "https://") {
		errs = append(errs, fmt.Errorf("correlation: notifier %s: webhook %s: want an http(s) URL", n.Name, redactURL(n.Webhook)))
	}
	if n.SMTP != nil && (n.SMTP.Addr == "" || n.SMTP.From == "" || len(n.SMTP.To) == 0) {
		errs = append(errs, fmt.Errorf("correlation: notifier %s: smtp needs addr, from and to", n.Name))
	}
	return errors.Join(errs...)
}

// KVNotifications is the notification log: per notifier and group, the last notification
// sent and when. A partition's new owner rebuilds its groups and would notify them again;
// the log says they were notified already, so a restart or a failover does not re-send.
const KVNotifications = "correlation_notifications"

type logEntry struct {
	ID     string    `json:"id"`
	SentAt time.Time `json:"sent_at"`
}

// notifier sends the partitions' notifications on one goroutine per replica (not one per
// group): a slow receiver delays notifications, never event processing, up to the queue's
// bound — past it the partitions wait (nothing is dropped).
type notifier struct {
	s    *service
	kv   jetstream.KeyValue
	q    chan Notification
	http *http.Client

	Sent, Skipped, Failed atomic.Int64
}

func newNotifier(s *service, kv jetstream.KeyValue) *notifier {
	return &notifier{s: s, kv: kv, q: make(chan Notification, 4096), http: &http.Client{Timeout: 10 * time.Second}}
}

func (n *notifier) enqueue(ctx context.Context, x Notification) {
	if len(n.s.cfg.Notifiers) == 0 {
		return
	}
	select {
	case n.q <- x:
	case <-ctx.Done(): // the partition stops; its next owner notifies the group again
	}
}

func (n *notifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case x := <-n.q:
			for _, to := range n.s.cfg.Notifiers {
				n.deliver(ctx, to, x)
			}
		}
	}
}

func logKey(notifier, group string) string {
	h := sha256.Sum256([]byte(group))
	return "n." + notifier + "." + hex.EncodeToString(h[:12])
}

// deliver sends x to one notifier unless the log says it was sent already (same ID within
// the repeat interval), retrying with backoff; a notification that cannot be delivered is
// kept in the DLQ with the reason.
func (n *notifier) deliver(ctx context.Context, to NotifierConfig, x Notification) {
	key := logKey(to.Name, x.GroupKey)
	if e, err := n.kv.Get(ctx, key); err == nil {
		var le logEntry
		if json.Unmarshal(e.Value(), &le) == nil && le.ID == x.ID && x.Time.Before(le.SentAt.Add(n.s.rules.grouping.RepeatInterval)) {
			n.Skipped.Add(1)
			return
		}
	}
	backoff := n.s.cfg.NotifyBackoff
	var err error
	for attempt := 0; attempt <= n.s.cfg.NotifyRetries && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			sleepReal(ctx, backoff)
			backoff = min(backoff*2, 30*time.Second)
		}
		if err = n.send(ctx, to, x); err == nil {
			break
		}
		n.s.log.Warn("notification not delivered; retrying", "notifier", to.Name, "group", x.GroupKey, "attempt", attempt+1, "err", err)
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		n.Failed.Add(1)
		b, _ := json.Marshal(x)
		reason := fmt.Sprintf("notifier %s: gave up after %d attempts: %v", to.Name, n.s.cfg.NotifyRetries+1, err)
		if derr := n.s.dlq.DeadLetter(ctx, bus.SourceRef{Stream: "notifications", Consumer: to.Name, Subject: "notify." + to.Name}, nil, b, bus.CodePermanent, reason); derr != nil {
			n.s.log.Error("notification lost: not delivered and not dead-lettered", "notifier", to.Name, "err", err, "dlq_err", derr)
		}
		return
	}
	n.Sent.Add(1)
	b, _ := json.Marshal(logEntry{ID: x.ID, SentAt: x.Time})
	if _, err := n.kv.Put(ctx, key, b); err != nil {
		n.s.log.Warn("notification log not written: a failover may send this notification again", "err", err)
	}
}

func (n *notifier) send(ctx context.Context, to NotifierConfig, x Notification) error {
	body, _ := json.Marshal(x)
	if to.Webhook != "" {
		// Errors name the webhook by its host only: its path and query are often its secret,
		// and they would reach the log and the dead letter's reason.
		where := redact.URLString(to.Webhook)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, to.Webhook, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("webhook %s: %w", where, redact.HTTPError(err))
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", x.ID)
		resp, err := n.http.Do(req)
		if err != nil {
			return fmt.Errorf("webhook %s: %w", where, redact.HTTPError(err))
		}
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("webhook %s answered %s", where, resp.Status)
		}
		return nil
	}
	subject := fmt.Sprintf("[%s] %d firing, %d resolved: %s", strings.ToUpper(x.Status), len(x.Firing), len(x.Resolved), x.GroupKey)
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@outpost>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		to.SMTP.From, strings.Join(to.SMTP.To, ", "), subject, x.ID)
	for _, a := range x.Firing {
		fmt.Fprintf(&msg, "FIRING  %s %s %s: %s (count %d)\r\n", a.Severity, a.Node, a.Type, a.Message, a.Count)
	}
	for _, a := range x.Resolved {
		fmt.Fprintf(&msg, "RESOLVED %s %s: %s\r\n", a.Node, a.Type, a.Message)
	}
	for _, a := range x.Flapping {
		fmt.Fprintf(&msg, "FLAPPING %s %s: %s\r\n", a.Node, a.Type, a.Message)
	}
	return smtp.SendMail(to.SMTP.Addr, nil, to.SMTP.From, to.SMTP.To, msg.Bytes())
}

// ParseNotifier reads a notifier as `outpost up --notify` takes it: NAME=URL, the URL an
// http(s) webhook, or smtp://HOST:PORT?from=ADDR&to=ADDR[&to=ADDR…] for an SMTP relay.
func ParseNotifier(spec string) (NotifierConfig, error) {
	name, raw, ok := strings.Cut(spec, "=")
	if !ok || name == "" || raw == "" {
		return NotifierConfig{}, fmt.Errorf("notifier %q: want NAME=URL (https://… for a webhook, smtp://host:port?from=…&to=… for mail)", redactURL(spec))
	}
	n := NotifierConfig{Name: name}
	u, err := url.Parse(raw)
	if err != nil {
		return NotifierConfig{}, fmt.Errorf("notifier %s: not a URL: %v", name, redact.HTTPError(err))
	}
	switch u.Scheme {
	case "http", "https":
		n.Webhook = raw
	case "smtp":
		q := u.Query()
		n.SMTP = &SMTPConfig{Addr: u.Host, From: q.Get("from"), To: q["to"]}
	default:
		return NotifierConfig{}, fmt.Errorf("notifier %s: scheme %q: want http, https or smtp", name, u.Scheme)
	}
	return n, n.validate()
}

// redactURL drops what could be a secret (user info, path, query) from a notifier spec.
func redactURL(s string) string {
	name, raw, ok := strings.Cut(s, "=")
	if ok && strings.Contains(raw, "://") {
		return name + "=" + redact.URLString(raw)
	}
	return redact.URLString(s)
}
