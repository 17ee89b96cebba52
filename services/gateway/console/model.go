package console

import (
	"encoding/json"
	"strings"
	"time"
)

// The shapes below are the parts of the API's answers the pages show. Unknown fields are
// ignored, so a service adding a field breaks no page.

type agentView struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Site          string     `json:"site"`
	State         string     `json:"state"`
	Status        string     `json:"status"`
	Version       string     `json:"version"`
	Capabilities  []string   `json:"capabilities"`
	Enrolled      *time.Time `json:"enrolled"`
	Approved      *time.Time `json:"approved"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	Pools         map[string]struct {
		Size   int `json:"size"`
		Busy   int `json:"busy"`
		Queued int `json:"queued"`
	} `json:"pools"`
	OutboxBytes int64   `json:"outbox_bytes"`
	OutboxFull  bool    `json:"outbox_full"`
	Uptime      float64 `json:"uptime_s"`
	RSS         int64   `json:"rss_bytes"`
}

// Ref is how the API names an agent in a path: site:name.
func (a agentView) Ref() string { return a.Site + ":" + a.Name }

type agentList struct {
	Agents     []agentView `json:"agents"`
	NextCursor string      `json:"next_cursor"`
}

type site struct {
	Name        string    `json:"name"`
	Ranges      []string  `json:"ranges"`
	Exclude     []string  `json:"exclude"`
	AutoApprove bool      `json:"auto_approve"`
	Created     time.Time `json:"created"`
}

type siteList struct {
	Sites []site `json:"sites"`
}

type credential struct {
	Name     string    `json:"name"`
	Type     string    `json:"type"`
	Site     string    `json:"site"`
	Username string    `json:"username"`
	Fields   []string  `json:"fields"`
	Created  time.Time `json:"created"`
}

type credentialList struct {
	Credentials []credential `json:"credentials"`
}

type counters struct {
	Addresses    int `json:"addresses"`
	Scanned      int `json:"scanned"`
	Alive        int `json:"alive"`
	Classified   int `json:"classified"`
	Unclassified int `json:"unclassified"`
	ProbesSent   int `json:"probes_sent"`
	ProbesDone   int `json:"probes_done"`
	PayloadsSent int `json:"payloads_sent"`
	CIsSent      int `json:"cis_sent"`
	Relations    int `json:"relations_sent"`
	Errors       int `json:"errors"`
}

type hostBrief struct {
	IP         string `json:"ip"`
	Name       string `json:"name,omitempty"`
	Class      string `json:"class,omitempty"`
	Stage      string `json:"stage"`
	ByPorts    bool   `json:"by_ports,omitempty"`
	Credential string `json:"credential,omitempty"`
	CIs        int    `json:"cis_sent,omitempty"`
}

type hostLog struct {
	Time       time.Time `json:"time"`
	Step       string    `json:"step"`
	Kind       string    `json:"kind"`
	Probe      string    `json:"probe"`
	Status     string    `json:"status"`
	Credential string    `json:"credential"`
	Failed     []string  `json:"failed_credentials"`
	Error      string    `json:"error"`
	Note       string    `json:"note"`
}

type hostDetail struct {
	IP         string              `json:"ip"`
	Stage      string              `json:"stage"`
	Class      string              `json:"class"`
	Classifier string              `json:"classifier"`
	ByPorts    bool                `json:"by_ports"`
	Name       string              `json:"name"`
	Attributes map[string]any      `json:"attributes"`
	Worked     map[string]string   `json:"credentials_worked"`
	Failed     map[string][]string `json:"credentials_failed"`
	CIs        int                 `json:"cis_sent"`
	Facts      json.RawMessage     `json:"facts"`
	Log        []hostLog           `json:"log"`
}

type run struct {
	ID            string      `json:"id"`
	Site          string      `json:"site"`
	Ranges        []string    `json:"ranges"`
	Exclude       []string    `json:"exclude,omitempty"`
	Ports         []int       `json:"ports,omitempty"`
	Credentials   []string    `json:"credentials,omitempty"`
	Schedule      string      `json:"schedule,omitempty"`
	State         string      `json:"state"`
	Reason        string      `json:"reason,omitempty"`
	Created       time.Time   `json:"created"`
	Updated       time.Time   `json:"updated"`
	Finished      *time.Time  `json:"finished,omitempty"`
	Deadline      time.Time   `json:"deadline"`
	Counters      counters    `json:"counters"`
	Errors        []string    `json:"errors,omitempty"`
	Log           []string    `json:"log,omitempty"`
	PendingProbes int         `json:"pending_probes"`
	Hosts         []hostBrief `json:"hosts,omitempty"`
	Host          *hostDetail `json:"host,omitempty"`
}

// Final reports whether the run will not change any more.
func (r run) Final() bool { return finalState(r.State) }

// Progress is the share of the scan done, in percent.
func (r run) Progress() int {
	if r.Final() {
		return 100
	}
	return pct(r.Counters.Scanned, r.Counters.Addresses)
}

func finalState(s string) bool { return s == "completed" || s == "failed" || s == "canceled" }

type runList struct {
	Runs       []run  `json:"runs"`
	NextCursor string `json:"next_cursor"`
}

type ciCounts struct {
	Exact          map[string]int `json:"exact"`
	WithSubclasses map[string]int `json:"with_subclasses"`
	Total          int            `json:"total"`
}

type peer struct {
	ID    string `json:"id"`
	Class string `json:"class"`
	Name  string `json:"name"`
}

type relation struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Peer     peer      `json:"peer"`
	Source   string    `json:"source"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
}

type ci struct {
	ID                string         `json:"id"`
	Class             string         `json:"class"`
	Name              string         `json:"name"`
	Attributes        map[string]any `json:"attributes"`
	Created           time.Time      `json:"created"`
	Updated           time.Time      `json:"updated"`
	LastSeen          *time.Time     `json:"last_seen"`
	Stale             bool           `json:"stale"`
	OperationalStatus string         `json:"operational_status"`
	Sources           map[string]struct {
		Source   string    `json:"source"`
		Observed time.Time `json:"observed"`
	} `json:"sources"`
	Identifiers []struct {
		Family string `json:"family"`
		Kind   string `json:"kind"`
		Value  string `json:"value"`
	} `json:"identifiers"`
}

type ciList struct {
	Items      []ci   `json:"items"`
	NextCursor string `json:"next_cursor"`
	Total      *int   `json:"total"`
}

type relations struct {
	Outgoing []relation `json:"outgoing"`
	Incoming []relation `json:"incoming"`
}

type change struct {
	ID        string    `json:"id"`
	Attribute string    `json:"attribute"`
	Old       any       `json:"old"`
	New       any       `json:"new"`
	Source    string    `json:"source"`
	Time      time.Time `json:"time"`
}

type history struct {
	Items      []change `json:"items"`
	NextCursor string   `json:"next_cursor"`
}

type graphNode struct {
	ID    string `json:"id"`
	Class string `json:"class"`
	Name  string `json:"name"`
	Depth int    `json:"depth"`
}

type graphEdge struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

type graph struct {
	Nodes []graphNode `json:"nodes"`
	Edges []graphEdge `json:"edges"`
}

type status struct {
	Version string `json:"version"`
	Streams []struct {
		Name      string `json:"name"`
		Messages  uint64 `json:"messages"`
		Bytes     uint64 `json:"bytes"`
		Consumers []struct {
			Name        string `json:"name"`
			Pending     uint64 `json:"pending"`
			AckPending  int    `json:"ack_pending"`
			Redelivered int    `json:"redelivered"`
		} `json:"consumers"`
	} `json:"streams"`
	DLQ struct {
		Messages uint64 `json:"messages"`
		Bytes    uint64 `json:"bytes"`
	} `json:"dlq"`
}

type dlqItem struct {
	Seq           uint64 `json:"seq"`
	Subject       string `json:"subject"`
	Code          string `json:"code"`
	Reason        string `json:"reason"`
	SourceSubject string `json:"source_subject"`
	SourceStream  string `json:"source_stream"`
	Deliveries    int    `json:"deliveries"`
	Service       string `json:"service"`
	Time          string `json:"time"`
	Size          int64  `json:"size"`
	Data          string `json:"data"`
	DataBase64    bool   `json:"data_base64"`
	Truncated     bool   `json:"truncated"`
}

// When is the time the message was dead-lettered (zero when the API did not say).
func (d dlqItem) When() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, d.Time)
	return t
}

type dlqList struct {
	Items      []dlqItem `json:"items"`
	NextCursor string    `json:"next_cursor"`
}

// IP is the CI's address attribute, if it has one.
func (c ci) IP() string { return value(c.Attributes["ip_address"]) }

// Summary is the one attribute line that tells CIs of a list apart: OS, model or version.
func (c ci) Summary() string {
	a := func(k string) string { return value(c.Attributes[k]) }
	join := func(parts ...string) string { return strings.TrimSpace(strings.Join(parts, " ")) }
	switch {
	case a("os") != "":
		return join(a("os"), a("os_version"))
	case a("model") != "":
		return join(a("manufacturer"), a("model"))
	case a("version") != "":
		return join(a("vendor"), a("version"))
	case a("mac_address") != "":
		return a("mac_address")
	case a("subject") != "":
		return a("subject")
	}
	return ""
}
