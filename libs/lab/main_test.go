package lab_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every lab is closed by its test; nothing may keep running afterwards.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
