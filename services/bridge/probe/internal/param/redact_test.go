package param

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// TestRedactEncodedForms: a secret echoed back in any of the forms servers use never
// survives redaction.
func TestRedactEncodedForms(t *testing.T) {
	const user, secret = "root", `Sup3r-Secret/SSH+pw?&"<x>`
	creds := []probe.Credential{{Name: "prod-ssh", Type: "ssh", Username: user, Secret: secret,
		Fields: map[string]string{"priv_password": "priv-Pass-77", "database": "inventory"}}}
	jsonOf := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	basic := func(e *base64.Encoding) string { return e.EncodeToString([]byte(user + ":" + secret)) }
	for _, c := range []struct {
		name, text string
	}{
		{"plain", "password was " + secret},
		{"base64 std", "x=" + base64.StdEncoding.EncodeToString([]byte(secret))},
		{"base64 url", base64.URLEncoding.EncodeToString([]byte(secret))},
		{"base64 std, no padding", base64.RawStdEncoding.EncodeToString([]byte(secret)) + "!"},
		{"base64 url, no padding", base64.RawURLEncoding.EncodeToString([]byte(secret))},
		{"basic auth header", "Authorization: Basic " + basic(base64.StdEncoding)},
		{"basic auth, url alphabet", basic(base64.URLEncoding)},
		{"basic auth, no padding", basic(base64.RawStdEncoding)},
		{"base64 of a JSON body holding it", base64.StdEncoding.EncodeToString([]byte(`{"password":"` + secret + `","x":1}`))},
		{"base64 of it after one byte", base64.StdEncoding.EncodeToString([]byte("a" + secret + "zz"))},
		{"base64 of it after two bytes", base64.RawURLEncoding.EncodeToString([]byte("ab" + secret))},
		{"query escaped", "/login?pw=" + url.QueryEscape(secret)},
		{"path escaped", "/users/" + url.PathEscape(secret)},
		{"JSON escaped", `{"echo":` + jsonOf(secret) + `}`},
		{"JSON escaped without HTML escaping", `{"echo":"Sup3r-Secret/SSH+pw?&\"<x>"}`},
		{"a secret field", "priv: priv-Pass-77"},
		{"a secret field, base64", base64.StdEncoding.EncodeToString([]byte("priv-Pass-77"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Redact(c.text, Secrets(creds)...)
			if !strings.Contains(got, "***") {
				t.Fatalf("nothing redacted in %q", got)
			}
			for _, leak := range []string{secret, "Sup3r-Secret", "priv-Pass-77"} {
				if strings.Contains(got, leak) {
					t.Errorf("%q still holds %q", got, leak)
				}
			}
			// what is left must not decode back to the secret either
			for _, field := range strings.FieldsFunc(got, func(r rune) bool { return strings.ContainsRune(` :="{},!?/&`, r) }) {
				for _, e := range b64s {
					if b, err := e.DecodeString(field); err == nil && strings.Contains(string(b), "Secret") {
						t.Errorf("%q decodes to %q", field, b)
					}
				}
			}
		})
	}
	// what is not a secret stays readable
	if got := Redact("database inventory, user root", Secrets(creds)...); got != "database inventory, user root" {
		t.Errorf("redacted what is not secret: %q", got)
	}
}
