package correlation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outpost-dev/outpost/libs/bus"
)

// mailbox is a real SMTP server (emersion/go-smtp) on loopback that keeps what it is sent;
// it answers the first reject DATA commands with a temporary failure (451).
type mailbox struct {
	mu     sync.Mutex
	mails  []*mail.Message
	rcpts  [][]string
	reject int
	tried  int
	addr   string
}

type mailSession struct {
	mb    *mailbox
	rcpts []string
}

func (s *mailSession) Reset()        { s.rcpts = nil }
func (s *mailSession) Logout() error { return nil }
func (s *mailSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	defer s.mb.mu.Unlock()
	s.mb.tried++
	if s.mb.tried <= s.mb.reject {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	m, err := mail.ReadMessage(strings.NewReader(string(b)))
	if err != nil {
		return &smtp.SMTPError{Code: 554, Message: "not a mail: " + err.Error()}
	}
	s.mb.mails = append(s.mb.mails, m)
	s.mb.rcpts = append(s.mb.rcpts, s.rcpts)
	return nil
}

func newMailbox(t *testing.T, reject int) *mailbox {
	mb := &mailbox{reject: reject}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{mb: mb}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return mb
}

// got is the mails about group (the timeline's barrier events make groups of their own)
// and the DATA attempts of every mail.
func (mb *mailbox) got(group string) ([]*mail.Message, int) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	var out []*mail.Message
	for _, m := range mb.mails {
		if strings.HasSuffix(m.Header.Get("Subject"), ": "+group) {
			out = append(out, m)
		}
	}
	return out, mb.tried
}

// A group's notification goes out as one mail through a real SMTP server: a temporary
// refusal is retried, the mail names the group and its firing alerts, and the notification
// log keeps a later tick with nothing new from mailing it again.
func TestSMTPNotifierDeliversThroughARealServer(t *testing.T) {
	mb := newMailbox(t, 2)
	tl := newTimelineWith(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
`, func(c *Config) {
		c.Notifiers = []NotifierConfig{{Name: "mail", SMTP: &SMTPConfig{Addr: mb.addr, From: "outpost@example.test", To: []string{"ops@example.test", "noc@example.test"}}}}
	})
	tl.event("n1", "cpu", "critical")
	tl.event("n1", "disk", "minor")
	tl.at(30 * time.Second)
	var msg *mail.Message
	eventually(t, 10*time.Second, func() error {
		mails, tried := mb.got(n1)
		if len(mails) != 1 {
			return fmt.Errorf("%d mails after %d attempts, want 1 after 3", len(mails), tried)
		}
		msg = mails[0]
		return nil
	})
	if _, tried := mb.got(n1); tried != 3 {
		t.Errorf("%d DATA attempts, want 3 (two refused with 451, then delivered)", tried)
	}
	subj := msg.Header.Get("Subject")
	if !strings.Contains(subj, "FIRING") || !strings.Contains(subj, "2 firing") || !strings.Contains(subj, n1) {
		t.Errorf("subject %q: want FIRING, 2 firing and the group %q", subj, n1)
	}
	if msg.Header.Get("Message-Id") == "" {
		t.Error("no Message-ID: a receiver cannot drop a repeat")
	}
	body, _ := io.ReadAll(msg.Body)
	for _, want := range []string{"critical n1 cpu", "minor n1 disk"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	mb.mu.Lock()
	rc := mb.rcpts[0] // the first mail delivered is n1's: the barriers came after it
	mb.mu.Unlock()
	if strings.Join(rc, ",") != "ops@example.test,noc@example.test" {
		t.Errorf("recipients %v", rc)
	}
	// nothing changed at the next group tick: no second mail
	tl.at(5*time.Minute + 30*time.Second)
	if mails, _ := mb.got(n1); len(mails) != 1 {
		t.Errorf("%d mails after a tick with nothing new, want 1", len(mails))
	}
}

// A relay that refuses every attempt: the notification goes to the DLQ with the reason,
// after the configured retries.
func TestSMTPNotifierGivesUpToTheDLQ(t *testing.T) {
	mb := newMailbox(t, 1000)
	tl := newTimelineWith(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
`, func(c *Config) {
		c.NotifyRetries = 2
		c.Notifiers = []NotifierConfig{{Name: "mail", SMTP: &SMTPConfig{Addr: mb.addr, From: "outpost@example.test", To: []string{"ops@example.test"}}}}
	})
	tl.event("n1", "cpu", "critical")
	tl.at(30 * time.Second)
	eventually(t, 10*time.Second, func() error {
		reason, err := dlqReason(tl.rig, "notify.mail")
		if err != nil {
			return err
		}
		if !strings.Contains(reason, "gave up after 3 attempts") || !strings.Contains(reason, "451") {
			return errors.New("dead letter reason: " + reason)
		}
		return nil
	})
	if _, tried := mb.got(n1); tried != 3 {
		t.Errorf("%d attempts, want 3", tried)
	}
}

// dlqReason is the reason of the service's last hub-origin dead letter, which must come
// from subject.
func dlqReason(r *rig, subject string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		return "", err
	}
	m, err := st.GetLastMsgForSubject(ctx, bus.DLQOriginSubject(Service, bus.OriginHub))
	if err != nil {
		return "", err
	}
	if got := m.Header.Get(bus.HeaderDLQSubject); got != subject {
		return "", fmt.Errorf("last dead letter is of %q, want %q", got, subject)
	}
	return m.Header.Get(bus.HeaderDLQReason), nil
}
