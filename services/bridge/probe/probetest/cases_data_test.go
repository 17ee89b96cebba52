package probetest_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
	"github.com/outpost-dev/outpost/services/bridge/probe/sqlquery"
)

// --- sql_query ---

type sqlResult struct {
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
	Columns           []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"columns"`
	Rows           int    `json:"rows"`
	RowsAffected   *int64 `json:"rows_affected"`
	Pages          int    `json:"pages"`
	Truncated      bool   `json:"truncated"`
	TruncatedCells int    `json:"truncated_cells"`
	Data           [][]any
}

func sqlRows(t *testing.T, o probetest.Outcome) [][]any {
	var out [][]any
	for _, c := range o.Chunks {
		out = append(out, probetest.Decode[struct {
			Rows [][]any `json:"rows"`
		}](t, c).Rows...)
	}
	return out
}

// pgCred is a credential for the test databases, which speak no TLS: it says so itself
// (fields.tls disable) and an admin allowed it (AllowInsecure) — without both it is refused.
func pgCred(name, user, pw string) probe.Credential {
	return probe.Credential{Name: name, Type: "sql", Username: user, Secret: pw, AllowInsecure: true, Fields: map[string]string{"database": "postgres", "tls": "disable"}}
}

// strictCred is a credential as stored by default: verified TLS only.
func strictCred(name, user, pw string) probe.Credential {
	return probe.Credential{Name: name, Type: "sql", Username: user, Secret: pw, Fields: map[string]string{"database": "postgres"}}
}

func sqlCases(t *testing.T) []probetest.Case {
	var lxpg, lxmy string
	for _, h := range env.m.Hosts {
		if h.Class == "linux_server" && slices.Contains(h.OpenTCP, 5432) && lxpg == "" {
			lxpg = h.IP
		}
		if h.Class == "linux_server" && slices.Contains(h.OpenTCP, 3306) && lxmy == "" {
			lxmy = h.IP
		}
	}
	labCases := []probetest.Case{
		// the lab's databases greet, ask for a password and refuse it, like real servers
		{Name: probetest.BadCreds + "/lab-postgres", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1", "tls": "prefer"}, pgCred("pg", "discovery", "pg-secret-1")), WantCode: probe.CodeAuth},
		{Name: probetest.BadCreds + "/lab-mysql", Req: req(lxmy, map[string]any{"driver": "mysql", "query": "SELECT 1", "tls": "disable"}, pgCred("my", "discovery", "my-secret-1")), WantCode: probe.CodeAuth},
		{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"driver": "postgres", "query": "SELECT 1", "timeout": "500ms"}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeTimeout},
		{Name: probetest.Stalled + "/mysql", Req: req(stall(t), map[string]any{"driver": "mysql", "query": "SELECT 1", "timeout": "500ms"}, pgCred("my", "u", "my-secret-1")), WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"driver": "postgres", "query": "SELECT 1"}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeProtocol},
		{Name: probetest.WrongProtocol + "/mysql", Req: req(wrong(t), map[string]any{"driver": "mysql", "query": "SELECT 1", "timeout": "3s"}, pgCred("my", "u", "my-secret-1")), WantCode: probe.CodeProtocol},
		{Name: probetest.WrongProtocol + "/sqlserver", Req: req(wrong(t)+":3306", map[string]any{"driver": "sqlserver", "query": "SELECT 1", "timeout": "3s"}, pgCred("ms", "sa", "ms-secret-1")), WantCode: probe.CodeProtocol + "|" + probe.CodeTimeout},
		{Name: "bad_params/write-statement", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "DELETE FROM inventory"}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeBadParams},
		{Name: "bad_params/two-statements", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1; DROP TABLE inventory"}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeBadParams},
		{Name: "bad_params/driver", Req: req(lxpg, map[string]any{"driver": "oracle", "query": "SELECT 1"}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeBadParams},
		{Name: "write_not_allowed", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "INSERT INTO notes(body) VALUES ('x')", "write": true}, pgCred("pg", "u", "pg-secret-1")), WantCode: probe.CodeDenied},
		deny(t, lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1"}, pgCred("pg", "u", "pg-secret-1")),
		// the default is verified TLS with no fallback: a server without TLS gets no password
		{Name: probetest.Success + "/verify-by-default-no-fallback", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1"}, strictCred("pg", "u", "pg-secret-1")),
			WantCode: probe.CodeProtocol, Check: wantErr("refused TLS")},
		{Name: "refused/plaintext", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1", "tls": "disable"}, strictCred("pg", "u", "pg-secret-1")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("plaintext database connection")},
		{Name: "refused/prefer-may-fall-back", Req: req(lxmy, map[string]any{"driver": "mysql", "query": "SELECT 1", "tls": "prefer"}, strictCred("my", "u", "my-secret-1")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("fall back to plaintext")},
		{Name: "refused/unverified", Req: req(lxpg, map[string]any{"driver": "sqlserver", "query": "SELECT 1", "tls": "require"}, strictCred("ms", "sa", "ms-secret-1")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("without certificate verification")},
		{Name: "refused/credential-field-insecure-without-allow", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1"},
			probe.Credential{Name: "pg-field", Type: "sql", Username: "u", Secret: "pg-secret-1", Fields: map[string]string{"tls": "none"}}), WantCode: probe.CodeDenied, NoDial: true},
		{Name: "refused/one-insecure-credential-among-others", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1", "tls": "disable"}, pgCred("pg", "u", "pg-secret-1"), strictCred("pg2", "u", "pg-secret-2")),
			WantCode: probe.CodeDenied, NoDial: true},
		{Name: "refused/snmp-credential", Req: req(lxpg, map[string]any{"driver": "postgres", "query": "SELECT 1"}, community("ro", "public-Secret-1")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("sql_query takes only credentials of type sql")},
	}
	if env.pg == nil {
		return append(labCases,
			probetest.Case{Name: probetest.Success, NA: "PostgreSQL skipped (" + probetest.EnvSkipPG + "=1)"},
			probetest.Case{Name: probetest.BadCreds, NA: "PostgreSQL skipped"},
			probetest.Case{Name: probetest.Cancel, NA: "PostgreSQL skipped"},
			probetest.Case{Name: probetest.Oversize, NA: "PostgreSQL skipped"})
	}
	pg := fmt.Sprintf("127.0.0.1:%d", env.pg.Port)
	reader := pgCred("pg-reader", "reader", "reader-pw-5521")
	wrongPw := pgCred("pg-wrong", "reader", "wrong-pw-7781")
	admin := pgCred("pg-admin", env.pg.User, env.pg.Password)
	secrets := []string{env.pg.Password, "reader-pw-5521", "wrong-pw-7781"}
	inventory := map[string]any{"driver": "postgres", "query": "SELECT id, name, serial, ram_gb, seen, tags, data FROM inventory WHERE id <= $1 ORDER BY id", "args": []any{100}, "page_size": 10}
	return append(labCases,
		probetest.Case{Name: probetest.Success, Secrets: secrets, Req: req(pg, inventory, wrongPw, reader), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[sqlResult](t, o.Data)
			eq(t, "credential", r.Credential, "pg-reader")
			eq(t, "failed", fmt.Sprint(r.FailedCredentials), "[pg-wrong]")
			eq(t, "rows", r.Rows, pgInventoryRows)
			eq(t, "pages", r.Pages, 3)
			eq(t, "columns", fmt.Sprint(r.Columns), "[{id int4} {name text} {serial text} {ram_gb int4} {seen timestamptz} {tags _text} {data bytea}]")
			rows := sqlRows(t, o)
			if len(rows) != pgInventoryRows {
				t.Fatalf("%d rows streamed", len(rows))
			}
			for i, row := range rows {
				n := i + 1
				eq(t, "id", row[0], any(float64(n)))
				eq(t, "name", row[1], any(fmt.Sprintf("host-%d", n)))
				eq(t, "serial", row[2], any(fmt.Sprintf("SN%05d", n)))
				eq(t, "ram_gb", row[3], any(float64(4*n)))
				seen, err := time.Parse(time.RFC3339Nano, row[4].(string))
				if err != nil || !seen.Equal(time.Date(2026, 1, 1, n, 0, 0, 0, time.UTC)) {
					t.Errorf("seen %v (%v)", row[4], err)
				}
				eq(t, "tags", fmt.Sprint(row[5]), "[a b]")
				eq(t, "data", fmt.Sprint(row[6]), "map[base64:AP8=]")
			}
		}},
		probetest.Case{Name: probetest.Success + "/no-stream", NoEmit: true, Secrets: secrets, Req: req(pg, map[string]any{"driver": "postgres", "query": "SELECT count(*) AS n FROM inventory", "tls": "prefer"}, reader),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "count", fmt.Sprint(probetest.Decode[sqlResult](t, o.Data).Data), fmt.Sprintf("[[%d]]", pgInventoryRows))
			}},
		probetest.Case{Name: probetest.Success + "/read-only-transaction", Secrets: secrets, Req: req(pg, map[string]any{"driver": "postgres", "query": "SELECT nextval('ticket')"}, reader), WantCode: probe.CodeDenied},
		probetest.Case{Name: probetest.Success + "/write-allowed", Secrets: secrets, Config: func(c any) any { cfg := c.(sqlquery.Config); cfg.AllowWrite = true; return cfg },
			Req: req(pg, map[string]any{"driver": "postgres", "query": "INSERT INTO notes(body) VALUES ($1), ($2)", "args": []string{"a", "b"}, "write": true}, reader),
			Check: func(t *testing.T, o probetest.Outcome) {
				if r := probetest.Decode[sqlResult](t, o.Data); r.RowsAffected == nil || *r.RowsAffected != 2 {
					t.Errorf("rows affected %v, want 2", r.RowsAffected)
				}
			}},
		probetest.Case{Name: probetest.BadCreds, Secrets: secrets, Req: req(pg, inventory, wrongPw), WantCode: probe.CodeAuth},
		probetest.Case{Name: probetest.Cancel, Secrets: secrets, Req: req(pg, map[string]any{"driver": "postgres", "query": "SELECT pg_sleep(30)"}, admin), CancelAfter: 300 * time.Millisecond, WantCode: probe.CodeCanceled},
		probetest.Case{Name: probetest.Cancel + "/deadline", Secrets: secrets, Req: req(pg, map[string]any{"driver": "postgres", "query": "SELECT pg_sleep(30)", "timeout": "300ms"}, admin), WantCode: probe.CodeTimeout},
		probetest.Case{Name: probetest.Oversize, Secrets: secrets, MaxOutput: 256 << 10,
			Req: req(pg, map[string]any{"driver": "postgres", "query": "SELECT g, repeat('x', 100000) AS big FROM generate_series(1, 1000) g", "max_rows": 12}, admin),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := probetest.Decode[sqlResult](t, o.Data)
				if !r.Truncated || r.Rows != 12 || r.TruncatedCells != 12 || len(sqlRows(t, o)) != 12 {
					t.Errorf("truncated %v rows %d cut cells %d: want 12 rows, every big cell cut", r.Truncated, r.Rows, r.TruncatedCells)
				}
				if r.Pages < 4 {
					t.Errorf("%d pages: 12 rows of 64 KiB must be split to fit 256 KiB chunks", r.Pages)
				}
			}},
	)
}

// --- http_request ---

// reqResult is what the hub reads (the contract in libs).
type reqResult = httprequest.Result

// wantErr checks the refusal says why.
func wantErr(part string) func(t *testing.T, o probetest.Outcome) {
	return func(t *testing.T, o probetest.Outcome) {
		if o.Err == nil || !strings.Contains(o.Err.Error(), part) {
			t.Errorf("error %v: want it to say %q", o.Err, part)
		}
	}
}

func httpCred(name, user, pw string) probe.Credential {
	return probe.Credential{Name: name, Type: "http", Username: user, Secret: pw}
}

func httpRequestCases(t *testing.T) []probetest.Case {
	local := netip.MustParseAddrPort(strings.TrimPrefix(env.web.URL, "http://")).String()
	h, _ := httpsHost(t)
	var title string
	for _, w := range h.Web {
		if w.Port == 443 {
			title = w.Title
		}
	}
	good := httpCred("api", webUser, webPassword)
	bad := httpCred("api-old", webUser, "old-Secret-1")
	secrets := []string{webPassword, "old-Secret-1"}
	tlsLocal := netip.MustParseAddrPort(strings.TrimPrefix(env.webTLS.URL, "https://")).String()
	verified := func(params map[string]any) map[string]any {
		return merge(params, map[string]any{"scheme": "https", "tls": map[string]any{"ca_pem": env.webCA}})
	}
	insecure := good
	insecure.Name, insecure.AllowInsecure = "api-insecure", true
	bearer := probe.Credential{Name: "api-token", Type: "http", Secret: "tok-Bearer-4411", Fields: map[string]string{"scheme": "bearer"}}
	header := probe.Credential{Name: "api-key", Type: "http", Secret: "key-Header-5522", Fields: map[string]string{"scheme": "header", "header_name": "X-Api-Key"}}
	ssh := sshCred("prod-ssh", "root", "Sup3r-Secret-SSH-pw")
	return []probetest.Case{
		{Name: probetest.Success, Req: req(h.IP, map[string]any{"port": 443, "scheme": "https", "tls": map[string]any{"insecure_skip_verify": true}}),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := probetest.Decode[reqResult](t, o.Data)
				eq(t, "status", r.Status, 200)
				if !strings.Contains(r.Body.Text, "<title>"+title+"</title>") {
					t.Errorf("body %q lacks the manifest's title %q", r.Body.Text, title)
				}
				if r.TLS == nil || r.TLS.Verified {
					t.Errorf("tls %+v: want reported, not verified", r.TLS)
				}
			}},
		{Name: probetest.Success + "/verify-by-default", Req: req(h.IP, map[string]any{"port": 443, "scheme": "https"}), WantCode: probe.CodeProtocol},
		{Name: probetest.Success + "/post", Req: req(local, map[string]any{"method": "POST", "path": "/echo", "headers": map[string]string{"X-Test": "yes"}, "body": `{"a":1}`}),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "echo", probetest.Decode[reqResult](t, o.Data).Body.Text, `{"method":"POST","header":"yes","body":"{\"a\":1}"}`)
			}},
		{Name: probetest.Success + "/credentials", Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/private"}), bad, good), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[reqResult](t, o.Data)
			eq(t, "status", r.Status, 200)
			eq(t, "credential", r.Credential, "api")
			eq(t, "failed", fmt.Sprint(r.FailedCredentials), "[api-old]")
			if r.TLS == nil || !r.TLS.Verified {
				t.Errorf("tls %+v: a credential went over TLS that was not verified", r.TLS)
			}
		}},
		// a server that echoes what it was sent gets no secret back into the result, in any form
		{Name: probetest.Success + "/echoed-basic-auth-redacted", Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/echo-auth"}), good), Check: func(t *testing.T, o probetest.Outcome) {
			if body := probetest.Decode[reqResult](t, o.Data).Body.Text; !strings.Contains(body, `"authorization":"Basic ***"`) {
				t.Errorf("echoed body %q: want the Authorization header redacted", body)
			}
		}},
		{Name: probetest.Success + "/echoed-bearer-and-header-redacted", Req: req(tlsLocal, verified(map[string]any{"path": "/echo-auth"}), bearer), Check: func(t *testing.T, o probetest.Outcome) {
			eq(t, "echo", probetest.Decode[reqResult](t, o.Data).Body.Text, `{"authorization":"Bearer ***","x-api-key":""}`)
		}},
		{Name: probetest.Success + "/header-credential", Req: req(tlsLocal, verified(map[string]any{"path": "/echo-auth"}), header), Check: func(t *testing.T, o probetest.Outcome) {
			eq(t, "echo", probetest.Decode[reqResult](t, o.Data).Body.Text, `{"authorization":"","x-api-key":"***"}`)
		}},
		{Name: probetest.Success + "/plaintext-allowed-by-the-credential", Secrets: secrets, Req: req(local, map[string]any{"path": "/private"}, insecure),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "status", probetest.Decode[reqResult](t, o.Data).Status, 200)
			}},
		// refusals: nothing is sent, not even a connection
		{Name: "refused/ssh-credential", Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/echo-auth"}), ssh), WantCode: probe.CodeDenied, NoDial: true,
			Check: wantErr("prod-ssh is of type ssh; http_request takes only credentials of type http")},
		{Name: "refused/ssh-credential-behind-a-good-one", Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/echo-auth"}), good, ssh), WantCode: probe.CodeDenied, NoDial: true},
		{Name: "refused/plaintext", Secrets: secrets, Req: req(local, map[string]any{"path": "/private"}, good), WantCode: probe.CodeDenied, NoDial: true,
			Check: wantErr("plaintext http")},
		{Name: "refused/plaintext-url", Secrets: secrets, Req: req("", map[string]any{"url": env.web.URL + "/private"}, good), WantCode: probe.CodeDenied, NoDial: true},
		{Name: "refused/unverified-tls", Secrets: secrets, Req: req(tlsLocal, map[string]any{"path": "/private", "scheme": "https", "tls": map[string]any{"insecure_skip_verify": true}}, good),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("without certificate verification")},
		{Name: "refused/redirect-to-plaintext", Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/to-plaintext", "follow_redirects": 2}), good), WantCode: probe.CodeDenied},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(tlsLocal, verified(map[string]any{"path": "/private"}), bad), WantCode: probe.CodeAuth},
		{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"port": 80, "timeout": "500ms"}), WantCode: probe.CodeTimeout},
		{Name: probetest.Stalled + "/slow-server", Req: req(local, map[string]any{"path": "/slow", "timeout": "500ms"}), WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"port": 80}), WantCode: probe.CodeProtocol},
		{Name: probetest.Cancel, Req: req(local, map[string]any{"path": "/slow"}), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Req: req(local, map[string]any{"path": "/big", "max_body": 1000}), Check: func(t *testing.T, o probetest.Outcome) {
			b := probetest.Decode[reqResult](t, o.Data).Body
			if !b.Truncated || len(b.Text) != 1000 || b.Size != bigBody || b.SizeAtLeast {
				t.Errorf("big body: truncated %v, %d kept, size %d (at least %v); want 1000 of exactly %d", b.Truncated, len(b.Text), b.Size, b.SizeAtLeast, bigBody)
			}
		}},
		{Name: probetest.Oversize + "/stream", Req: req(stream(t), map[string]any{"port": 80, "timeout": "3s"}), WantCode: probe.CodeProtocol},
		{Name: "bad_params", Req: req(local, map[string]any{"method": "BREW"}), WantCode: probe.CodeBadParams},
		{Name: probetest.Denied + "/url", Req: req(h.IP, map[string]any{"url": "http://127.77.170.1/"}), WantCode: probe.CodeDenied},
		deny(t, h.IP, map[string]any{"port": 80}),
	}
}

// --- file_read ---

type fileResult struct {
	Size      int64  `json:"size"`
	Read      int64  `json:"read"`
	Truncated bool   `json:"truncated"`
	SHA256    string `json:"sha256"`
	Chunks    int    `json:"chunks"`
}

func fileContent(t *testing.T, o probetest.Outcome) []byte {
	var out []byte
	for _, c := range o.Chunks {
		ch := probetest.Decode[struct {
			Encoding string `json:"encoding"`
			Data     string `json:"data"`
		}](t, c)
		if ch.Encoding == "base64" {
			b, err := base64.StdEncoding.DecodeString(ch.Data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		} else {
			out = append(out, ch.Data...)
		}
	}
	return out
}

func fileReadCases(t *testing.T) []probetest.Case {
	dir := t.TempDir()
	outside := t.TempDir()
	text := []byte(strings.Repeat("héllo wörld — ünïcode line\n", 40000)) // ~1.1 MB, runes across chunk edges
	bin := make([]byte, 300<<10)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	write := func(dir, name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	textPath, binPath := write(dir, "inventory.csv", text), write(dir, "blob.bin", bin)
	secretPath := write(outside, "shadow", []byte("secret"))
	os.Symlink(secretPath, filepath.Join(dir, "escape"))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "sparse")
	if f, err := os.Create(big); err == nil {
		f.Truncate(1 << 30)
		f.Close()
	}
	allow := func(c any) any { return withDirs(c, dir) }
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	return []probetest.Case{
		{Name: probetest.Success, Config: allow, Req: req("local", map[string]any{"path": textPath}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[fileResult](t, o.Data)
			got := fileContent(t, o)
			if string(got) != string(text) {
				t.Errorf("content differs: %d bytes read, %d in the file", len(got), len(text))
			}
			eq(t, "sha256", r.SHA256, sum(text))
			eq(t, "size", r.Size, int64(len(text)))
			eq(t, "truncated", r.Truncated, false)
			if r.Chunks < 5 {
				t.Errorf("%d chunks: want the file streamed", r.Chunks)
			}
		}},
		{Name: probetest.BadCreds, NA: "file_read uses the bridge's own access, no credentials"},
		{Name: probetest.Stalled, Config: allow, Req: req("local", map[string]any{"path": fifo}), Timeout: 3 * time.Second, WantCode: probe.CodeUnsupported},
		{Name: probetest.WrongProtocol, Config: allow, Req: req("local", map[string]any{"path": binPath}), Check: func(t *testing.T, o probetest.Outcome) {
			if got := fileContent(t, o); string(got) != string(bin) {
				t.Errorf("binary content differs (%d bytes)", len(got))
			}
		}},
		{Name: probetest.Cancel, Config: allow, Req: req("local", map[string]any{"path": big, "max_bytes": 256 << 20}), EmitDelay: 100 * time.Millisecond, CancelAfter: 300 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Config: allow, Req: req("local", map[string]any{"path": binPath, "offset": 100, "max_bytes": 1000}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[fileResult](t, o.Data)
			if !r.Truncated || r.Read != 1000 || r.Size != int64(len(bin)) || string(fileContent(t, o)) != string(bin[100:1100]) {
				t.Errorf("truncated %v read %d size %d: want 1000 bytes from offset 100 of %d", r.Truncated, r.Read, r.Size, len(bin))
			}
		}},
		{Name: probetest.Denied, Config: allow, Req: req("local", map[string]any{"path": secretPath}), WantCode: probe.CodeDenied},
		{Name: probetest.Denied + "/symlink", Config: allow, Req: req("local", map[string]any{"path": filepath.Join(dir, "escape")}), WantCode: probe.CodeDenied},
		{Name: probetest.Denied + "/dotdot", Config: allow, Req: req("local", map[string]any{"path": dir + "/../" + filepath.Base(outside) + "/shadow"}), WantCode: probe.CodeDenied},
		{Name: probetest.Denied + "/default-config", Req: req("local", map[string]any{"path": textPath}), WantCode: probe.CodeDenied},
		{Name: probetest.Denied + "/remote-host", Config: allow, Req: req("127.77.160.5", map[string]any{"path": textPath}), WantCode: probe.CodeUnsupported},
	}
}
