package sqlquery

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	mssql "github.com/microsoft/go-mssqldb"

	contract "github.com/outpost-dev/outpost/libs/probes/sqlquery"
	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// The contract of the kind (libs/probes/sqlquery): what a probe asks and what it answers.
type (
	Binary = contract.Binary
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func finite(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

func tlsConfig(j job, verify bool) *tls.Config {
	name := j.sni
	if name == "" {
		name = j.ep.IP.String()
	}
	c := &tls.Config{ServerName: name, InsecureSkipVerify: !verify, MinVersion: tls.VersionTLS12, RootCAs: j.roots}
	if j.now != nil {
		c.Time = j.now
	}
	return c
}

// --- PostgreSQL (pgx) ---

type pgSession struct{ conn *pgx.Conn }

func openPostgres(ctx context.Context, j job, c probe.Credential, db string, dial dialFunc) (session, error) {
	// no password in the connection string: it is set on the config, so no parse error can quote it
	cs := fmt.Sprintf("host=%s port=%d user=%s sslmode=disable application_name=outpost-bridge", j.ep.IP, j.ep.Port, quotePG(c.Username))
	if db != "" {
		cs += " dbname=" + quotePG(db)
	}
	cfg, err := pgx.ParseConfig(cs)
	if err != nil {
		return nil, probe.Errorf(probe.CodeBadParams, "credential %s: %v", c.Name, err)
	}
	cfg.Password = c.Secret
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) }
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	cfg.ConnectTimeout = j.timeout
	cfg.RuntimeParams["application_name"] = "outpost-bridge"
	switch j.tls {
	case "require", "verify":
		cfg.TLSConfig = tlsConfig(j, j.tls == "verify")
	case "prefer":
		cfg.TLSConfig = tlsConfig(j, false)
		cfg.Fallbacks = []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: nil}}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &pgSession{conn}, nil
}

func quotePG(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func (s *pgSession) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.conn.Close(ctx)
}

func (s *pgSession) run(ctx context.Context, j job, sk *sink) (int64, error) {
	mode := pgx.ReadOnly
	if j.write {
		mode = pgx.ReadWrite
	}
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{AccessMode: mode})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	rows, err := tx.Query(ctx, j.query, j.args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	fields := rows.FieldDescriptions()
	cols := make([]Column, len(fields))
	for i, f := range fields {
		cols[i] = Column{Name: f.Name, Type: fmt.Sprint(f.DataTypeOID)}
		if t, ok := s.conn.TypeMap().TypeForOID(f.DataTypeOID); ok {
			cols[i].Type = t.Name
		}
	}
	sk.columns(cols)
	stopped := false
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return 0, err
		}
		for i, v := range vals {
			vals[i] = pgValue(cols[i].Type, v)
		}
		more, err := sk.row(vals)
		if err != nil {
			return 0, err
		}
		if !more {
			stopped = true
			break
		}
	}
	if stopped {
		rows.Close()
		return 0, nil
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := rows.CommandTag().RowsAffected()
	if j.write {
		return n, tx.Commit(ctx)
	}
	return n, nil
}

func pgValue(typ string, v any) any {
	switch x := v.(type) {
	case [16]byte:
		if typ == "uuid" {
			return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
		}
		return x[:]
	case net.IPNet:
		return x.String()
	case netip.Prefix:
		return x.String()
	case netip.Addr:
		return x.String()
	case net.HardwareAddr:
		return x.String()
	}
	return v
}

// --- MySQL / MariaDB ---

type sqlSession struct {
	db   *sql.DB
	conn *sql.Conn
	norm func(typ string, v any) any
}

func (s *sqlSession) close() {
	s.conn.Close()
	s.db.Close()
}

func (s *sqlSession) run(ctx context.Context, j job, sk *sink) (int64, error) {
	return runSQL(ctx, s.conn, j, sk, !j.write, s.norm)
}

func openMySQL(ctx context.Context, j job, c probe.Credential, db string, dial dialFunc) (session, error) {
	var notMySQL atomic.Bool
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = j.ep.Addr()
	cfg.User, cfg.Passwd, cfg.DBName = c.Username, c.Secret, db
	cfg.Timeout = j.timeout // reads and writes are bounded by the probe's context
	cfg.User, cfg.Passwd, cfg.DBName = c.Username, c.Secret, db
	cfg.ParseTime = true
	cfg.AllowNativePasswords = true
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &greetingCheck{Conn: c, bad: &notMySQL}, nil
	}
	switch j.tls {
	case "require", "verify":
		cfg.TLS = tlsConfig(j, j.tls == "verify")
	case "prefer":
		cfg.TLS = tlsConfig(j, false)
		cfg.AllowFallbackToPlaintext = true
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, probe.Errorf(probe.CodeBadParams, "credential %s: %v", c.Name, err)
	}
	sess, err := openDB(ctx, sql.OpenDB(conn), mysqlValue)
	if err != nil && notMySQL.Load() {
		return nil, probe.Errorf(probe.CodeProtocol, "%s: %v", j.ep.Addr(), errNotMySQL)
	}
	return sess, err
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

func openDB(ctx context.Context, db *sql.DB, norm func(string, any) any) (session, error) {
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := conn.PingContext(ctx); err != nil {
		conn.Close()
		db.Close()
		return nil, err
	}
	return &sqlSession{db: db, conn: conn, norm: norm}, nil
}

// mysqlValue decodes MySQL's text protocol, where every value comes as bytes.
func mysqlValue(typ string, v any) any {
	b, ok := v.([]byte)
	if !ok {
		return v
	}
	switch typ {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "INTEGER", "BIGINT", "YEAR":
		if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
			return n
		}
	case "UNSIGNED TINYINT", "UNSIGNED SMALLINT", "UNSIGNED MEDIUMINT", "UNSIGNED INT", "UNSIGNED BIGINT":
		if n, err := strconv.ParseUint(string(b), 10, 64); err == nil {
			return n
		}
	case "FLOAT", "DOUBLE", "REAL":
		if f, err := strconv.ParseFloat(string(b), 64); err == nil {
			return f
		}
	case "BINARY", "VARBINARY", "TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB", "BIT", "GEOMETRY":
		return b
	case "JSON":
		if utf8.Valid(b) {
			return jsonRaw(b)
		}
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return b
}

// greetingCheck refuses a peer whose first bytes cannot be a MySQL packet: the driver
// would otherwise read "220 mail ESMTP" as a 3 MB packet header and wait for it.
type greetingCheck struct {
	net.Conn
	seen []byte
	done bool
	bad  *atomic.Bool
}

func (g *greetingCheck) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if g.done || n == 0 {
		return n, err
	}
	g.seen = append(g.seen, p[:min(n, 5-len(g.seen))]...)
	if len(g.seen) < 5 {
		return n, err
	}
	g.done = true
	size := int(g.seen[0]) | int(g.seen[1])<<8 | int(g.seen[2])<<16
	if g.seen[3] != 0 || size == 0 || size > 16<<10 || (g.seen[4] != 10 && g.seen[4] != 0xff) {
		g.bad.Store(true)
		g.Conn.Close()
		return 0, errNotMySQL
	}
	return n, err
}

var errNotMySQL = errors.New("the server's first bytes are not a MySQL greeting")

// --- SQL Server ---

type dialer struct{ dial dialFunc }

func (d dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dial(ctx, network, addr)
}

func openSQLServer(ctx context.Context, j job, c probe.Credential, db string, dial dialFunc) (session, error) {
	q := url.Values{}
	if db != "" {
		q.Set("database", db)
	}
	q.Set("app name", "outpost-bridge")
	q.Set("dial timeout", strconv.Itoa(max(1, int(j.timeout.Seconds()))))
	switch j.tls {
	case "disable":
		q.Set("encrypt", "disable")
	case "prefer":
		q.Set("encrypt", "false") // the login packet is encrypted, the rest as the server wants
		q.Set("TrustServerCertificate", "true")
	case "require":
		q.Set("encrypt", "true")
		q.Set("TrustServerCertificate", "true")
	case "verify":
		// encrypt=true without TrustServerCertificate: the certificate and name are checked
		// against the system's roots (ca_pem is not passed to this driver)
		q.Set("encrypt", "true")
		q.Set("TrustServerCertificate", "false")
		if j.sni != "" {
			q.Set("hostNameInCertificate", j.sni)
		}
	}
	u := url.URL{Scheme: "sqlserver", User: url.UserPassword(c.Username, c.Secret), Host: j.ep.Addr(), RawQuery: q.Encode()}
	conn, err := mssql.NewConnector(u.String())
	if err != nil {
		return nil, probe.Errorf(probe.CodeBadParams, "credential %s: the SQL Server connection settings do not parse", c.Name)
	}
	conn.Dialer = dialer{dial}
	return openDB(ctx, sql.OpenDB(conn), mssqlValue)
}

func mssqlValue(typ string, v any) any {
	b, ok := v.([]byte)
	if !ok {
		return v
	}
	switch typ {
	case "UNIQUEIDENTIFIER":
		if len(b) == 16 {
			return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
				binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
		}
	case "DECIMAL", "NUMERIC", "MONEY", "SMALLMONEY":
		return string(b)
	}
	return b
}

// --- errors ---

func isAuth(err error) bool {
	var pg *pgconn.PgError
	var my *mysql.MySQLError
	var ms mssql.Error
	switch {
	case errors.As(err, &pg):
		return pg.Code == "28P01" || pg.Code == "28000"
	case errors.As(err, &my):
		return my.Number == 1045 || my.Number == 1698 || my.Number == 1044
	case errors.As(err, &ms):
		return ms.Number == 18456
	}
	return false
}

func isReadOnlyViolation(err error) bool {
	var pg *pgconn.PgError
	var my *mysql.MySQLError
	switch {
	case errors.As(err, &pg):
		return pg.Code == "25006"
	case errors.As(err, &my):
		return my.Number == 1792
	}
	return false
}

// isServerError: the server ran the statement and refused it (syntax, missing table).
func isServerError(err error) bool {
	var pg *pgconn.PgError
	var my *mysql.MySQLError
	var ms mssql.Error
	return errors.As(err, &pg) || errors.As(err, &my) || errors.As(err, &ms)
}
