//go:build !linux

package tcpscan

import (
	"context"
	"errors"
)

const rawAvailable = false

var errRawUnavailable = errors.New("raw connect engine unavailable")

func (e *engine) runRaw(context.Context, int) error { return errRawUnavailable }
