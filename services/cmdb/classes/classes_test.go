package classes_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-dev/outpost/services/cmdb/classes"
)

func TestDefaultModel(t *testing.T) {
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	for class, family := range map[string]string{
		"linux_server": "hardware", "windows_server": "hardware", "unix_server": "hardware",
		"ip_switch": "hardware", "ip_router": "hardware", "printer": "hardware",
		"web_server": "application", "database": "application", "directory_server": "application",
		"network_adapter": "network_adapter", "ip_address": "ip_address", "software": "software",
		"certificate": "certificate",
	} {
		f, ok := m.Family(class)
		if !ok || f.Name != family {
			t.Errorf("%s: family %v, want %s", class, f, family)
		}
	}
	ls, _ := m.Class("linux_server")
	for attr, typ := range map[string]classes.Type{"name": classes.String, "serial_number": classes.String, "cpu_count": classes.Int,
		"kernel_release": classes.String, "tags": classes.List, "virtual": classes.Bool} {
		if ls.Attributes[attr] != typ {
			t.Errorf("linux_server.%s: %q, want %q (inherited)", attr, ls.Attributes[attr], typ)
		}
	}
	if got := m.Descendants("server"); !slices.Equal(got, []string{"linux_server", "server", "unix_server", "windows_server"}) {
		t.Errorf("descendants of server: %v", got)
	}
	if !m.IsA("ip_router", "hardware") || m.IsA("hardware", "ip_router") {
		t.Error("IsA")
	}
	for _, r := range []string{"runs_on", "depends_on", "connected_to", "contains", "hosted_on", "member_of"} {
		if _, ok := m.Relation(r); !ok {
			t.Errorf("relation %s missing", r)
		}
	}
	hw, _ := m.Family("server")
	var rules []string
	for _, r := range hw.Rules {
		rules = append(rules, r.Name)
	}
	if !slices.Equal(rules, []string{"serial_number", "mac_address", "name_ip"}) {
		t.Errorf("hardware rules in order: %v", rules)
	}
}

func TestJunk(t *testing.T) {
	m, err := classes.Load(nil, "ACME-0000")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"To Be Filled By O.E.M.", " not specified ", "0", "Default string", "NONE",
		"System Serial Number", "Not Available", "", "   ", "0000000", "xxxxxxx", "00:00:00:00:00:00", "acme-0000"} {
		if !m.IsJunk(v) {
			t.Errorf("%q should be junk", v)
		}
	}
	for _, v := range []string{"VMware-42 1a", "SN-0001", "1.1.1.1", "22", "CZJ1234ABC"} {
		if m.IsJunk(v) {
			t.Errorf("%q is not junk", v)
		}
	}
}

func TestCanonical(t *testing.T) {
	var decoded map[string]any
	if err := json.Unmarshal([]byte(`{"n": 4, "f": 2.5, "big": 4.5}`), &decoded); err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		typ  classes.Type
		in   any
		want string
	}{
		{classes.Int, decoded["n"], "4"},
		{classes.Int, 7, "7"},
		{classes.Float, decoded["f"], "2.5"},
		{classes.Float, 3, "3"},
		{classes.Bool, true, "true"},
		{classes.String, "x", `"x"`},
		{classes.Time, "2026-11-29T13:00:00+01:00", `"2026-11-29T12:00:00Z"`},
		{classes.Time, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), `"2026-01-02T03:04:05Z"`},
		{classes.List, []any{"a", 1.0}, `["a",1]`},
		{classes.MAC, "00-50-56-AA-BB-CC", `"00:50:56:aa:bb:cc"`},
		{classes.MAC, "0050.56aa.bbcc", `"00:50:56:aa:bb:cc"`},
		{classes.MAC, "005056AABBCC", `"00:50:56:aa:bb:cc"`},
	}
	for _, c := range ok {
		v, err := c.typ.Canonical(c.in)
		if err != nil {
			t.Errorf("%s %v: %v", c.typ, c.in, err)
			continue
		}
		if got, _ := classes.Encode(v); got != c.want {
			t.Errorf("%s %v: %s, want %s", c.typ, c.in, got, c.want)
		}
	}
	bad := []struct {
		typ classes.Type
		in  any
		msg string
	}{
		{classes.Int, "4", "want int, got string"},
		{classes.Int, decoded["big"], "want int, got number"},
		{classes.Bool, "true", "want bool, got string"},
		{classes.String, 4.0, "want string, got number"},
		{classes.Time, "yesterday", "want time, got string not in RFC 3339"},
		{classes.List, map[string]any{}, "want list, got object"},
	}
	for _, c := range bad {
		_, err := c.typ.Canonical(c.in)
		var te *classes.TypeError
		if !errors.As(err, &te) || err.Error() != c.msg {
			t.Errorf("%s %v: %v, want %q", c.typ, c.in, err, c.msg)
		}
	}
}

func TestOverrideDirectory(t *testing.T) {
	dir := t.TempDir()
	override := `
classes:
  - name: storage_array
    parent: hardware
    attributes:
      capacity_tb: float
  - name: printer
    parent: hardware
    attributes:
      duplex: bool
junk_values: ["SERIAL-PLACEHOLDER"]
`
	if err := os.WriteFile(filepath.Join(dir, "site.yaml"), []byte(override), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := classes.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sa, ok := m.Class("storage_array")
	if !ok || sa.Attributes["capacity_tb"] != classes.Float || sa.Attributes["serial_number"] != classes.String || sa.Family != "hardware" {
		t.Errorf("storage_array: %+v", sa)
	}
	p, _ := m.Class("printer")
	if _, ok := p.Attributes["toner_level_pct"]; ok || p.Attributes["duplex"] != classes.Bool {
		t.Errorf("printer must be replaced whole: %v", p.Attributes)
	}
	if !m.IsJunk("serial-placeholder") || !m.IsJunk("To Be Filled By O.E.M.") {
		t.Error("override junk values add to the defaults")
	}
}

func TestInvalidModels(t *testing.T) {
	cases := map[string]string{
		"unknown parent":   "classes:\n  - name: x\n    parent: nowhere\n",
		"bad type":         "classes:\n  - name: x\n    parent: hardware\n    attributes: {a: integer}\n",
		"type change":      "classes:\n  - name: x\n    parent: hardware\n    attributes: {serial_number: int}\n",
		"no family":        "classes:\n  - name: widget\n    parent: ci\n",
		"rule on nothing":  "families:\n  - name: certificate\n    rules: [{name: r, attributes: [nope]}]\n",
		"unknown relation": "relations:\n  - name: r\n    from: [ci]\n    to: [ghost]\n",
		"typo in a key":    "classes:\n  - name: x\n    parnet: hardware\n",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := classes.Load(fstest.MapFS{"x.yaml": {Data: []byte(doc)}})
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error")
			}
		})
	}
}
