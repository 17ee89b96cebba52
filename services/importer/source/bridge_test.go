package source

import (
	"strings"
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
)

func TestCheckDefinitionListsEveryProblem(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  api.Source
		want []string // substrings of the error; none: valid
	}{
		{"sql by key", api.Source{Name: "sccm", Site: "dc1", Type: "sql", Params: map[string]string{"target": "10.0.0.5", "query": "SELECT * FROM v_R_System", "key": `"ResourceID"`}}, nil},
		{"sql by offset", api.Source{Name: "sccm", Site: "dc1", Type: "sql", Params: map[string]string{"target": "10.0.0.5", "query": "select a, b from t", "order": "a, b DESC"}}, nil},
		{"sql without paging", api.Source{Name: "sccm", Site: "dc1", Type: "sql", Params: map[string]string{"target": "10.0.0.5", "query": "SELECT 1;"}},
			[]string{"params key or order: one is required", "no trailing semicolon"}},
		{"sql both and a write", api.Source{Name: "s", Site: "dc1", Type: "sql", Params: map[string]string{"target": "x", "query": "DELETE FROM t", "key": "id", "order": "id"}},
			[]string{"give one", "want a SELECT"}},
		{"nothing right", api.Source{Name: "-x", Type: "ftp"}, []string{`name "-x"`, "site: missing", `type "ftp"`}},
		{"ldap OUs", api.Source{Name: "ad", Site: "dc1", Type: "ldap", Params: map[string]string{"target": "10.0.0.2", "ou.1.base": "ou=People,dc=x", "ou.2.base": "ou=Staff,dc=x", "ou.2.filter": "(objectClass=person)", "explode": "memberOf"}}, nil},
		{"ldap OU without base", api.Source{Name: "ad", Site: "dc1", Type: "ldap", Params: map[string]string{"target": "10.0.0.2", "ou.1.filter": "(cn=*)"}}, []string{"ou.1.base: required"}},
		{"ldap no OU", api.Source{Name: "ad", Site: "dc1", Type: "ldap", Params: map[string]string{"target": "10.0.0.2", "ou.x.base": "dc=x"}}, []string{"param ou.x.base: unknown", "OUs are numbered 1, 2"}},
		{"rest", api.Source{Name: "cmdb", Site: "dc1", Type: "rest", Credential: "api", Params: map[string]string{"url": "https://10.0.0.9/api/hosts", "paging": "cursor", "cursor_path": "/meta/next", "header.Accept": "application/json"}}, nil},
		{"rest secrets and junk", api.Source{Name: "cmdb", Site: "dc1", Type: "rest", Params: map[string]string{"url": "ftp://x", "paging": "pages", "records": "items", "header.authorization": "Bearer t", "page_size": "many", "timeout": "soon"}},
			[]string{"want an absolute http(s) URL", `paging="pages"`, "JSON pointer", "no secrets in params", "page_size", "timeout"}},
		{"file", api.Source{Name: "exp", Site: "dc1", Type: "file", Params: map[string]string{"path": "/srv/exports/hosts.csv"}}, nil},
		{"file relative, unknown format, credential", api.Source{Name: "exp", Site: "dc1", Type: "file", Credential: "c", Params: map[string]string{"path": "hosts.dat"}},
			[]string{"takes none", "absolute path", "param format"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDefinition(tc.def)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid definition refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestSQLStatementPerDialect(t *testing.T) {
	src := func(driver, key, order string) *sqlSource {
		s, _ := newSQL(api.Source{Type: "sql", Params: map[string]string{"driver": driver, "query": "SELECT * FROM t", "key": key, "order": order, "page_size": "100"}}, nil)
		return s
	}
	for _, tc := range []struct {
		name, cursor string
		s            *sqlSource
		want         string
		args         []any
	}{
		{"postgres first page", "", src("postgres", `"ResourceID"`, ""), `SELECT * FROM (SELECT * FROM t) src ORDER BY src."ResourceID" LIMIT 100`, nil},
		{"postgres number key", "k:16777300", src("", `"ResourceID"`, ""), `SELECT * FROM (SELECT * FROM t) src WHERE src."ResourceID" > 16777300 ORDER BY src."ResourceID" LIMIT 100`, nil},
		{"postgres text key", `k:"ws-7"`, src("pgx", "name", ""), `SELECT * FROM (SELECT * FROM t) src WHERE src.name > $1 ORDER BY src.name LIMIT 100`, []any{"ws-7"}},
		{"mysql text key", `k:"ws-7"`, src("mariadb", "name", ""), `SELECT * FROM (SELECT * FROM t) src WHERE src.name > ? ORDER BY src.name LIMIT 100`, []any{"ws-7"}},
		{"sqlserver offset", "o:300", src("mssql", "", "ResourceID, Name0 DESC"), `SELECT * FROM (SELECT * FROM t) src ORDER BY src.ResourceID, src.Name0 DESC OFFSET 300 ROWS FETCH NEXT 100 ROWS ONLY`, nil},
		{"sqlserver text key", `k:"a"`, src("sqlserver", "[Name0]", ""), `SELECT * FROM (SELECT * FROM t) src WHERE src.[Name0] > @p1 ORDER BY src.[Name0] OFFSET 0 ROWS FETCH NEXT 100 ROWS ONLY`, []any{"a"}},
		{"postgres offset", "o:200", src("postgres", "", "id"), `SELECT * FROM (SELECT * FROM t) src ORDER BY src.id LIMIT 100 OFFSET 200`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args, err := tc.s.statement(tc.cursor)
			if err != nil || q != tc.want || len(args) != len(tc.args) || len(args) > 0 && args[0] != tc.args[0] {
				t.Fatalf("got %q %v %v\nwant %q %v", q, args, err, tc.want, tc.args)
			}
		})
	}
	for _, bad := range []string{"o:5", "k:[1]", "k:1; DROP TABLE t", "x"} {
		if _, _, err := src("postgres", "id", "").statement(bad); err == nil {
			t.Errorf("cursor %q accepted", bad)
		}
	}
}

func TestLinkNext(t *testing.T) {
	for h, want := range map[string]string{
		`</p?page=2>; rel="next", </p?page=9>; rel="last"`:   "/p?page=2",
		`<https://x/a?c=1>; rel="prev first", <b>; rel=next`: "b",
		`<https://x/a>; rel="prev"`:                          "",
	} {
		if got := linkNext(map[string][]string{"Link": {h}}); got != want {
			t.Errorf("%s: got %q, want %q", h, got, want)
		}
	}
}

func TestLDAPOUsAndCursor(t *testing.T) {
	ous, err := ldapOUs(map[string]string{"ou.2.base": "ou=B", "ou.10.base": "ou=C", "ou.1.base": "ou=A", "ou.1.attributes": "cn, mail"})
	if err != nil || len(ous) != 3 || ous[0].base != "ou=A" || ous[1].base != "ou=B" || ous[2].base != "ou=C" || len(ous[0].attrs) != 2 {
		t.Fatalf("OUs in number order: %+v %v", ous, err)
	}
	if _, err := ldapOUs(map[string]string{"base": "ou=A", "ou.1.base": "ou=B"}); err == nil {
		t.Error("inline and numbered OUs together accepted")
	}
	for c, want := range map[string][2]int{"": {0, 0}, "ou=2;n=350": {2, 350}} {
		i, n, err := parseLDAPCursor(c)
		if err != nil || i != want[0] || n != want[1] {
			t.Errorf("cursor %q: %d %d %v", c, i, n, err)
		}
	}
	if _, _, err := parseLDAPCursor("page=3"); err == nil {
		t.Error("a foreign cursor accepted")
	}
}

func TestLDAPExplode(t *testing.T) {
	s := &ldapSource{explode: "memberof"}
	e := ldapEntry("uid=a,ou=People", map[string][]string{"cn": {"A"}, "memberOf": {"cn=g1", "cn=g2"}})
	rows := s.rows(e)
	if len(rows) != 2 || rows[0].Cols["memberOf"] != "cn=g1" || rows[1].Cols["memberOf"] != "cn=g2" || rows[1].Cols["cn"] != "A" ||
		rows[1].Pos.Record != "uid=a,ou=People#memberOf=cn=g2" {
		t.Fatalf("exploded: %+v", rows)
	}
	if rows := s.rows(ldapEntry("uid=b", map[string][]string{"cn": {"B"}})); len(rows) != 1 || rows[0].Cols["dn"] != "uid=b" {
		t.Fatalf("an entry without the attribute is one row: %+v", rows)
	}
}

func TestExecsStartAgainWhenSeqGoesBack(t *testing.T) {
	var e Execs
	r := func(agent string, seq int) envelope.Result {
		return envelope.Result{Probe: "p1", Agent: agent, Seq: seq}
	}
	keys := []string{e.Key(r("br1", 0)), e.Key(r("br1", 1)), e.Key(r("br2", 0)), e.Key(r("br1", 0)), e.Key(r("br1", 1))}
	if keys[0] != keys[1] || keys[2] == keys[0] || keys[3] == keys[0] || keys[3] != keys[4] {
		t.Fatalf("executions: %v", keys)
	}
}

func TestPointer(t *testing.T) {
	doc := map[string]any{"data": map[string]any{"items": []any{map[string]any{"a/b": 1}}}}
	if v, ok := pointer(doc, "/data/items/0/a~1b"); !ok || v != 1 {
		t.Fatalf("pointer: %v %v", v, ok)
	}
	if _, ok := pointer(doc, "/data/nope"); ok {
		t.Fatal("a missing member found")
	}
}

func ldapEntry(dn string, attrs map[string][]string) ldapsearch.Entry {
	return ldapsearch.Entry{DN: dn, Attributes: attrs}
}
