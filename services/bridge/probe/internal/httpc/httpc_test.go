package httpc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTitle(t *testing.T) {
	cases := map[string]string{
		"<html><head><title>Grafana</title></head>":                      "Grafana",
		"<TITLE>\n  IIS Windows\tServer \n</TITLE>":                      "IIS Windows Server",
		`<title data-x="1">Ac&eacute;me &amp; Co &#8212; Portal</title>`: "Acéme & Co — Portal",
		"<titlebar>no</titlebar><title>yes</title>":                      "yes",
		"<title>unterminated":                                            "unterminated",
		"<svg><title>icon</title></svg>":                                 "icon",
		"no title here":                                                  "",
		"<title":                                                         "",
		"<title></title>":                                                "",
	}
	for in, want := range cases {
		if got := Title([]byte(in)); got != want {
			t.Errorf("Title(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Title([]byte("<title>" + strings.Repeat("é", 1000) + "</title>")); len(got) > MaxTitle || !utf8.ValidString(got) {
		t.Errorf("long title: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestURL(t *testing.T) {
	for _, c := range []struct {
		raw, scheme, host string
		port              int
		path, want        string
	}{
		{"", "", "10.0.0.1", 443, "", "https://10.0.0.1:443/"},
		{"", "", "10.0.0.1", 8080, "status", "http://10.0.0.1:8080/status"},
		{"", "https", "::1", 0, "/x?y=1", "https://[::1]:443/x?y=1"},
		{"http://a.example/b", "", "", 0, "", "http://a.example/b"},
	} {
		u, err := URL(c.raw, c.scheme, c.host, c.port, c.path)
		if err != nil || u.String() != c.want {
			t.Errorf("URL(%q, %q, %q, %d, %q) = %v, %v; want %s", c.raw, c.scheme, c.host, c.port, c.path, u, err, c.want)
		}
	}
	for _, bad := range []string{"ftp://x/", "/relative", "http://"} {
		if _, err := URL(bad, "", "", 0, ""); err == nil {
			t.Errorf("URL(%q) accepted", bad)
		}
	}
}

// FuzzTitle: any page gives a short, valid UTF-8 title on one line.
func FuzzTitle(f *testing.F) {
	f.Add([]byte("<title>x</title>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Title(b)
		if len(got) > MaxTitle || !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n\t\x00") || got != strings.TrimSpace(got) {
			t.Fatalf("Title(%q) = %q", b, got)
		}
	})
}
