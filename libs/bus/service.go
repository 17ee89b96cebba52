package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// ServiceError is an error that crosses the wire from a service endpoint: a stable HTTP-like
// code (400 bad input, 403, 404, 409 conflict, 500, 503) and a message that says what to do.
// The gateway maps it to a problem+json response.
type ServiceError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Errorf returns a ServiceError.
func Errorf(code int, format string, args ...any) *ServiceError {
	return &ServiceError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Endpoint handles one request of type Req and returns a response (JSON-encoded) or an error.
type Endpoint func(ctx context.Context, data []byte) (any, error)

// JSON adapts a typed endpoint: the request is decoded strictly (unknown fields are refused,
// with the field named, as a 400).
func JSON[Req any](h func(ctx context.Context, req Req) (any, error)) Endpoint {
	return func(ctx context.Context, data []byte) (any, error) {
		var req Req
		if len(data) > 0 {
			if err := decodeStrict(data, &req); err != nil {
				return nil, Errorf(http.StatusBadRequest, "request body: %v", err)
			}
		}
		return h(ctx, req)
	}
}

// ServiceConfig describes a request/reply service (NATS micro): its endpoints answer on
// svc.<name>.<op>, in a queue group so replicas share requests.
type ServiceConfig struct {
	Name        string
	Version     string // semver, required by micro
	Description string
	Endpoints   map[string]Endpoint
	Logger      *slog.Logger
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
	for op, ep := range cfg.Endpoints {
		handler := func(req micro.Request) {
			resp, err := ep(ctx, req.Data())
			if err != nil {
				var se *ServiceError
				if !errors.As(err, &se) {
					log.Error("service endpoint failed", "service", cfg.Name, "op", op, "err", err)
					se = &ServiceError{Code: http.StatusInternalServerError, Message: err.Error()}
				}
				body, _ := json.Marshal(se)
				_ = req.Error(strconv.Itoa(se.Code), se.Message, body)
				return
			}
			_ = req.RespondJSON(resp)
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
	msg, err := nc.RequestWithContext(ctx, ServiceSubject(service, op), data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return Errorf(http.StatusServiceUnavailable, "service %s is not running (no responder on %s)", service, ServiceSubject(service, op))
		}
		return fmt.Errorf("request %s: %w", ServiceSubject(service, op), err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		se := &ServiceError{}
		if json.Unmarshal(msg.Data, se) != nil || se.Code == 0 {
			n, _ := strconv.Atoi(code)
			se = &ServiceError{Code: n, Message: msg.Header.Get(micro.ErrorHeader)}
		}
		return se
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decode %s.%s response: %w", service, op, err)
	}
	return nil
}
