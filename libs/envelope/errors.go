package envelope

import (
	"errors"
	"fmt"
)

// Decoding errors are typed so a consumer can tell a poison message (dead-letter at once,
// never retry) from a transient failure. All of them satisfy errors.Is(err, ErrDecode).
var ErrDecode = errors.New("decode")

// UnknownTypeError: the ce-type is not one this build knows at any version.
type UnknownTypeError struct{ Type string }

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("unknown ce-type %q: this build knows %v; upgrade the consumer or fix the producer", e.Type, knownTypes())
}
func (e *UnknownTypeError) Is(target error) bool { return target == ErrDecode }

// VersionError: the type is known but not at this version.
type VersionError struct {
	Type  string
	Known string
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("unsupported version %q (this build reads %s); upgrade the consumer", e.Type, e.Known)
}
func (e *VersionError) Is(target error) bool { return target == ErrDecode }

// MissingFieldError: a required field or header is absent or empty.
type MissingFieldError struct {
	Field string
	In    string // "headers" or the ce-type of the body
}

func (e *MissingFieldError) Error() string {
	return fmt.Sprintf("missing required field %q in %s", e.Field, e.In)
}
func (e *MissingFieldError) Is(target error) bool { return target == ErrDecode }

// MalformedError: the body is not valid JSON for its type (syntax, unknown field, wrong type).
type MalformedError struct {
	Type string
	Err  error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed %s body: %v", e.Type, e.Err)
}
func (e *MalformedError) Unwrap() error        { return e.Err }
func (e *MalformedError) Is(target error) bool { return target == ErrDecode }
