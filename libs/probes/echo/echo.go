// Package echo is the contract of the echo probe kind: it answers its params' message,
// optionally after a delay, optionally failing — for tests, benchmarks and link checks.
package echo

import "github.com/outpost-dev/outpost/libs/probes"

// Kind and the capability a site grants for it.
const (
	Kind       = "echo"
	Capability = "echo"
)

// Spec of the echo kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "Answers its message: for tests, benchmarks and link checks.",
	Params:      Params{}, Result: Result{},
}

// Params of an echo probe.
type Params struct {
	Msg   string `json:"msg" doc:"message to echo (≤ 64 KiB)"`
	Delay string `json:"delay,omitempty" format:"duration" doc:"wait this long before answering, simulating a slow probe (≤ 10m)"`
	Fail  string `json:"fail,omitempty" doc:"fail with this error code"`
	Size  int    `json:"size,omitempty" min:"0" max:"67108864" doc:"pad the answer to this many bytes (oversize tests)"`
}

// Result of an echo probe.
type Result struct {
	Msg     string `json:"msg"`
	Padding string `json:"padding,omitempty"`
}
