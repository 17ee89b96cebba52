package probes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// Blob is captured output: Text when it is valid UTF-8, Base64 otherwise.
type Blob struct {
	Text   string `json:"text"`
	Base64 string `json:"base64,omitempty"`
	// Size is how many bytes the target produced; when SizeAtLeast, reading stopped
	// before the target finished (an endless stream) and the true size is larger.
	Size        int64 `json:"size"`
	Truncated   bool  `json:"truncated"`
	SizeAtLeast bool  `json:"size_at_least,omitempty"`
}

// List is a list of strings given either as a JSON list (of strings or numbers) or as a
// single string with comma-separated items: "22,80" and [22, "80-90"] both work.
type List []string

// JSONSchema: a string, a number or a list of them.
func (List) JSONSchema() *schema.Schema {
	one := []*schema.Schema{{Type: "string"}, {Type: "number"}}
	return &schema.Schema{AnyOf: []*schema.Schema{
		{Type: "array", Items: &schema.Schema{AnyOf: one}},
		{Type: "string", Description: "comma-separated"},
		{Type: "number"},
	}}
}

// UnmarshalJSON accepts "a,b", ["a","b"], [22, "80-90"] and 22.
func (l *List) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*l = nil
		return nil
	}
	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = splitComma(s)
		return nil
	case '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		out := List{}
		for _, r := range raw {
			var one List
			if err := one.UnmarshalJSON(r); err != nil {
				return err
			}
			out = append(out, one...)
		}
		*l = out
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want a string, a number or a list of them, not %s", b)
		}
		*l = List{n.String()}
		return nil
	}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Certificate is the summary of one X.509 certificate.
type Certificate struct {
	Subject            string    `json:"subject"`
	SubjectCN          string    `json:"subject_cn"`
	Issuer             string    `json:"issuer"`
	IssuerCN           string    `json:"issuer_cn"`
	DNSNames           []string  `json:"dns_names"`
	IPs                []string  `json:"ips"`
	Emails             []string  `json:"emails,omitempty"`
	URIs               []string  `json:"uris,omitempty"`
	Serial             string    `json:"serial"`
	NotBefore          time.Time `json:"not_before"`
	NotAfter           time.Time `json:"not_after"`
	DaysLeft           int       `json:"days_left"`
	Expired            bool      `json:"expired"`
	NotYetValid        bool      `json:"not_yet_valid,omitempty"`
	SelfSigned         bool      `json:"self_signed"`
	IsCA               bool      `json:"is_ca"`
	KeyAlgorithm       string    `json:"key_algorithm"`
	SignatureAlgorithm string    `json:"signature_algorithm"`
	// SHA256 and SHA1 are hex fingerprints of the DER certificate (lower case, no colons).
	SHA256 string `json:"sha256"`
	SHA1   string `json:"sha1"`
}

// TLS describes a finished handshake.
type TLS struct {
	Version     string `json:"version"`
	CipherSuite string `json:"cipher_suite"`
	ALPN        string `json:"alpn,omitempty"`
	ServerName  string `json:"server_name,omitempty"`
	// Verified says whether the chain verifies against the system roots for ServerName
	// (or the address); VerifyError says why not. Discovery connects without verifying
	// and reports this instead.
	Verified    bool          `json:"verified"`
	VerifyError string        `json:"verify_error,omitempty"`
	Certificate *Certificate  `json:"certificate,omitempty"`
	Chain       []Certificate `json:"chain,omitempty"`
}

// DecodeStringOrObject decodes a parameter given either as a JSON string — made into a value
// by fromString — or as an object, decoded strictly (an unknown field is refused). Types with
// such a shorthand call it from UnmarshalJSON through a method-less alias of themselves:
//
//	type plain Command
//	return probes.DecodeStringOrObject(b, (*plain)(c), func(s string) plain { return plain{Cmd: s} })
func DecodeStringOrObject[T any](b []byte, dst *T, fromString func(string) T) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*dst = fromString(s)
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}
