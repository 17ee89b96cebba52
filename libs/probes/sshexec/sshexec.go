// Package sshexec is the contract of the ssh_exec probe kind: log in over SSH with the first
// credential that works and run a list of commands, each with its own timeout.
//
// The result reports which credential worked and which were refused (credential affinity),
// the host key's SHA-256 fingerprint, and per command stdout, stderr (each capped, with a
// truncated flag and the original size) and the exit code. When every credential is
// refused the result fails with auth_failed and still carries FailedCredentials; when the
// host key differs from the pinned or recorded one it fails with host_key_mismatch, carries
// the key seen in HostKey, and nothing was sent.
package sshexec

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "ssh_exec"
	Capability = "ssh"
)

// CodeHostKeyMismatch: the SSH host key differs from the pinned one or the one the hub
// recorded at first use; no credential was sent.
const CodeHostKeyMismatch = "host_key_mismatch"

// Spec of the ssh_exec kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredSSH},
	Description: "Run commands over SSH with the first credential that works; per command stdout, stderr, exit code.",
	Params:      Params{}, Result: Result{},
	Codes: []probes.Code{{Code: CodeHostKeyMismatch, Description: "the SSH host key differs from the pinned or recorded one: nothing was sent; if the host was rebuilt, forget its key (outpost hostkeys forget)"}},
}

// Params of an ssh_exec probe.
type Params struct {
	Commands       []Command `json:"commands" required:"true" min:"1" doc:"commands: \"uname -a\" or {\"cmd\": \"...\", \"timeout\": \"10s\"}"`
	Port           int       `json:"port,omitempty" min:"0" max:"65535" default:"22" doc:"SSH port (or give target host:port)"`
	ConnectTimeout string    `json:"connect_timeout,omitempty" format:"duration" default:"15s" doc:"TCP connect + SSH handshake + authentication, per credential"`
	Timeout        string    `json:"timeout,omitempty" format:"duration" default:"120s" doc:"default timeout of each command"`
	MaxOutput      int       `json:"max_output,omitempty" min:"0" default:"65536" doc:"bytes kept per stream of each command"`
	HostKey        string    `json:"host_key,omitempty" doc:"pinned host key fingerprint (SHA256:...); refused before logging in when it differs"`
	// KnownHostKey is the fingerprint the hub recorded the first time it saw this address.
	KnownHostKey string `json:"known_host_key,omitempty" doc:"the fingerprint the hub recorded at first use (set by the hub); refused before logging in when it differs"`
	StopOnError  bool   `json:"stop_on_error,omitempty" doc:"stop after the first command that fails or times out"`
}

// Command is one command with its timeout.
type Command struct {
	Cmd     string `json:"cmd"`
	Timeout string `json:"timeout,omitempty"`
}

// JSONSchema: a command line, or an object with its own timeout.
func (Command) JSONSchema() *schema.Schema {
	return &schema.Schema{AnyOf: []*schema.Schema{
		{Type: "string"},
		{Type: "object", AdditionalProperties: false, Required: []string{"cmd"}, Properties: map[string]*schema.Schema{
			"cmd":     {Type: "string", Description: "command line"},
			"timeout": {Type: "string", Format: "duration", Description: "timeout of this command"},
		}},
	}}
}

// UnmarshalJSON accepts "uname -a" as well as {"cmd": "uname -a", "timeout": "10s"}.
func (c *Command) UnmarshalJSON(b []byte) error {
	type plain Command
	return probes.DecodeStringOrObject(b, (*plain)(c), func(s string) plain { return plain{Cmd: s} })
}

// Output is what one command did.
type Output struct {
	Command    string      `json:"command"`
	Stdout     probes.Blob `json:"stdout"`
	Stderr     probes.Blob `json:"stderr"`
	ExitCode   *int        `json:"exit_code"`
	Signal     string      `json:"signal,omitempty"`
	TimedOut   bool        `json:"timed_out,omitempty"`
	Error      string      `json:"error,omitempty"`
	DurationMS int64       `json:"duration_ms"`
}

// Result of an ssh_exec probe.
type Result struct {
	IP                string   `json:"ip"`
	Port              int      `json:"port"`
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
	Username          string   `json:"username"`
	HostKey           string   `json:"host_key"`
	HostKeyType       string   `json:"host_key_type"`
	ServerVersion     string   `json:"server_version"`
	Outputs           []Output `json:"outputs"`
	DurationMS        int64    `json:"duration_ms"`
}
