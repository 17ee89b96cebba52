package importer

import (
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Operations on data sources reached through a site's bridge (svc.importer.source_*).
var (
	SourceAdd    = bus.Op[Source, Source]{Service: Service, Name: "source_add"}
	SourceList   = bus.Op[SourcesRequest, SourcesResponse]{Service: Service, Name: "sources_ls"}
	SourceGet    = bus.Op[SourceRequest, Source]{Service: Service, Name: "source_get"}
	SourceRemove = bus.Op[SourceRequest, SourceRemoved]{Service: Service, Name: "source_rm"}
	SourceRun    = bus.Op[SourceRunRequest, Run]{Service: Service, Name: "source_run"}
)

// SourceOps lists the data source operations (part of Ops).
func SourceOps() []bus.OpSpec {
	return []bus.OpSpec{SourceAdd.Spec(), SourceList.Spec(), SourceGet.Spec(), SourceRemove.Spec(), SourceRun.Spec()}
}

// Types of data sources read through a site's bridge, and the probe kind each sends.
const (
	SourceSQL  = "sql"  // sql_query, paged by key or offset
	SourceLDAP = "ldap" // ldap_search, paged, one or more OUs
	SourceREST = "rest" // http_request, pages by Link header, offset or cursor
	SourceFile = "file" // file_read: a file on a site host, fetched in chunks
)

// SourceTypes lists the data source types.
var SourceTypes = []string{SourceSQL, SourceLDAP, SourceREST, SourceFile}

// Source is a stored data source definition: where (the site whose bridges reach it), what
// (its type and params) and with which stored credential (a name: the secret stays in the
// credential store and is sealed to the site's bridges per probe).
type Source struct {
	Name       string `json:"name"`
	Site       string `json:"site"`
	Type       string `json:"type"`
	Credential string `json:"credential,omitempty"`
	// Params are the type's settings as key=value (SourceParams lists them per type).
	Params  map[string]string `json:"params"`
	Created time.Time         `json:"created,omitzero"`
}

// SourceRequest names a source.
type SourceRequest struct {
	Name string `json:"name"`
}

// SourceRemoved answers source_rm.
type SourceRemoved struct {
	Removed string `json:"removed"`
}

// SourcesRequest pages through sources by name.
type SourcesRequest = page.Request

// SourcesResponse is one page of sources.
type SourcesResponse struct {
	Sources    []Source `json:"sources"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// SourceRunRequest starts a run reading a stored source through its site's bridges. The
// body of POST /api/v1/imports/sources/{name}/runs is its MapSource.
type SourceRunRequest struct {
	Source string `json:"source"`
	MapSource
}

// SourceParam documents one param of a source type.
type SourceParam struct {
	Key      string
	Required bool
	Default  string
	Doc      string
}

// SourceParams are the params of each source type: the one table the importer validates
// against, the CLI's help and the docs print. Keys with N (ou.N.base) may repeat with
// N = 1, 2, …
var SourceParams = map[string][]SourceParam{
	SourceSQL: {
		{"target", true, "", "database host address (within the site's ranges), optionally host:port"},
		{"driver", false, "postgres", "postgres, mysql or sqlserver"},
		{"port", false, "", "TCP port (default 5432 / 3306 / 1433)"},
		{"database", false, "", "database (default: the credential's fields.database)"},
		{"query", true, "", "a SELECT without ORDER BY, LIMIT or a trailing semicolon; the importer pages over it"},
		{"key", false, "", "key paging: a unique, ordered column of the query; pages are WHERE key > last ORDER BY key"},
		{"order", false, "", "offset paging (when no key): the ORDER BY that makes the order stable, e.g. ResourceID, Name0"},
		{"page_size", false, "500", "rows per page (one probe each)"},
		{"tls", false, "", "verify, require, prefer or disable (as sql_query's tls; default: the credential's)"},
		{"timeout", false, "60s", "one page's query"},
	},
	SourceLDAP: {
		{"target", true, "", "directory server address (within the site's ranges)"},
		{"port", false, "", "TCP port (default 389, 636 for ldaps)"},
		{"security", false, "", "none, ldaps or starttls (as ldap_search's security)"},
		{"tls_verify", false, "", "true: fail when the certificate does not verify"},
		{"base", false, "", "one OU: its base DN (or use ou.N.base for several)"},
		{"filter", false, "(objectClass=*)", "one OU: its filter"},
		{"attributes", false, "", "one OU: attributes to read, comma separated (default all)"},
		{"scope", false, "sub", "one OU: base, one or sub"},
		{"ou.N.base", false, "", "OU number N: base DN (N = 1, 2, …; read in that order)"},
		{"ou.N.filter", false, "(objectClass=*)", "OU number N: filter"},
		{"ou.N.attributes", false, "", "OU number N: attributes, comma separated"},
		{"ou.N.scope", false, "sub", "OU number N: scope"},
		{"explode", false, "", "a multi-valued attribute (memberOf, member): one row per value, the column holding that value; entries without it give one row"},
		{"page_size", false, "500", "entries per LDAP page (RFC 2696)"},
		{"timeout", false, "10m", "one OU's whole search"},
	},
	SourceREST: {
		{"url", true, "", "the first page's absolute URL (its host within the site's ranges)"},
		{"records", false, "", "JSON pointer to the array of records in a page, e.g. /items (default: the body is the array)"},
		{"paging", false, "link", "link (the Link header's rel=next), offset, cursor or none"},
		{"page_size", false, "100", "offset paging: records per page"},
		{"offset_param", false, "offset", "offset paging: the query parameter of the offset"},
		{"limit_param", false, "limit", "offset paging: the query parameter of the page size"},
		{"cursor_param", false, "cursor", "cursor paging: the query parameter carrying the cursor"},
		{"cursor_path", false, "/next_cursor", "cursor paging: JSON pointer to the next cursor in a page (empty or missing: last page)"},
		{"header.NAME", false, "", "a request header, e.g. header.Accept=application/json (no secrets: use the credential)"},
		{"timeout", false, "30s", "one page's request"},
		{"insecure_skip_verify", false, "", "true: do not verify the server's certificate"},
	},
	SourceFile: {
		{"path", true, "", "absolute path on the bridge's host, under the bridge's allowed_dirs"},
		{"format", false, "", "csv, xlsx, xml, json or jsonl (default: from the path)"},
		{"sheet", false, "", "XLSX: the sheet"},
		{"header_row", false, "1", "CSV, XLSX: the row with the column names"},
		{"record_path", false, "", "XML: path of one record; JSON: path to the array of records"},
		{"chunk_bytes", false, "4194304", "bytes fetched per probe"},
	},
}
