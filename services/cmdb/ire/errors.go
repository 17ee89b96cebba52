package ire

import (
	"errors"
	"strings"
)

// ErrInvalid matches (errors.Is) every ValidationError: the payload can never be ingested
// as it is, so a consumer sends it to the dead-letter queue instead of retrying.
var ErrInvalid = errors.New("invalid CI payload")

// FieldError is one problem with one field of a payload.
type FieldError struct {
	Field  string // e.g. items[2].attributes.cpu_count
	Reason string // e.g. want int, got string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Reason }

// ValidationError lists every problem found in a payload, so that its sender can fix
// them all at once. Nothing was written.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return "invalid CI payload: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Fields returns the names of the fields with problems, in payload order.
func (e *ValidationError) Fields() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Field
	}
	return out
}
