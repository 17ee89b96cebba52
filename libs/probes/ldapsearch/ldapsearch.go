// Package ldapsearch is the contract of the ldap_search probe kind: an LDAP bind and a
// paged search, entries streamed a page at a time.
package ldapsearch

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "ldap_search"
	Capability = "ldap"
)

// Spec of the ldap_search kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredLDAP},
	Description: "LDAP bind and paged search; entries streamed a page at a time.",
	Params:      Params{}, Result: Result{}, Chunk: Page{},
}

// Params of an ldap_search probe.
type Params struct {
	Port       int         `json:"port,omitempty" min:"0" max:"65535" doc:"TCP port (default 389, or 636 for ldaps)"`
	Security   string      `json:"security,omitempty" enum:"none,ldaps,starttls" doc:"none with a credential needs the credential's allow_insecure (default: starttls with a credential, none without, ldaps on 636)"`
	TLSVerify  bool        `json:"tls_verify,omitempty" doc:"fail when the certificate does not verify (always reported; on whenever a credential is carried, unless it allows insecure)"`
	ServerName string      `json:"server_name,omitempty" doc:"TLS server name"`
	CAPEM      string      `json:"ca_pem,omitempty" doc:"CA certificate(s) to verify the server with (default: the system's roots)"`
	BaseDN     *string     `json:"base_dn,omitempty" doc:"search base; \"\" with scope base reads the root DSE (default: the root DSE's defaultNamingContext)"`
	Scope      string      `json:"scope,omitempty" enum:"base,one,sub" default:"sub" doc:"search scope"`
	Filter     string      `json:"filter,omitempty" default:"(objectClass=*)" doc:"RFC 4515 filter"`
	Attributes probes.List `json:"attributes,omitempty" doc:"attributes to return (default: all user attributes)"`
	PageSize   *int        `json:"page_size,omitempty" min:"0" default:"500" doc:"entries per page (RFC 2696); 0 = no paging"`
	MaxEntries int         `json:"max_entries,omitempty" min:"0" default:"100000" doc:"stop after this many entries (truncated)"`
	Timeout    string      `json:"timeout,omitempty" format:"duration" default:"30s" doc:"connect, bind and each page"`
}

// Entry is one entry found.
type Entry struct {
	DN         string              `json:"dn"`
	Attributes map[string][]string `json:"attributes"`
	// Binary names the attributes whose values are base64.
	Binary []string `json:"binary,omitempty"`
	// Truncated: a value was longer than 16 KiB and was cut.
	Truncated bool `json:"truncated,omitempty"`
}

// Page is one streamed page of entries.
type Page struct {
	Page    int     `json:"page"`
	Entries []Entry `json:"entries"`
}

// Result of an ldap_search probe (its final chunk).
type Result struct {
	IP                string      `json:"ip"`
	Port              int         `json:"port"`
	Security          string      `json:"security"`
	TLS               *probes.TLS `json:"tls,omitempty"`
	Credential        string      `json:"credential,omitempty"`
	BindDN            string      `json:"bind_dn,omitempty"`
	FailedCredentials []string    `json:"failed_credentials"`
	BaseDN            string      `json:"base_dn"`
	Scope             string      `json:"scope"`
	Filter            string      `json:"filter"`
	Entries           int         `json:"entries"`
	Pages             int         `json:"pages"`
	Truncated         bool        `json:"truncated"`
	DurationMS        int64       `json:"duration_ms"`
	// Results carries the entries when the caller takes no stream.
	Results []Entry `json:"results,omitempty"`
}
