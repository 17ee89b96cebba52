package transform

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// classes is the CMDB's svc.cmdb.classes answer cut down to what the tests need (the
// end-to-end test runs against the real CMDB's).
var classes = cmdbapi.ClassesResponse{
	Classes: []cmdbapi.ClassInfo{
		{Name: "ci", Abstract: true, Attributes: map[string]string{"name": "string"}},
		{Name: "hardware", Family: "hardware", Attributes: map[string]string{"name": "string", "serial_number": "string", "ip_address": "string"}},
		{Name: "linux_server", Family: "hardware", Attributes: map[string]string{"name": "string", "serial_number": "string", "ip_address": "string",
			"ram_mb": "int", "os": "string", "virtual": "bool", "disk_space_gb": "float", "first_discovered": "time", "tags": "list"}},
		{Name: "software", Family: "software", Attributes: map[string]string{"name": "string", "version": "string"}},
	},
	Relations: []cmdbapi.RelationInfo{{Name: "contains", From: []string{"hardware"}, To: []string{"software"}}},
	Families: []cmdbapi.FamilyInfo{
		{Name: "hardware", Rules: []cmdbapi.RuleInfo{
			{Name: "serial_number", Needs: "serial_number", Attributes: []string{"serial_number"}},
			{Name: "mac_address", Needs: "mac_address of a network_adapter child",
				Child: &cmdbapi.RuleChild{Family: "network_adapter", Attribute: "mac_address"}},
			{Name: "name_ip", Needs: "name+ip_address", Attributes: []string{"name", "ip_address"}},
		}},
		{Name: "software", Parents: []string{"hardware"}, Rules: []cmdbapi.RuleInfo{
			{Name: "name_version", Needs: "name+version", Attributes: []string{"name", "version"}},
		}},
	},
}

func model(t *testing.T) *Model {
	t.Helper()
	m, err := ModelFromClasses(classes)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const goodMap = `name: servers
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'lower(row.host)'
  serial_number: 'row.serial'
  ram_mb: 'int(row.ram_gb) * 1024'
  virtual: 'row.virt'
skip_if: 'row.obsolete == "1"'
relations:
  - {type: contains, to: {class: software, fields: {name: 'row.product', version: 'row.version'}}}
`

func TestLoadRefusesBadMaps(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each FILE:LINE: field: reason substring
	}{
		{"not yaml", "name: [x\n", []string{"m.yaml:1: (map): not YAML"}},
		{"missing parts", "name: x\n", []string{"m.yaml:1: target: missing", "m.yaml:1: coalesce: missing", "m.yaml:1: fields: missing"}},
		{"unknown key", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields: {name: 'row.a'}\ntransform: 1\n",
			[]string{"m.yaml:5: transform: unknown key"}},
		{"unknown class", "name: x\ntarget: {class: linux_sever}\ncoalesce: []\nfields: {name: 'row.a'}\n",
			[]string{`m.yaml:2: target.class: unknown CMDB class "linux_sever"`}},
		{"unknown attribute with a suggestion", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields:\n  name: 'row.a'\n  ram: 'row.r'\n",
			[]string{`m.yaml:6: fields.ram: class linux_server has no attribute "ram" (did you mean ram_mb?)`}},
		{"expression does not compile", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields:\n  name: 'lower(row.a'\n",
			[]string{`m.yaml:5: fields.name: expression "lower(row.a" does not compile`}},
		{"unknown variable", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields:\n  name: 'rows.a'\n",
			[]string{`m.yaml:5: fields.name: expression "rows.a" does not compile: unknown name rows`}},
		{"skip_if not boolean", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields: {name: 'row.a'}\nskip_if: 'len(row.a)'\n",
			[]string{"m.yaml:5: skip_if: expression"}},
		{"coalesce not identifying", "name: x\ntarget: {class: linux_server}\ncoalesce: [name]\nfields: {name: 'row.a'}\n",
			[]string{"m.yaml:3: coalesce: the CMDB identifies linux_server by [serial_number] or [name, ip_address]; [name] is none of them"}},
		{"coalesce not mapped", "name: x\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields: {name: 'row.a'}\n",
			[]string{`m.yaml:3: coalesce: "serial_number" is not mapped under fields`}},
		{"dependent target", "name: x\ntarget: {class: software}\ncoalesce: []\nfields: {name: 'row.a'}\n",
			[]string{"m.yaml:2: target.class: software CIs are identified through their parent (hardware)"}},
		{"bad relation", "name: x\ntarget: {class: linux_server}\ncoalesce: []\nfields: {name: 'row.a'}\nrelations:\n  - type: owns\n    to: {class: software, fields: {nam: 'row.p'}}\n",
			[]string{`m.yaml:6: relations[0].type: unknown relation type "owns"`, `m.yaml:7: relations[0].to.fields.nam: class software has no attribute "nam"`}},
		{"bad source", "name: x\nsource: 'Import HR'\ntarget: {class: linux_server}\ncoalesce: []\nfields: {name: 'row.a'}\n",
			[]string{`m.yaml:2: source: "Import HR"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load("m.yaml", []byte(tc.yaml), model(t))
			var me *MapError
			if !errors.As(err, &me) {
				t.Fatalf("error %v, want a MapError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
			if len(me.Problems) != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", len(me.Problems), len(tc.want), err)
			}
		})
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	m, err := Load("servers.yaml", []byte(goodMap), model(t))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	row := func(kv ...string) map[string]any {
		r := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			r[kv[i]] = kv[i+1]
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		row     map[string]any
		outcome string
		reason  string
		attrs   map[string]any
		items   int
		columns []string // the columns an error points at
	}{
		{name: "payload with a related child", row: row("host", "WEB-1", "serial", "SN1", "ram_gb", "8", "virt", "yes", "product", "nginx", "version", "1.2"),
			attrs: map[string]any{"name": "web-1", "serial_number": "SN1", "ram_mb": 8192, "virtual": true}, items: 2},
		{name: "JSON numbers", row: map[string]any{"host": "a", "serial": "SN2", "ram_gb": int64(4)},
			attrs: map[string]any{"name": "a", "serial_number": "SN2", "ram_mb": 4096}, items: 1},
		{name: "skip_if", row: row("host", "a", "serial", "S", "obsolete", "1"), outcome: api.OutcomeIgnored, reason: `skip_if: row.obsolete == "1"`},
		{name: "no coalesce value", row: row("host", "a", "ram_gb", "1"), outcome: api.OutcomeSkipped, reason: "no value for coalesce attribute serial_number (got nothing)"},
		{name: "placeholder coalesce value", row: row("host", "a", "serial", "To Be Filled By O.E.M.", "ram_gb", "1"), outcome: api.OutcomeSkipped, reason: "coalesce attribute serial_number"},
		{name: "expression fails", row: row("host", "a", "serial", "S", "ram_gb", "lots"), outcome: api.OutcomeError, reason: "fields.ram_mb (map line 7):", columns: []string{"ram_gb"}},
		{name: "wrong type", row: row("host", "a", "serial", "S", "ram_gb", "1", "virt", "perhaps"), outcome: api.OutcomeError, reason: `fields.virtual (map line 8): want bool, got string "perhaps"`, columns: []string{"virt"}},
		{name: "missing column is no attribute", row: row("host", "a", "serial", "S9", "ram_gb", "2"), attrs: map[string]any{"name": "a", "serial_number": "S9", "ram_mb": 2048}, items: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := m.Apply(tc.row, "run/1", at)
			if res.Outcome != tc.outcome || !strings.Contains(res.Reason, tc.reason) {
				t.Fatalf("outcome %q %q, want %q %q", res.Outcome, res.Reason, tc.outcome, tc.reason)
			}
			if fmt.Sprint(res.Columns) != fmt.Sprint(tc.columns) {
				t.Errorf("error columns %v, want %v", res.Columns, tc.columns)
			}
			if tc.outcome != "" {
				return
			}
			p := res.Payload
			if p == nil || len(p.Items) != tc.items || p.Source != DefaultSource || !p.Observed.Equal(at) {
				t.Fatalf("payload %+v, want %d items from source %s", p, tc.items, DefaultSource)
			}
			got := p.Items[0].Attributes
			if len(got) != len(tc.attrs) {
				t.Errorf("attributes %v, want %v", got, tc.attrs)
			}
			for k, v := range tc.attrs {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %#v, want %v", k, got[k], v)
				}
			}
			if p.Items[0].NativeKey != "" {
				t.Errorf("native key %q with a coalesce", p.Items[0].NativeKey)
			}
			if tc.items == 2 && (p.Items[1].Parent != RowRef || p.Items[1].Class != "software" || len(p.Relations) != 0) {
				t.Errorf("related software %+v relations %v: want a child of the row (the CMDB links it)", p.Items[1], p.Relations)
			}
		})
	}
}
