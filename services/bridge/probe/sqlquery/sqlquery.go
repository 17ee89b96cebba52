// Package sqlquery is the sql_query probe kind: one statement against PostgreSQL (pgx),
// MySQL/MariaDB or SQL Server (go-mssqldb), with the first credential that logs in
// (type sql: Username, Secret, fields.database). Rows are streamed through Emit in pages
// of page_size (default 200); the final data is a summary.
//
// Read-only by default, three ways: the statement is checked (one statement, starting
// like a query, no word that writes — see CheckReadOnly), it runs in a read-only
// transaction (PostgreSQL, MySQL; SQL Server has none, so there the check matters
// most), and the transaction is rolled back. A probe marked write runs its statement in a
// committed transaction — only when the bridge's config allows writes (AllowWrite).
//
// Transport: verified TLS by default (PostgreSQL sslmode=verify-full, MySQL and SQL Server
// with certificate and name checked), never a silent fallback to plaintext. The mode is
// params.tls, or else the credential's fields.tls; anything below verify (require:
// encrypted but unverified; prefer; disable) is refused before connecting unless the
// credential allows it (allow_insecure, set by an admin).
package sqlquery

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/sqlquery"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/sqlquery): what a probe asks and what it answers.
type (
	Params = contract.Params
	Column = contract.Column
	Page   = contract.Page
	Result = contract.Result
)

// Config of sql_query.
type Config struct {
	// AllowWrite lets probes marked write change data. Off by default.
	AllowWrite     bool          `yaml:"allow_write"`
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	MaxTimeout     time.Duration `yaml:"max_timeout"`
	MaxRows        int           `yaml:"max_rows"` // hard cap of max_rows
	MaxCell        int           `yaml:"max_cell"` // bytes of one value kept
}

var defaultPorts = map[string]int{"postgres": 5432, "mysql": 3306, "sqlserver": 1433}

type factory struct{}

// NewFactory returns the sql_query kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{AllowWrite: false, DefaultTimeout: time.Minute, MaxTimeout: time.Hour, MaxRows: 1_000_000, MaxCell: 64 << 10}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "sql_query: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

// job is a validated query.
type job struct {
	driver   string
	ep       target.Endpoint
	database string
	query    string
	args     []any
	write    bool
	pageSize int
	maxRows  int
	tls      string
	sni      string
	roots    *x509.CertPool
	now      func() time.Time
	timeout  time.Duration
}

// tlsModes are the accepted modes, with the names a credential may use for them.
var tlsModes = map[string]string{"disable": "disable", "none": "disable", "prefer": "prefer", "require": "require", "insecure": "require", "verify": "verify", "verify-full": "verify"}

// tlsMode is the mode a credential is used with: the probe's, else the credential's own.
func tlsMode(p Params, c probe.Credential) (string, error) {
	m := strings.ToLower(p.TLS)
	field := "tls"
	if m == "" {
		m, field = strings.ToLower(c.Fields["tls"]), "credential "+c.Name+" fields.tls"
	}
	if m == "" {
		return "verify", nil
	}
	mode, ok := tlsModes[m]
	if !ok {
		return "", probe.Errorf(probe.CodeBadParams, "%s: %s: want verify, require, prefer or disable", field, param.Quote(m))
	}
	return mode, nil
}

// sink receives rows; it pages them and keeps pages within a chunk.
type sink struct {
	ctx      context.Context
	emit     probe.Emit
	res      *Result
	page     Page
	bytes    int
	size     int
	limit    int
	maxRows  int
	maxCell  int
	stored   int
	overflow bool
}

func (s *sink) columns(cols []Column) {
	s.res.Columns = cols
	s.page = Page{Columns: cols, Rows: [][]any{}}
}

// row adds one row; false means max_rows was reached (the row was not added).
func (s *sink) row(vals []any) (bool, error) {
	if s.res.Rows >= s.maxRows {
		s.res.Truncated = true
		return false, nil
	}
	n := 8
	for i, v := range vals {
		jv, cut, size := jsonValue(v, s.maxCell)
		vals[i] = jv
		n += size
		if cut {
			s.page.TruncatedCells++
			s.res.TruncatedCells++
		}
	}
	if len(s.page.Rows) > 0 && (len(s.page.Rows) >= s.size || s.bytes+n > s.limit*3/4) {
		if err := s.flush(); err != nil {
			return false, err
		}
	}
	s.page.Rows = append(s.page.Rows, vals)
	s.bytes += n
	s.res.Rows++
	return true, nil
}

func (s *sink) flush() error {
	if len(s.page.Rows) == 0 {
		return nil
	}
	if s.emit == nil {
		if s.stored+s.bytes > s.limit*3/4 {
			s.res.Truncated = true
			s.overflow = true
		} else {
			s.res.Data = append(s.res.Data, s.page.Rows...)
			s.stored += s.bytes
		}
	} else if err := s.emit(s.ctx, s.page); err != nil {
		return err
	}
	s.res.Pages++
	s.page = Page{Offset: s.res.Rows, Columns: s.res.Columns, Rows: [][]any{}}
	s.bytes = 0
	return nil
}

func (r *runner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	if err := probe.CheckCredentials("sql_query", req.Credentials); err != nil {
		return nil, err
	}
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	j := job{driver: strings.ToLower(p.Driver), query: p.Query, args: p.Args, write: p.Write, database: p.Database}
	switch j.driver {
	case "postgres", "postgresql", "pgx":
		j.driver = "postgres"
	case "mysql", "mariadb":
		j.driver = "mysql"
	case "sqlserver", "mssql":
		j.driver = "sqlserver"
	default:
		return nil, param.Bad("driver", "%s: want postgres, mysql or sqlserver", param.Quote(p.Driver))
	}
	if strings.TrimSpace(p.Query) == "" {
		return nil, param.Bad("query", "empty")
	}
	if len(p.Query) > 1<<20 {
		return nil, param.Bad("query", "%d bytes is beyond the 1 MiB limit", len(p.Query))
	}
	if p.Write && !r.cfg.AllowWrite {
		return nil, probe.Errorf(probe.CodeDenied, "params.write: this bridge does not allow writes (its sql_query config has AllowWrite off)")
	}
	if !p.Write {
		if err := CheckReadOnly(p.Query, j.driver); err != nil {
			return nil, param.Bad("query", "%v", err)
		}
	}
	var err error
	if j.pageSize, err = param.Int("page_size", p.PageSize, 200, 10_000); err != nil {
		return nil, err
	}
	if j.maxRows, err = param.Int("max_rows", p.MaxRows, min(10_000, r.cfg.MaxRows), r.cfg.MaxRows); err != nil {
		return nil, err
	}
	if j.timeout, err = param.Duration("timeout", p.Timeout, r.cfg.DefaultTimeout, r.cfg.MaxTimeout); err != nil {
		return nil, err
	}
	j.sni, j.now = p.ServerName, r.set.Now
	if p.TLS != "" {
		if _, ok := tlsModes[strings.ToLower(p.TLS)]; !ok {
			return nil, param.Bad("tls", "%s: want verify, require, prefer or disable", param.Quote(p.TLS))
		}
	}
	if p.CAPEM != "" && j.driver == "sqlserver" {
		return nil, param.Bad("ca_pem", "not supported for sqlserver: its certificate is verified against the system's roots")
	}
	if p.CAPEM != "" {
		j.roots = x509.NewCertPool()
		if !j.roots.AppendCertsFromPEM([]byte(p.CAPEM)) {
			return nil, param.Bad("ca_pem", "no PEM certificate in it")
		}
	}
	port, err := param.Port("port", p.Port, defaultPorts[j.driver])
	if err != nil {
		return nil, err
	}
	if j.ep, err = target.Resolve(ctx, r.set, req.Target, port); err != nil {
		return nil, err
	}
	if j.sni == "" && j.ep.IsName() {
		j.sni = j.ep.Name
	}
	creds := req.Credentials
	if len(creds) == 0 {
		return nil, probe.Errorf(probe.CodeBadParams, "credentials: sql_query needs at least one sql credential")
	}
	// Every credential's transport is checked before the first connection: none is sent
	// over plaintext or unverified TLS it does not allow.
	modes := make([]string, len(creds))
	for i, c := range creds {
		if modes[i], err = tlsMode(p, c); err != nil {
			return nil, err
		}
		if modes[i] != "verify" {
			if err := probe.RequireSecure([]probe.Credential{c}, insecureWhat[modes[i]]); err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	start := r.set.Time()
	res := &Result{Driver: j.driver, IP: j.ep.IP.String(), Port: j.ep.Port, FailedCredentials: []string{}, ReadOnly: !j.write, Columns: []Column{}}
	s := &sink{ctx: ctx, emit: emit, res: res, size: j.pageSize, limit: capture.Limit(r.set.MaxOutput), maxRows: j.maxRows, maxCell: r.cfg.MaxCell}
	secrets := param.Secrets(creds)
	dial := target.Dialer(r.set)
	var sess session
	for i, c := range creds {
		db := j.database
		if db == "" {
			db = c.Fields["database"]
		}
		res.Database = db
		j.tls = modes[i]
		sess, err = open(ctx, j, c, db, dial)
		if err == nil {
			res.Credential = c.Name
			break
		}
		if isAuth(err) {
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			if r.set.Logger != nil {
				r.set.Logger.Debug("sql login refused", "target", j.ep.Addr(), "credential", c)
			}
			continue
		}
		return nil, classify(ctx, j, err, secrets)
	}
	if sess == nil {
		return nil, probe.Errorf(probe.CodeAuth, "%s refused every credential (%s)", j.ep.Addr(), strings.Join(res.FailedCredentials, ", "))
	}
	defer sess.close()
	affected, err := sess.run(ctx, j, s)
	if err != nil {
		return nil, classify(ctx, j, err, secrets)
	}
	if err := s.flush(); err != nil {
		return nil, err
	}
	if j.write {
		res.RowsAffected = &affected
	}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

// session is an open connection of one driver.
type session interface {
	run(ctx context.Context, j job, s *sink) (int64, error)
	close()
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// insecureWhat names what a mode below verify would send a credential over.
var insecureWhat = map[string]string{
	"disable": "a plaintext database connection (tls disable)",
	"prefer":  "a database connection that may fall back to plaintext (tls prefer)",
	"require": "TLS without certificate verification (tls require)",
}

func open(ctx context.Context, j job, c probe.Credential, db string, dial dialFunc) (session, error) {
	switch j.driver {
	case "postgres":
		return openPostgres(ctx, j, c, db, dial)
	case "mysql":
		return openMySQL(ctx, j, c, db, dial)
	default:
		return openSQLServer(ctx, j, c, db, dial)
	}
}

// runSQL runs a query through database/sql (MySQL, SQL Server).
func runSQL(ctx context.Context, conn *sql.Conn, j job, s *sink, readOnly bool, norm func(typ string, v any) any) (int64, error) {
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly && j.driver == "mysql"})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if j.write {
		r, err := tx.ExecContext(ctx, j.query, j.args...)
		if err != nil {
			return 0, err
		}
		n, _ := r.RowsAffected()
		return n, tx.Commit()
	}
	rows, err := tx.QueryContext(ctx, j.query, j.args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return 0, err
	}
	cols := make([]Column, len(types))
	for i, t := range types {
		cols[i] = Column{Name: t.Name(), Type: strings.ToLower(t.DatabaseTypeName())}
	}
	s.columns(cols)
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
		for i := range vals {
			vals[i] = norm(strings.ToUpper(types[i].DatabaseTypeName()), vals[i])
		}
		more, err := s.row(vals)
		if err != nil {
			return 0, err
		}
		if !more {
			break
		}
	}
	return 0, rows.Err()
}

// classify maps a driver error to a probe error without secrets.
func classify(ctx context.Context, j job, err error, secrets []string) error {
	var pe *probe.Error
	if errors.As(err, &pe) {
		return pe
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return probe.Errorf(probe.CodeTimeout, "%s: no answer within %s", j.ep.Addr(), j.timeout)
		}
		return ctx.Err()
	}
	msg := param.Redact(err.Error(), secrets...)
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, errNotMySQL):
		return probe.Errorf(probe.CodeProtocol, "%s: %v", j.ep.Addr(), err)
	case isReadOnlyViolation(err):
		return probe.Errorf(probe.CodeDenied, "%s: the statement tried to write in a read-only transaction: %s", j.ep.Addr(), msg)
	case isAuth(err):
		return probe.Errorf(probe.CodeAuth, "%s: %s", j.ep.Addr(), msg)
	case errors.As(err, &op) && op.Op == "dial":
		return target.DialError(ctx, j.ep.Addr(), err)
	case errors.As(err, &ne) && ne.Timeout():
		return probe.Errorf(probe.CodeTimeout, "%s: no answer in time", j.ep.Addr())
	case isServerError(err):
		return probe.Errorf(probe.CodeBadParams, "params.query: the server refused it: %s", msg)
	}
	return probe.Errorf(probe.CodeProtocol, "%s: %s", j.ep.Addr(), msg)
}

// jsonValue turns a driver value into JSON: numbers, strings, booleans, RFC 3339 times,
// base64 for bytes; strings longer than max are cut. It returns the value, whether it
// was cut, and its approximate JSON size.
func jsonValue(v any, max int) (any, bool, int) {
	switch x := v.(type) {
	case nil:
		return nil, false, 4
	case bool:
		return x, false, 5
	case string:
		if len(x) > max {
			return strings.ToValidUTF8(x[:max], ""), true, max + 2
		}
		return x, false, len(x) + 2
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return x, false, 20
	case float32:
		return finite(float64(x)), false, 24
	case float64:
		return finite(x), false, 24
	case time.Time:
		return x.Format(time.RFC3339Nano), false, 36
	case []byte:
		if len(x) > max {
			return Binary{B64: b64(x[:max])}, true, max*4/3 + 16
		}
		return Binary{B64: b64(x)}, false, len(x)*4/3 + 16
	case json.RawMessage:
		if len(x) > max {
			return strings.ToValidUTF8(string(x[:max]), ""), true, max + 2
		}
		return x, false, len(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		s := fmt.Sprint(v)
		return jsonValue(s, max)
	}
	if len(b) > max {
		return strings.ToValidUTF8(string(b[:max]), ""), true, max + 2
	}
	return json.RawMessage(b), false, len(b)
}

func jsonRaw(b []byte) any {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	return string(b)
}
