package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/nats-io/nats.go"
)

// Body is implemented by every message body: it names its ce-type and checks its own
// required fields, so decoding is strict in one place.
type Body interface {
	CEType() string
	Validate() error
}

func (*Probe) CEType() string      { return TypeProbe }
func (*Result) CEType() string     { return TypeResult }
func (*Event) CEType() string      { return TypeEvent }
func (*EventBatch) CEType() string { return TypeEvents }
func (*CIPayload) CEType() string  { return TypeCI }
func (*Heartbeat) CEType() string  { return TypeHeartbeat }
func (*Enrollment) CEType() string { return TypeEnrollment }
func (*Change) CEType() string     { return TypeChange }
func (*Audit) CEType() string      { return TypeAudit }
func (*Ingested) CEType() string   { return TypeIngested }
func (*Sample) CEType() string     { return TypeSample }

// registry maps each known ce-type to a constructor of its body.
var registry = map[string]func() Body{
	TypeProbe:      func() Body { return new(Probe) },
	TypeResult:     func() Body { return new(Result) },
	TypeEvent:      func() Body { return new(Event) },
	TypeEvents:     func() Body { return new(EventBatch) },
	TypeCI:         func() Body { return new(CIPayload) },
	TypeHeartbeat:  func() Body { return new(Heartbeat) },
	TypeEnrollment: func() Body { return new(Enrollment) },
	TypeChange:     func() Body { return new(Change) },
	TypeAudit:      func() Body { return new(Audit) },
	TypeIngested:   func() Body { return new(Ingested) },
	TypeSample:     func() Body { return new(Sample) },
}

func knownTypes() []string {
	ts := make([]string, 0, len(registry))
	for t := range registry {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// Encode marshals a body and returns its headers for meta. meta.Type is set from the body.
func Encode(meta Meta, body Body) (nats.Header, []byte, error) {
	meta.Type = body.CEType()
	if meta.ID == "" {
		meta.ID = NewID()
	}
	if err := body.Validate(); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", meta.Type, err)
	}
	data, err := marshalBody(body)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", meta.Type, err)
	}
	return meta.Headers(nil), data, nil
}

// Decode reads the CloudEvents headers and strictly decodes the body into the Go type its
// ce-type names: unknown fields, trailing data and missing required fields are errors.
// Every error it returns matches errors.Is(err, ErrDecode).
func Decode(h nats.Header, data []byte) (Meta, Body, error) {
	return DecodeWith(headerGetter(h), data)
}

// DecodeWith is Decode with headers read through get (first value or ""), for consumers that
// hold them in another shape than nats.Header, such as a watermill message's metadata.
func DecodeWith(get func(string) string, data []byte) (Meta, Body, error) {
	meta, err := readMeta(get)
	if err != nil {
		return meta, nil, err
	}
	newBody, ok := registry[meta.Type]
	if !ok {
		return meta, nil, typeError(meta.Type)
	}
	body := newBody()
	if err := decodeStrict(data, body); err != nil {
		return meta, nil, &MalformedError{Type: meta.Type, Err: err}
	}
	if err := body.Validate(); err != nil {
		return meta, nil, err
	}
	return meta, body, nil
}

// DecodeInto is Decode for a consumer that expects exactly one type.
func DecodeInto[T Body](h nats.Header, data []byte) (Meta, T, error) {
	return DecodeIntoWith[T](headerGetter(h), data)
}

// DecodeIntoWith is DecodeInto with headers read through get.
func DecodeIntoWith[T Body](get func(string) string, data []byte) (Meta, T, error) {
	var zero T
	meta, body, err := DecodeWith(get, data)
	if err != nil {
		return meta, zero, err
	}
	t, ok := body.(T)
	if !ok {
		return meta, zero, &UnknownTypeError{Type: meta.Type + " (expected " + zero.CEType() + ")"}
	}
	return meta, t, nil
}

// typeError tells an unknown type from a known type at an unknown version.
func typeError(t string) error {
	base, _, ok := baseType(t)
	if ok {
		for known := range registry {
			if b, _, _ := baseType(known); b == base {
				return &VersionError{Type: t, Known: known}
			}
		}
	}
	return &UnknownTypeError{Type: t}
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}
