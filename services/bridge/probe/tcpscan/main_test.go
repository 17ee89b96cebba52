package tcpscan_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Scans start workers: none may outlive a scan.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
