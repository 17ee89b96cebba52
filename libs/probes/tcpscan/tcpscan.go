// Package tcpscan is the contract of the tcp_scan probe kind: a TCP connect scan of
// addresses × ports that streams each address as it finishes (Chunk) and ends with a
// Summary.
package tcpscan

import "github.com/outpost-dev/outpost/libs/probes"

// Kind and the capability a site grants for it.
const (
	Kind       = "tcp_scan"
	Capability = "tcp"
)

// Spec of the tcp_scan kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "TCP connect scan of addresses × ports; streams each address as it finishes, ends with a summary.",
	Params:      Params{}, Result: Summary{}, Chunk: Chunk{},
}

// Params of a tcp_scan probe.
type Params struct {
	Targets        probes.List `json:"targets,omitempty" doc:"IPs, CIDRs, ranges (10.0.0.1-10.0.0.50 or 10.0.0.1-50); default: the probe's target"`
	Ports          probes.List `json:"ports,omitempty" default:"discovery" doc:"ports, ranges (1000-2000), presets top100 and discovery"`
	Rate           *float64    `json:"rate,omitempty" min:"0" doc:"this scan's own limit in probes per second, within the bridge's budget (kinds.tcp_scan.rate, default 2000/s, shared by all the scans the bridge runs at once): it can only lower the scan's share; absent or 0: the budget alone"`
	MaxInFlight    int         `json:"max_in_flight,omitempty" min:"0" default:"1024" doc:"connection attempts in flight (bounded by the open-file limit)"`
	PerHost        int         `json:"per_host,omitempty" min:"0" default:"32" doc:"attempts in flight to one address"`
	Retries        *int        `json:"retries,omitempty" min:"0" max:"6" default:"1" doc:"extra tries of a port that did not answer"`
	InitialTimeout string      `json:"initial_timeout,omitempty" format:"duration" default:"500ms" doc:"timeout before any answer"`
	MinTimeout     string      `json:"min_timeout,omitempty" format:"duration" default:"100ms" doc:"lower bound of the adaptive timeout"`
	MaxTimeout     string      `json:"max_timeout,omitempty" format:"duration" default:"1250ms" doc:"upper bound of the adaptive timeout"`
	ChunkHosts     int         `json:"chunk_hosts,omitempty" min:"0" default:"256" doc:"finished addresses per streamed chunk"`
	Seed           *uint64     `json:"seed,omitempty" doc:"seed of the random order (reproducible scans)"`
}

// Host is one address that answered.
type Host struct {
	IP string `json:"ip"`
	// Open ports accepted a connection.
	Open []int `json:"open"`
	// Closed ports answered with a reset, as port lists ("1-21,23-79").
	Closed      string `json:"closed,omitempty"`
	ClosedCount int    `json:"closed_count"`
	// Filtered ports did not answer (dropped, or an ICMP unreachable).
	Filtered      string `json:"filtered,omitempty"`
	FilteredCount int    `json:"filtered_count"`
	// RTTMS is the smoothed round-trip time of the address's answers.
	RTTMS float64 `json:"rtt_ms,omitempty"`
}

// Chunk is one streamed batch of finished addresses.
type Chunk struct {
	Hosts []Host `json:"hosts"`
	// Silent addresses answered on no port (every port filtered), as ranges.
	Silent []string `json:"silent,omitempty"`
	// Done and Total count addresses: progress.
	Done  int `json:"done"`
	Total int `json:"total"`
}

// Summary is the final chunk of a scan.
type Summary struct {
	Addresses   int      `json:"addresses"`
	Ports       int      `json:"ports"`
	Probes      int64    `json:"probes"`
	Retries     int64    `json:"retries"`
	Open        int64    `json:"open"`
	Closed      int64    `json:"closed"`
	Filtered    int64    `json:"filtered"`
	HostsUp     int      `json:"hosts_up"`
	HostsSilent int      `json:"hosts_silent"`
	Denied      []string `json:"denied,omitempty"`
	DeniedCount int      `json:"denied_count"`
	Chunks      int      `json:"chunks"`
	DurationMS  int64    `json:"duration_ms"`
	ProbesPerS  float64  `json:"probes_per_s"`
	// Rate is the most this scan could go at: its own rate within the bridge's budget
	// (0: unlimited); BridgeRate is that budget, shared with the bridge's other scans.
	Rate        float64 `json:"rate"`
	BridgeRate  float64 `json:"bridge_rate"`
	MaxInFlight int     `json:"max_in_flight"`
	// Engine is "raw" (non-blocking sockets and epoll) or "dial" (the bridge's dialer).
	Engine  string `json:"engine"`
	PerHost int    `json:"per_host"`
	// Hosts and Silent carry the results themselves when the caller takes no stream.
	Hosts     []Host   `json:"hosts,omitempty"`
	Silent    []string `json:"silent,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
}
