// Package sqlquery is the contract of the sql_query probe kind: one SQL statement
// (PostgreSQL, MySQL, SQL Server), read-only unless marked write and allowed by the
// bridge; rows streamed in pages.
package sqlquery

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "sql_query"
	Capability = "sql"
)

// Spec of the sql_query kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredSQL},
	Description: "One SQL statement (PostgreSQL, MySQL, SQL Server), read-only unless marked write and allowed; rows streamed in pages.",
	Params:      Params{}, Result: Result{}, Chunk: Page{},
}

// Params of an sql_query probe.
type Params struct {
	Driver     string `json:"driver" required:"true" enum:"postgres,postgresql,pgx,mysql,mariadb,sqlserver,mssql" doc:"database driver"`
	Port       int    `json:"port,omitempty" min:"0" max:"65535" doc:"TCP port (default 5432 / 3306 / 1433)"`
	Database   string `json:"database,omitempty" doc:"database (default: the credential's fields.database)"`
	Query      string `json:"query" required:"true" doc:"one statement"`
	Args       []any  `json:"args,omitempty" doc:"positional arguments ($1 / ? / @p1)"`
	Write      bool   `json:"write,omitempty" doc:"the statement writes (needs the bridge's allow_write)"`
	PageSize   int    `json:"page_size,omitempty" min:"0" default:"200" doc:"rows per streamed page"`
	MaxRows    int    `json:"max_rows,omitempty" min:"0" default:"10000" doc:"stop after this many rows (truncated)"`
	Timeout    string `json:"timeout,omitempty" format:"duration" default:"60s" doc:"connect and run"`
	TLS        string `json:"tls,omitempty" enum:"verify,verify-full,require,insecure,prefer,disable,none" doc:"verify, or (needs the credential's allow_insecure) require (encrypt, no verification), prefer or disable (default: the credential's fields.tls, else verify)"`
	ServerName string `json:"server_name,omitempty" doc:"TLS server name to verify"`
	CAPEM      string `json:"ca_pem,omitempty" doc:"CA certificate(s) to verify the server with (postgres, mysql; default: the system's roots)"`
}

// Column of a result set.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Binary is a value that is not text, in a row.
type Binary struct {
	B64 string `json:"base64"`
}

// Page is one streamed page of rows.
type Page struct {
	Offset  int      `json:"offset"`
	Columns []Column `json:"columns"`
	Rows    [][]any  `json:"rows"`
	// TruncatedCells counts values longer than the cell limit that were cut.
	TruncatedCells int `json:"truncated_cells,omitempty"`
}

// Result of an sql_query probe (its final chunk).
type Result struct {
	Driver            string   `json:"driver"`
	IP                string   `json:"ip"`
	Port              int      `json:"port"`
	Database          string   `json:"database,omitempty"`
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
	ReadOnly          bool     `json:"read_only"`
	Columns           []Column `json:"columns"`
	Rows              int      `json:"rows"`
	RowsAffected      *int64   `json:"rows_affected,omitempty"`
	Pages             int      `json:"pages"`
	// Truncated: max_rows was reached and the rest of the result was not read.
	Truncated      bool  `json:"truncated"`
	TruncatedCells int   `json:"truncated_cells,omitempty"`
	DurationMS     int64 `json:"duration_ms"`
	// Data carries the rows when the caller takes no stream.
	Data [][]any `json:"data,omitempty"`
}
