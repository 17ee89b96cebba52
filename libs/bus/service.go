package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// ServiceError is an error that crosses the wire from a service endpoint: an HTTP status
// (400 bad input, 403, 404, 409 conflict, 500, 503), the stable code of its row in the error
// table (libs/errs), and a message that says what to do. The gateway maps it to a
// problem+json response whose type is made from the code. Callers decide on Code or ErrCode,
// never on Message.
type ServiceError struct {
	Code    int       `json:"code"`
	ErrCode errs.Code `json:"err_code,omitempty"`
	Message string    `json:"message"`
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Retryable reports whether the error table says the same request may succeed later.
func (e *ServiceError) Retryable() bool { return e.errCode().Retryable() }

func (e *ServiceError) errCode() errs.Code {
	if e.ErrCode != "" {
		return e.ErrCode
	}
	return errs.ForStatus(e.Code).Code
}

// Errorf returns a ServiceError with the error table's code for the status.
func Errorf(code int, format string, args ...any) *ServiceError {
	return &ServiceError{Code: code, ErrCode: errs.ForStatus(code).Code, Message: fmt.Sprintf(format, args...)}
}

// Fail returns a ServiceError of an API code of the error table, with its status.
func Fail(code errs.Code, format string, args ...any) *ServiceError {
	e, ok := errs.Lookup(code)
	if !ok || e.Scope&errs.API == 0 {
		e = errs.ForStatus(http.StatusInternalServerError)
	}
	return &ServiceError{Code: e.Status, ErrCode: e.Code, Message: fmt.Sprintf(format, args...)}
}

// Endpoint is one operation of a service: its handler, and the Go types of its request and
// answer (libs/api's contract types), which the contract tests and the OpenAPI document read.
type Endpoint struct {
	Request, Response reflect.Type
	// Handle decodes a request and returns the answer (JSON-encoded by the service) or an error.
	Handle func(ctx context.Context, data []byte) (any, error)
	// Concurrency > 1 serves up to that many requests at once (each in its own goroutine,
	// answered when done); default one at a time, in arrival order. For ops whose answer
	// waits on I/O that batches across requests (a journal's group commit).
	Concurrency int
}

// Typed adapts a typed handler: the request is decoded strictly (unknown fields are refused,
// with the field named, as a 400).
func Typed[Req, Resp any](h func(ctx context.Context, req Req) (Resp, error)) Endpoint {
	return Endpoint{Request: reflect.TypeFor[Req](), Response: reflect.TypeFor[Resp](),
		Handle: func(ctx context.Context, data []byte) (any, error) {
			var req Req
			if len(data) > 0 {
				if err := decodeStrict(data, &req); err != nil {
					return nil, Errorf(http.StatusBadRequest, "request body: %v", err)
				}
			}
			resp, err := h(ctx, req)
			return resp, err
		}}
}

// JSON adapts a handler whose answer has no declared type (tests and fakes); a real
// service's endpoints come from its contract's Ops (Op.Handle), which the contract tests check.
func JSON[Req any](h func(ctx context.Context, req Req) (any, error)) Endpoint { return Typed(h) }

// Op is one typed operation svc.<Service>.<Name>, declared once in a contract package
// (libs/api/<service>) and used by its service (Handle) and its callers (Call) alike.
type Op[Req, Resp any] struct{ Service, Name string }

// Handle makes the service's endpoint of the op.
func (o Op[Req, Resp]) Handle(h func(ctx context.Context, req Req) (Resp, error)) Endpoint {
	return Typed(h)
}

// Call sends req to the op and decodes its answer. Numbers inside untyped values (any, maps of
// any) decode as json.Number, so an answer passed on is re-encoded digit for digit.
func (o Op[Req, Resp]) Call(ctx context.Context, nc *nats.Conn, req Req) (Resp, error) {
	var resp Resp
	data, err := json.Marshal(req)
	if err != nil {
		return resp, fmt.Errorf("encode %s.%s request: %w", o.Service, o.Name, err)
	}
	msg, err := request(ctx, nc, o.Service, o.Name, data)
	if err != nil {
		return resp, err
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Data))
	dec.UseNumber()
	if err := dec.Decode(&resp); err != nil {
		return resp, fmt.Errorf("decode %s.%s response: %w", o.Service, o.Name, err)
	}
	return resp, nil
}

// Spec describes the op without its type parameters (registries, contract tests).
func (o Op[Req, Resp]) Spec() OpSpec {
	return OpSpec{Service: o.Service, Name: o.Name, Request: reflect.TypeFor[Req](), Response: reflect.TypeFor[Resp]()}
}

// OpSpec is an op's service, name and types.
type OpSpec struct {
	Service, Name     string
	Request, Response reflect.Type
}

// Subject is where the op is served.
func (s OpSpec) Subject() string { return ServiceSubject(s.Service, s.Name) }

// ServiceConfig describes a request/reply service (NATS micro): its endpoints answer on
// svc.<name>.<op>, in a queue group so replicas share requests.
type ServiceConfig struct {
	Name        string
	Version     string // semver, required by micro
	Description string
	Endpoints   map[string]Endpoint
	Logger      *slog.Logger
	// Tracer starts a server span per request, the child of the caller's trace context
	// (request injects it into the headers); nil or no-op: no span.
	Tracer trace.TracerProvider
}

// AddService starts the service's endpoints on nc. Stop it with the returned micro.Service.
func AddService(ctx context.Context, nc *nats.Conn, cfg ServiceConfig) (micro.Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svc, err := micro.AddService(nc, micro.Config{Name: cfg.Name, Version: cfg.Version, Description: cfg.Description,
		QueueGroup: "svc." + cfg.Name})
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	tracing := cfg.Tracer != nil
	if _, off := cfg.Tracer.(tracenoop.TracerProvider); off {
		tracing = false
	}
	for op, ep := range cfg.Endpoints {
		handler := func(req micro.Request) {
			ctx := ctx
			if tracing {
				var span trace.Span
				ctx, span = telemetry.StartServer(ctx, cfg.Tracer, ServiceSubject(cfg.Name, op), telemetry.HeaderCarrier(req.Headers()),
					attribute.String("rpc.system", "nats"), attribute.String("rpc.service", cfg.Name), attribute.String("rpc.method", op))
				defer span.End()
			}
			resp, err := ep.Handle(ctx, req.Data())
			if err != nil {
				var se *ServiceError
				if !errors.As(err, &se) {
					log.Error("service endpoint failed", "service", cfg.Name, "op", op, "err", err)
					se = Errorf(http.StatusInternalServerError, "%v", err)
				}
				if se.ErrCode == "" {
					c := *se
					c.ErrCode = se.errCode()
					se = &c
				}
				body, _ := json.Marshal(se)
				_ = req.Error(strconv.Itoa(se.Code), se.Message, body)
				return
			}
			_ = req.RespondJSON(resp)
		}
		if n := ep.Concurrency; n > 1 {
			serial, sem := handler, make(chan struct{}, n)
			handler = func(req micro.Request) {
				sem <- struct{}{} // a full window holds the subscription: backpressure
				go func() {
					defer func() { <-sem }()
					serial(req)
				}()
			}
		}
		if err := svc.AddEndpoint(op, micro.HandlerFunc(handler), micro.WithEndpointSubject(ServiceSubject(cfg.Name, op))); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("service %s endpoint %s: %w", cfg.Name, op, err)
		}
	}
	return svc, nil
}

// Request calls svc.<service>.<op> with req as JSON and decodes the answer into resp.
// A service-side error comes back as *ServiceError; no responder as a 503 ServiceError.
func Request(ctx context.Context, nc *nats.Conn, service, op string, req, resp any) error {
	var data []byte
	if req != nil {
		var err error
		if data, err = json.Marshal(req); err != nil {
			return fmt.Errorf("encode %s.%s request: %w", service, op, err)
		}
	}
	msg, err := request(ctx, nc, service, op, data)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decode %s.%s response: %w", service, op, err)
	}
	return nil
}

// request sends one request and turns a service error or a missing service into a
// *ServiceError.
func request(ctx context.Context, nc *nats.Conn, service, op string, data []byte) (*nats.Msg, error) {
	// The caller's trace context travels in the headers: the service's span joins its trace.
	m := &nats.Msg{Subject: ServiceSubject(service, op), Data: data}
	h := nats.Header{}
	telemetry.Propagator.Inject(ctx, telemetry.HeaderCarrier(h))
	if len(h) > 0 {
		m.Header = h // no header block at all when there is no trace
	}
	msg, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, Errorf(http.StatusServiceUnavailable, "service %s is not running (no responder on %s)", service, ServiceSubject(service, op))
		}
		return nil, fmt.Errorf("request %s: %w", ServiceSubject(service, op), err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		se := &ServiceError{}
		if json.Unmarshal(msg.Data, se) != nil || se.Code == 0 {
			n, _ := strconv.Atoi(code)
			se = &ServiceError{Code: n, Message: msg.Header.Get(micro.ErrorHeader)}
		}
		if se.ErrCode == "" {
			se.ErrCode = errs.ForStatus(se.Code).Code
		}
		return nil, se
	}
	return msg, nil
}

// WhenAvailable calls call until it succeeds, fails with an error retrying cannot fix, or the
// hub services it asks stay unavailable (a retryable ServiceError: "not running", 503) for
// within; the waits back off from 100 ms to 2 s. A hub that restarts resumes its work at
// once, often before its other services answer: a "not running" then is a moment of the
// start, not a reason to fail the work.
func WhenAvailable[T any](ctx context.Context, within time.Duration, call func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(within)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		v, err := call(ctx)
		var se *ServiceError
		if err == nil || !errors.As(err, &se) || !se.Retryable() || time.Now().Add(wait).After(deadline) {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
