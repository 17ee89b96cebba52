package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// Metadata keys the Subscriber adds to every watermill message, so that middlewares and the
// dead-letterer know where it came from. They never go back on the wire as headers.
const (
	MetaStream     = "_bus_stream"
	MetaConsumer   = "_bus_consumer"
	MetaSubject    = "_bus_subject"
	MetaSeq        = "_bus_seq"
	MetaDelivered  = "_bus_delivered"
	MetaMaxDeliver = "_bus_max_deliver"
	metaPrefix     = "_bus_"

	// correlationKey is watermill's CorrelationID metadata key; we carry it as outpost-run.
	correlationKey = "correlation_id"
)

// SubscriberConfig configures a watermill Subscriber over JetStream durable pull consumers.
type SubscriberConfig struct {
	// Topology names the consumers a Subscribe topic may refer to.
	Topology Topology
	// MaxInFlight bounds the messages handed to handlers and not yet acked, per Subscribe.
	// The client prefetches at most this many, so none waits long with its AckWait ticking.
	MaxInFlight int
	Logger      *slog.Logger
	Meter       metric.Meter // may be nil
}

// Subscriber implements watermill's message.Subscriber. The topic of Subscribe is the
// durable name of a consumer of the topology; every Subscriber (in any process) that
// subscribes to the same topic shares the work of that one consumer.
type Subscriber struct {
	js  jetstream.JetStream
	cfg SubscriberConfig
	log *slog.Logger

	// managed: a bus.Router settles each message in its outermost middleware (Settle), so no
	// goroutine per message waits on watermill's Acked/Nacked channels.
	managed bool

	hung metric.Int64Counter // handlers past their consumer's MaxWork

	closing   chan struct{} // closed when Close starts: stop pulling
	abandon   chan struct{} // closed when Close gives up waiting: nak what is still in flight
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// NewSubscriber returns a Subscriber on js.
func NewSubscriber(js jetstream.JetStream, cfg SubscriberConfig) *Subscriber {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Subscriber{js: js, cfg: cfg, log: log.With("component", "bus"),
		closing: make(chan struct{}), abandon: make(chan struct{})}
	if cfg.Meter != nil {
		s.hung, _ = cfg.Meter.Int64Counter("outpost.bus.handler_hung", metric.WithDescription("messages nacked because their handler ran past the consumer's MaxWork"))
	}
	return s
}

// Subscribe starts pulling from the consumer named topic.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	spec, ok := s.cfg.Topology.Consumer(topic)
	if !ok {
		return nil, fmt.Errorf("subscribe %q: no such consumer in the topology; declare it with Topology.WithConsumers", topic)
	}
	it, err := s.open(ctx, spec)
	if err != nil {
		return nil, err
	}
	// Buffered: the pull loop and the router hand over without a rendezvous per message;
	// the slots still bound what is in flight.
	out := make(chan *message.Message, s.cfg.MaxInFlight)
	s.wg.Add(1)
	go s.pull(ctx, spec, it, out)
	return out, nil
}

func (s *Subscriber) open(ctx context.Context, spec ConsumerSpec) (jetstream.MessagesContext, error) {
	cons, err := s.js.Consumer(ctx, spec.Stream, spec.Name)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w (was the topology provisioned?)", spec.Name, spec.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.MaxInFlight))
	if err != nil {
		return nil, fmt.Errorf("pull from %s on %s: %w", spec.Name, spec.Stream, err)
	}
	return it, nil
}

// pull hands messages to the router, never more than MaxInFlight unacked at once.
func (s *Subscriber) pull(ctx context.Context, spec ConsumerSpec, it jetstream.MessagesContext, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	slots := make(chan struct{}, s.cfg.MaxInFlight)
	// Every in-flight message fits: a handler never waits for the acker.
	acks := make(chan verdictOf, s.cfg.MaxInFlight)
	ackerDone := make(chan struct{})
	go func() { acker(acks); close(ackerDone) }()
	defer func() {
		// Let the handlers still running settle, then stop the acker.
		for range s.cfg.MaxInFlight {
			slots <- struct{}{}
		}
		close(acks)
		<-ackerDone
	}()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	// Stop, not Drain: Drain waits for the pending pull request to expire (up to 30 s), which
	// would hold a SIGTERM'd process past its 10 s budget. What was prefetched and not handed
	// out is redelivered after AckWait.
	go func() { <-s.closing; it.Stop() }()
	for {
		select {
		case slots <- struct{}{}:
		case <-s.closing:
			return
		}
		jm, err := it.Next()
		if err != nil {
			<-slots
			if s.isClosing() {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if errors.Is(err, jetstream.ErrConnectionClosed) {
					return
				}
				// The consumer went away (deleted, leader change): reopen it rather than go deaf.
				s.log.Warn("consumer iterator closed, reopening", "consumer", spec.Name, "err", err)
				if it = s.reopen(ctx, spec); it == nil {
					return
				}
				go func(it jetstream.MessagesContext) { <-s.closing; it.Stop() }(it)
				continue
			}
			s.log.Debug("pull", "consumer", spec.Name, "err", err)
			continue
		}
		if s.isClosing() {
			// Drained after Close: give it back at once so a sibling replica takes it.
			_ = jm.Nak()
			<-slots
			continue
		}
		wm := toWatermill(jm, spec)
		f := &flight{jm: jm, ackWait: spec.Config().AckWait, maxWork: spec.maxWork(), slots: slots, acks: acks, log: s.log,
			consumer: spec.Name, delivered: wm.Metadata.Get(MetaDelivered), hung: s.hung}
		if s.managed {
			s.wg.Add(1)
			f.done = s.wg.Done
		}
		wm.SetContext(context.WithValue(ctx, flightKey{}, f))
		select {
		case out <- wm:
		case <-s.closing:
			_ = jm.Nak()
			if f.done != nil {
				f.done()
			}
			<-slots
			continue
		}
		if !s.managed {
			s.wg.Add(1)
			go s.settle(f, wm)
		}
	}
}

// flight is one message handed to a handler and not yet settled with JetStream.
type flight struct {
	jm        jetstream.Msg
	ackWait   time.Duration
	maxWork   time.Duration // keep-alives stop then: the handler is taken to be hung
	slots     chan struct{}
	acks      chan<- verdictOf
	done      func()
	log       *slog.Logger
	consumer  string
	delivered string
	hung      metric.Int64Counter
	once      sync.Once
}

type flightKey struct{}

// keepAlive tells the server the message is still being worked on, every half AckWait, so a
// long handler is not raced by a redelivery to a sibling. Stop it when the handler returns.
//
// Not forever: a handler still running after the consumer's MaxWork is taken to be hung (a
// query stuck on a dead connection, a lock never released). Keeping its message alive would
// hold it — and, with MaxAckPending 1, its whole partition — forever, and MaxDeliver and the
// DLQ would never see it. So the message is nacked (redelivered with backoff; dead-lettered
// once its deliveries run out), its slot freed, and the hang logged and counted. The
// handler's goroutine cannot be stopped; its verdict, if it ever comes, is ignored.
func (f *flight) keepAlive() (stop func() bool) {
	var t *time.Timer
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	began := time.Now()
	t = time.AfterFunc(f.ackWait/2, func() {
		if ran := time.Since(began); f.maxWork > 0 && ran >= f.maxWork {
			f.log.Error("handler hung: its message is nacked for a redelivery and its slot freed",
				"consumer", f.consumer, "subject", f.jm.Subject(), "delivered", f.delivered, "ran", ran.Round(time.Second), "max_work", f.maxWork)
			if f.hung != nil {
				f.hung.Add(context.Background(), 1, metric.WithAttributes(attribute.String("consumer", f.consumer)))
			}
			f.settle(false, f.delivered)
			return
		}
		_ = f.jm.InProgress()
		mu.Lock()
		t.Reset(f.ackWait / 2)
		mu.Unlock()
	})
	return t.Stop
}

// settle hands the verdict to the consumer's acker, once.
func (f *flight) settle(ok bool, delivered string) {
	f.once.Do(func() { f.acks <- verdictOf{f: f, ok: ok, delivered: delivered} })
}

type verdictOf struct {
	f         *flight
	ok        bool
	delivered string
}

// acker sends every ack and nak of one consumer from a single goroutine. Hundreds of handler
// goroutines acking at once would otherwise queue on the connection's lock and throughput
// would fall by half; one writer keeps the connection's buffer streaming.
func acker(acks <-chan verdictOf) {
	for v := range acks {
		f := v.f
		if v.ok {
			if err := f.jm.Ack(); err != nil {
				f.log.Warn("ack", "consumer", f.consumer, "err", err)
			}
		} else {
			_ = f.jm.NakWithDelay(redeliveryDelay(v.delivered))
		}
		<-f.slots
		if f.done != nil {
			f.done()
		}
	}
}

// Settle is the outermost middleware of a bus.Router: it settles the message with JetStream
// as soon as the handler chain returns, and keeps long handlers alive with InProgress.
func Settle(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		f, _ := msg.Context().Value(flightKey{}).(*flight)
		if f == nil || f.done == nil {
			return h(msg) // not from a managed Subscriber: its own settle goroutine acks
		}
		stop := f.keepAlive()
		out, err := h(msg)
		stop()
		f.settle(err == nil, msg.Metadata.Get(MetaDelivered))
		return out, err
	}
}

func (s *Subscriber) reopen(ctx context.Context, spec ConsumerSpec) jetstream.MessagesContext {
	for {
		select {
		case <-s.closing:
			return nil
		case <-time.After(time.Second):
		}
		it, err := s.open(ctx, spec)
		if err == nil {
			return it
		}
		s.log.Warn("reopen consumer", "consumer", spec.Name, "err", err)
	}
}

func (s *Subscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// settle waits for the handler's verdict on watermill's channels, for routers other than
// bus.Router (which settles in its Settle middleware instead).
func (s *Subscriber) settle(f *flight, wm *message.Message) {
	defer s.wg.Done()
	stop := f.keepAlive()
	defer stop()
	select {
	case <-wm.Acked():
		f.settle(true, "")
	case <-wm.Nacked():
		f.settle(false, wm.Metadata.Get(MetaDelivered))
	case <-s.abandon:
		_ = f.jm.Nak()
		<-f.slots
	}
}

// redeliveryDelay backs off with the delivery count: 1 s, 2 s, 4 s … capped at 30 s.
func redeliveryDelay(delivered string) time.Duration {
	n, _ := strconv.Atoi(delivered)
	d := time.Second << min(max(n-1, 0), 5)
	return min(d, 30*time.Second)
}

// Close stops pulling, waits up to 15 s for messages in flight, then naks the rest.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			// A handler is stuck. Nak what the settle goroutines hold, and do not wait for
			// a hung handler forever: its message is redelivered once this process is gone.
			close(s.abandon)
			select {
			case <-done:
			case <-time.After(time.Second):
				s.log.Error("handlers still running after close; leaving them")
			}
		}
	})
	return nil
}

// toWatermill copies headers into metadata (first value each) and adds where the message
// came from. The watermill UUID is the ce-id, the same id producers used for dedup.
func toWatermill(jm jetstream.Msg, spec ConsumerSpec) *message.Message {
	h := jm.Headers()
	id := h.Get(envelope.HeaderID)
	md, _ := jm.Metadata()
	if id == "" {
		id = h.Get(nats.MsgIdHdr)
	}
	if id == "" && md != nil {
		id = spec.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	wm := message.NewMessage(id, jm.Data())
	meta := make(message.Metadata, len(h)+7)
	for k, v := range h {
		if len(v) > 0 {
			meta[k] = v[0]
		}
	}
	if run := meta[envelope.HeaderRun]; run != "" {
		meta[correlationKey] = run
	}
	meta[MetaStream] = spec.Stream
	meta[MetaConsumer] = spec.Name
	meta[MetaSubject] = jm.Subject()
	meta[MetaMaxDeliver] = spec.maxDeliver()
	if md != nil {
		meta[MetaSeq] = strconv.FormatUint(md.Sequence.Stream, 10)
		meta[MetaDelivered] = strconv.FormatUint(md.NumDelivered, 10)
	}
	wm.Metadata = meta
	return wm
}

// Header rebuilds the NATS header of a consumed message from its metadata (without the
// subscriber's own keys), for decoding or for forwarding it.
func Header(md message.Metadata) nats.Header {
	h := make(nats.Header, len(md))
	for k, v := range md {
		if len(k) >= len(metaPrefix) && k[:len(metaPrefix)] == metaPrefix || k == correlationKey {
			continue
		}
		h[k] = []string{v}
	}
	return h
}
