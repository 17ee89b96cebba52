package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultPatternsLoad(t *testing.T) {
	ps, err := LoadPatterns("")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nginx", "apache", "tomcat", "spring_boot", "gunicorn", "postgresql", "mysql"} {
		found := false
		for _, p := range ps.List {
			found = found || p.Name == want
		}
		if !found {
			t.Errorf("pattern %s missing", want)
		}
	}
}

// A bad pattern is refused at load with its file, line and reason; every problem at once.
func TestBadPatternsRefused(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		reason     string
	}{
		{"unknown class", "patterns:\n  - name: x\n    class: toaster\n    match: {process: x}\n", 2, `class "toaster"`},
		{"bad regex", "patterns:\n  - name: a\n    class: cache\n    match: {process: x}\n  - name: y\n    class: cache\n    match: {process: '('}\n", 5, "match.process: bad regex"},
		{"no host group", "patterns:\n  - name: y\n    class: cache\n    match: {process: y}\n    connections:\n      - files: [/etc/y.conf]\n        find: [{regex: 'server (\\S+)', default_port: 1}]\n", 2, "no group named host"},
		{"unknown variable", "patterns:\n  - name: y\n    class: cache\n    match: {process: y}\n    connections:\n      - files: ['/etc/${nope}/y.conf']\n        find: [{regex: '(?P<host>\\S+)', default_port: 1}]\n", 2, "${nope}"},
		{"matches everything", "patterns:\n  - name: y\n    class: cache\n", 2, "match needs process"},
		{"unknown key", "patterns:\n  - name: y\n    class: cache\n    match: {process: y}\n    colour: red\n", 5, "colour"},
		{"duplicate of an embedded pattern", "patterns:\n  - name: nginx\n    class: web_server\n    match: {process: nginx}\n", 2, "already defined"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "custom.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadPatterns(dir)
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LoadError", err)
			}
			if le.File != path || le.Line != c.line || !strings.Contains(le.Reason, c.reason) {
				t.Errorf("got %s:%d %q, want %s:%d containing %q", le.File, le.Line, le.Reason, path, c.line, c.reason)
			}
		})
	}
}

// Adding an application type is a YAML file: a custom pattern recognises its process and
// finds its connection in its configuration.
func TestCustomPatternIsData(t *testing.T) {
	dir := t.TempDir()
	y := "patterns:\n  - name: inventory\n    class: app_server\n    match: {process: '^inventoryd$'}\n    vars: {conf: '--config[= ](?P<conf>\\S+)'}\n    connections:\n      - files: ['${conf}']\n        find: [{regex: 'redis_url = redis://(?P<host>[\\w.-]+):(?P<port>\\d+)'}]\n"
	if err := os.WriteFile(filepath.Join(dir, "inventory.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := LoadPatterns(dir)
	if err != nil {
		t.Fatal(err)
	}
	var p *Pattern
	for _, x := range ps.List {
		if x.Name == "inventory" {
			p = x
		}
	}
	if p == nil || !p.candidate("inventoryd", "/usr/bin/inventoryd --config /etc/inv.toml", 9000) {
		t.Fatalf("the custom pattern does not recognise its process")
	}
	path, ok := expandPath(p.Connections[0].Files[0], p.variables("/usr/bin/inventoryd --config /etc/inv.toml", 9000, 42))
	if !ok || path != "/etc/inv.toml" {
		t.Errorf("config path %q %v", path, ok)
	}
}
