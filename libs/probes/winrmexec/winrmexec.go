// Package winrmexec is the contract of the winrm_exec probe kind: log in to a Windows host
// over WS-Management (WinRM: HTTP 5985 or HTTPS 5986) with the first credential that works
// and run PowerShell scripts or cmd.exe command lines in a remote shell, each with its own
// timeout.
//
// Authentication is NTLM (NTLMv2: the password itself never crosses the wire, so plain
// HTTP on 5985 is allowed, as on every Windows estate) or Basic (the password in every
// request: only over HTTPS with a verified certificate, unless the credential allows
// insecure transport). Kerberos is not supported.
//
// The result reports which credential worked and which were refused (credential
// affinity), the HTTP Server header of the listener, and per command stdout, stderr (each
// capped, with a truncated flag and the original size; PowerShell's CLIXML error stream
// is decoded to the text PowerShell shows) and the exit code. When every credential is
// refused the result fails with auth_failed and still carries FailedCredentials.
package winrmexec

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "winrm_exec"
	Capability = "winrm"
)

// Shells a command runs in.
const (
	ShellPowerShell = "powershell"
	ShellCmd        = "cmd"
)

// Auth mechanisms.
const (
	AuthNTLM  = "ntlm"
	AuthBasic = "basic"
)

// CodeFault: the WinRM service answered with a WS-Management fault (a quota, a policy,
// a shell that could not be created); the message carries the fault's text.
const CodeFault = "winrm_fault"

// Spec of the winrm_exec kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredWinRM},
	Description: "Run PowerShell scripts or cmd command lines over WinRM (WS-Management, NTLM or Basic) with the first credential that works; per command stdout, stderr, exit code.",
	Params:      Params{}, Result: Result{},
	Codes: []probes.Code{{Code: CodeFault, Description: "the WinRM service refused the request with a WS-Management fault (shell quota, policy, unencrypted traffic disabled…): the message quotes it; fix the listener's configuration (winrm get winrm/config)"}},
}

// Params of a winrm_exec probe.
type Params struct {
	Commands []Command `json:"commands" required:"true" min:"1" doc:"commands: \"Get-Service\" (run in the default shell) or {\"cmd\": \"...\", \"shell\": \"cmd\", \"timeout\": \"10s\"}"`
	Shell    string    `json:"shell,omitempty" enum:"powershell,cmd" default:"powershell" doc:"shell of commands that do not name one: powershell (powershell.exe -EncodedCommand) or cmd (cmd.exe)"`
	Port     int       `json:"port,omitempty" min:"0" max:"65535" default:"5985" doc:"WinRM port (5986 with https; or give target host:port)"`
	HTTPS    bool      `json:"https,omitempty" doc:"WinRM over HTTPS (default port 5986); the certificate is verified against the system roots or ca_pem"`
	// Auth overrides the credential's fields.auth.
	Auth          string `json:"auth,omitempty" enum:"ntlm,basic" doc:"ntlm (default: the credential's fields.auth, else ntlm) or basic (needs verified HTTPS or the credential's allow_insecure)"`
	CAPEM         string `json:"ca_pem,omitempty" doc:"PEM certificates that sign the listener's certificate (a private CA); with https"`
	TLSServerName string `json:"tls_server_name,omitempty" doc:"name the certificate must carry (default: the target)"`
	// InsecureSkipVerify needs every credential's allow_insecure.
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty" doc:"do not verify the HTTPS certificate: needs the credential's allow_insecure"`
	ConnectTimeout     string `json:"connect_timeout,omitempty" format:"duration" default:"15s" doc:"TCP connect + authentication + shell creation, per credential"`
	Timeout            string `json:"timeout,omitempty" format:"duration" default:"120s" doc:"default timeout of each command"`
	MaxOutput          int    `json:"max_output,omitempty" min:"0" default:"65536" doc:"bytes kept per stream of each command"`
	StopOnError        bool   `json:"stop_on_error,omitempty" doc:"stop after the first command that fails or times out"`
}

// Command is one command with its shell and timeout.
type Command struct {
	Cmd     string `json:"cmd"`
	Shell   string `json:"shell,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

// JSONSchema: a command (or script), or an object with its own shell and timeout.
func (Command) JSONSchema() *schema.Schema {
	return &schema.Schema{AnyOf: []*schema.Schema{
		{Type: "string"},
		{Type: "object", AdditionalProperties: false, Required: []string{"cmd"}, Properties: map[string]*schema.Schema{
			"cmd":     {Type: "string", Description: "PowerShell script or cmd command line"},
			"shell":   {Type: "string", Enum: []any{ShellPowerShell, ShellCmd}, Description: "powershell or cmd (default: the probe's shell)"},
			"timeout": {Type: "string", Format: "duration", Description: "timeout of this command"},
		}},
	}}
}

// UnmarshalJSON accepts "Get-Service" as well as {"cmd": "ver", "shell": "cmd"}.
func (c *Command) UnmarshalJSON(b []byte) error {
	type plain Command
	return probes.DecodeStringOrObject(b, (*plain)(c), func(s string) plain { return plain{Cmd: s} })
}

// Output is what one command did.
type Output struct {
	Command    string      `json:"command"`
	Shell      string      `json:"shell"`
	Stdout     probes.Blob `json:"stdout"`
	Stderr     probes.Blob `json:"stderr"`
	ExitCode   *int        `json:"exit_code"`
	TimedOut   bool        `json:"timed_out,omitempty"`
	Error      string      `json:"error,omitempty"`
	DurationMS int64       `json:"duration_ms"`
}

// Result of a winrm_exec probe.
type Result struct {
	IP                string   `json:"ip"`
	Port              int      `json:"port"`
	HTTPS             bool     `json:"https"`
	Auth              string   `json:"auth"`
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
	Username          string   `json:"username"`
	// Server is the listener's HTTP Server header (Microsoft-HTTPAPI/2.0 on Windows).
	Server     string   `json:"server,omitempty"`
	Outputs    []Output `json:"outputs"`
	DurationMS int64    `json:"duration_ms"`
}
