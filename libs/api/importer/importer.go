// Package importer is the contract of the import service (svc.importer.<op>): the request
// and response types the service, the gateway and the CLI share, the run states and row
// outcomes, and the object store bucket uploads travel through.
package importer

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the name on the bus: svc.importer.<op>, dlq.importer.
const Service = "importer"

// Operations of svc.importer.<op>.
var (
	Validate    = bus.Op[ValidateRequest, ValidateResponse]{Service: Service, Name: "validate"}
	Start       = bus.Op[StartRequest, Run]{Service: Service, Name: "start"}
	Retransform = bus.Op[RetransformRequest, Run]{Service: Service, Name: "retransform"}
	RunList     = bus.Op[RunsRequest, RunsResponse]{Service: Service, Name: "runs_ls"}
	RunGet      = bus.Op[RunRequest, Run]{Service: Service, Name: "run_get"}
	Rows        = bus.Op[RowsRequest, RowsResponse]{Service: Service, Name: "rows"}
	MapAdd      = bus.Op[MapSource, StoredMap]{Service: Service, Name: "maps_add"}
	MapList     = bus.Op[page.Request, MapsResponse]{Service: Service, Name: "maps_ls"}
	MapGet      = bus.Op[MapRequest, StoredMap]{Service: Service, Name: "maps_get"}
	MapTest     = bus.Op[MapTestRequest, MapTestResponse]{Service: Service, Name: "maps_test"}
	ScheduleAdd = bus.Op[Schedule, Schedule]{Service: Service, Name: "schedules_add"}
	ScheduleLs  = bus.Op[page.Request, SchedulesResponse]{Service: Service, Name: "schedules_ls"}
	ScheduleRm  = bus.Op[ScheduleRequest, Schedule]{Service: Service, Name: "schedules_rm"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return append([]bus.OpSpec{Validate.Spec(), Start.Spec(), Retransform.Spec(), RunList.Spec(), RunGet.Spec(), Rows.Spec(),
		MapAdd.Spec(), MapList.Spec(), MapGet.Spec(), MapTest.Spec(), ScheduleAdd.Spec(), ScheduleLs.Spec(), ScheduleRm.Spec()}, SourceOps()...)
}

// UploadBucket is the JetStream object store an uploaded file is streamed into (chunked, never
// held whole in memory) before a run stages it: the gateway writes it, the importer reads it
// and deletes the object once its rows are staged.
const UploadBucket = "import_uploads"

// UploadStoreConfig is the upload bucket's configuration; whoever gets there first creates it.
// Uploads not staged within a week are dropped.
func UploadStoreConfig() jetstream.ObjectStoreConfig {
	return bus.ObjectStore(UploadBucket) // the stores table (libs/bus/stores.go)
}

// Formats of file sources.
const (
	FormatCSV   = "csv"
	FormatXLSX  = "xlsx"
	FormatXML   = "xml"
	FormatJSON  = "json"
	FormatJSONL = "jsonl"
)

// Run states. A run stages its source's rows and transforms them as they arrive; it is
// completed when every staged row has an outcome.
const (
	StateQueued      = "queued"
	StateRunning     = "running"
	StateCompleted   = "completed"
	StateFailed      = "failed"
	StateCanceled    = "canceled"
	OutcomeInserted  = "inserted"
	OutcomeUpdated   = "updated"
	OutcomeUnchanged = "unchanged"
	OutcomeIgnored   = "ignored" // skip_if held
	OutcomeSkipped   = "skipped" // a coalesce attribute had no value
	OutcomeError     = "error"   // the row could not be read, an expression failed, a type was wrong, the CMDB refused it
)

// Outcomes lists every row outcome, in the order runs show them.
var Outcomes = []string{OutcomeInserted, OutcomeUpdated, OutcomeUnchanged, OutcomeIgnored, OutcomeSkipped, OutcomeError}

// FileOptions say how a file is read; zero values are detected or defaulted.
type FileOptions struct {
	Format string `json:"format,omitempty"` // csv, xlsx, xml, json, jsonl; default from the file name
	// Sheet (XLSX) is the sheet's name; default the first sheet.
	Sheet string `json:"sheet,omitempty"`
	// HeaderRow (CSV, XLSX) is the 1-based row holding the column names; default 1. Rows
	// above it are not read.
	HeaderRow int `json:"header_row,omitempty"`
	// RecordPath (XML) is the element path of one record, e.g. /servers/server; (JSON) the
	// path to the array of records, e.g. /data/servers (default: the document is the array).
	RecordPath string `json:"record_path,omitempty"`
}

// ValidateRequest checks a transform map without running it.
type ValidateRequest struct {
	Map     string `json:"map"`                // the YAML text
	MapFile string `json:"map_file,omitempty"` // its file name, for error messages
	// MapName, instead of Map, names a stored map (maps_add): its latest version.
	MapName string `json:"map_name,omitempty"`
}

// ValidateResponse is a valid map's summary. An invalid map is a 400 whose message lists
// every problem as FILE:LINE: field: reason.
type ValidateResponse struct {
	Name     string   `json:"name"`
	Class    string   `json:"class"`
	Coalesce []string `json:"coalesce"`
	Fields   []string `json:"fields"`
}

// UploadForm is the multipart/form-data body of an upload (POST /api/v1/imports/runs), part
// by part; the gateway stores the file and sends Start. The map part must come before the
// file part, so that a bad map is refused before the file is stored. The file may instead
// be the raw body, with the map and options as query parameters of the same names.
type UploadForm struct {
	Map        string `json:"map"`                   // the transform map's YAML
	File       string `json:"file"`                  // the data file, streamed
	MapFile    string `json:"map_file,omitempty"`    // default: the map part's file name
	Filename   string `json:"filename,omitempty"`    // default: the file part's file name
	Format     string `json:"format,omitempty"`      // FileOptions.Format
	Sheet      string `json:"sheet,omitempty"`       // FileOptions.Sheet
	HeaderRow  int    `json:"header_row,omitempty"`  // FileOptions.HeaderRow
	RecordPath string `json:"record_path,omitempty"` // FileOptions.RecordPath
}

// StartRequest starts a run over an uploaded file.
type StartRequest struct {
	Upload   string      `json:"upload"`   // object name in UploadBucket
	Filename string      `json:"filename"` // the file's own name (format detection, display)
	Options  FileOptions `json:"options"`
	Map      string      `json:"map"`
	MapFile  string      `json:"map_file,omitempty"`
	// MapName, instead of Map, names a stored map: its latest version is the run's.
	MapName string `json:"map_name,omitempty"`
}

// RetransformRequest runs a changed map over the rows a run staged, without reading the source
// again.
type RetransformRequest struct {
	Run string `json:"run"`
	MapSource
}

// MapSource is a transform map as sent: the body of POST /api/v1/imports/runs/{id}/retransform
// (the run is in the path).
type MapSource struct {
	Map     string `json:"map"`                // the YAML text
	MapFile string `json:"map_file,omitempty"` // its file name, for error messages
	// MapName, instead of Map, names a stored map (not for maps_add): its latest version.
	MapName string `json:"map_name,omitempty"`
}

// KVMaps is the bucket of stored transform maps: one key per map name, its history the
// map's versions (the newest 64 are kept).
const KVMaps = "import_maps"

// StoredMap is a transform map kept by the importer (maps_add), by name and version.
type StoredMap struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"` // 1, 2, …: one more per maps_add of the same name
	Class    string    `json:"class"`
	Source   string    `json:"source"`
	Coalesce []string  `json:"coalesce"`
	Fields   []string  `json:"fields"`
	MapFile  string    `json:"map_file,omitempty"`
	Map      string    `json:"map"` // the YAML text
	Created  time.Time `json:"created"`
	// Unchanged is set by maps_add when the text equals the latest version's: no new version.
	Unchanged bool `json:"unchanged,omitempty"`
}

// MapRequest names a stored map; Version 0 is the latest.
type MapRequest struct {
	Name    string `json:"name"`
	Version int    `json:"version,omitempty"`
}

// MapsResponse is one page of stored maps (their latest versions), by name.
type MapsResponse struct {
	Maps       []StoredMap `json:"maps"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// MapTestForm is the multipart/form-data body of POST /api/v1/imports/maps/test: an upload
// (UploadForm's parts, the map part or map_name first) and how many rows to try.
type MapTestForm struct {
	Map        string `json:"map,omitempty"`         // the transform map's YAML, or:
	MapName    string `json:"map_name,omitempty"`    // a stored map's name
	File       string `json:"file"`                  // the data file, streamed
	MapFile    string `json:"map_file,omitempty"`    // default: the map part's file name
	Filename   string `json:"filename,omitempty"`    // default: the file part's file name
	Format     string `json:"format,omitempty"`      // FileOptions.Format
	Sheet      string `json:"sheet,omitempty"`       // FileOptions.Sheet
	HeaderRow  int    `json:"header_row,omitempty"`  // FileOptions.HeaderRow
	RecordPath string `json:"record_path,omitempty"` // FileOptions.RecordPath
	Rows       int    `json:"rows,omitempty"`        // MapTestRequest.Rows
}

// MapTestRequest is a dry run: a map over the first Rows rows of an uploaded file, nothing
// written to the CMDB or staged.
type MapTestRequest struct {
	StartRequest
	// Rows is how many rows to read (default 10, at most MaxTestRows).
	Rows int `json:"rows,omitempty"`
}

// MaxTestRows bounds a dry run: it answers in one reply.
const MaxTestRows = 1000

// MapTestResponse is what a map makes of each row tried. The outcome of a row the map turns
// into a payload is the CMDB's likely answer, found by looking its coalesce values up
// (read only): inserted (no CI has them), updated (a CI has them, some mapped value
// differs), unchanged (the CI has every mapped value) — the real run's identification and
// precedence decide.
type MapTestResponse struct {
	Map  ValidateResponse `json:"map"`
	Rows []MapTestRow     `json:"rows"`
	// More is set when the file has rows after those tried.
	More bool `json:"more"`
}

// MapTestRow is one row's result in a dry run.
type MapTestRow struct {
	N        int64          `json:"n"`
	Position Position       `json:"position"`
	Outcome  string         `json:"outcome"`
	Reason   string         `json:"reason,omitempty"`
	CI       string         `json:"ci,omitempty"`      // the CI the coalesce values match
	Target   map[string]any `json:"target,omitempty"`  // the target attributes the map computed
	Related  []TestItem     `json:"related,omitempty"` // related CIs made per row
	Columns  map[string]any `json:"columns,omitempty"` // the row as read
	Changed  []string       `json:"changed,omitempty"` // updated: the attributes that differ
}

// TestItem is a related CI a dry run computed.
type TestItem struct {
	Relation   string         `json:"relation"`
	Class      string         `json:"class"`
	Attributes map[string]any `json:"attributes"`
}

// Schedule starts an import on a cron schedule: a file kept with the schedule (uploaded once)
// imported with a stored map's latest version. One replica fires each slot (the KV lease
// and a claim per slot), so a slot is never run twice.
type Schedule struct {
	Name string `json:"name"`
	// Cron is a 5-field cron spec ("0 2 * * *") or a descriptor ("@hourly", "@every 6h"), UTC.
	Cron    string      `json:"cron"`
	MapName string      `json:"map_name"`         // a stored map (maps_add)
	Upload  string      `json:"upload,omitempty"` // the file, in ScheduleFiles (the gateway stores it)
	File    string      `json:"filename,omitempty"`
	Options FileOptions `json:"options"`
	Created time.Time   `json:"created"`
	// Set by the importer.
	Next     *time.Time `json:"next,omitempty"`
	LastSlot *time.Time `json:"last_slot,omitempty"` // the last slot fired
	LastRun  string     `json:"last_run,omitempty"`
	LastErr  string     `json:"last_error,omitempty"`
}

// ScheduleForm is the multipart/form-data body of POST /api/v1/imports/schedules: the
// schedule's fields as parts, then the file.
type ScheduleForm struct {
	Name       string `json:"name"`
	Cron       string `json:"cron"`
	MapName    string `json:"map_name"`
	File       string `json:"file"`
	Format     string `json:"format,omitempty"`
	Sheet      string `json:"sheet,omitempty"`
	HeaderRow  int    `json:"header_row,omitempty"`
	RecordPath string `json:"record_path,omitempty"`
}

// ScheduleFiles is the object store of scheduled files: kept until the schedule is removed
// (the upload bucket drops files after a week).
const ScheduleFiles = "import_schedule_files"

// ScheduleFilesConfig is the scheduled files bucket's configuration.
func ScheduleFilesConfig() jetstream.ObjectStoreConfig {
	return bus.ObjectStore(ScheduleFiles) // the stores table (libs/bus/stores.go)
}

// ScheduleRequest names a schedule.
type ScheduleRequest struct {
	Name string `json:"name"`
}

// SchedulesResponse is one page of schedules, by name.
type SchedulesResponse struct {
	Schedules  []Schedule `json:"schedules"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// RunRequest names a run.
type RunRequest struct {
	ID string `json:"id"`
}

// RunsRequest (runs_ls) pages through runs, newest first.
type RunsRequest = page.Request

// RunsResponse is one page of runs.
type RunsResponse struct {
	Runs       []Run  `json:"runs"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Counters count a run's rows by outcome.
type Counters struct {
	Staged    int64 `json:"staged"` // rows read from the source
	Inserted  int64 `json:"inserted"`
	Updated   int64 `json:"updated"`
	Unchanged int64 `json:"unchanged"`
	Ignored   int64 `json:"ignored"`
	Skipped   int64 `json:"skipped"`
	Error     int64 `json:"error"`
}

// Done is the number of rows with an outcome.
func (c Counters) Done() int64 {
	return c.Inserted + c.Updated + c.Unchanged + c.Ignored + c.Skipped + c.Error
}

// Add counts one outcome.
func (c *Counters) Add(outcome string, n int64) {
	switch outcome {
	case OutcomeInserted:
		c.Inserted += n
	case OutcomeUpdated:
		c.Updated += n
	case OutcomeUnchanged:
		c.Unchanged += n
	case OutcomeIgnored:
		c.Ignored += n
	case OutcomeSkipped:
		c.Skipped += n
	default:
		c.Error += n
	}
}

// Run is an import run: what it reads, with which map, how far it got.
type Run struct {
	ID string `json:"id"`
	// Set is the import set (staged rows, subject import.<set>.rows): the run's own ID, or
	// for a re-transform the run whose rows it reads.
	Set      string      `json:"set"`
	State    string      `json:"state"`
	Reason   string      `json:"reason,omitempty"`
	Filename string      `json:"filename,omitempty"`
	Options  FileOptions `json:"options"`
	// DataSource is the stored source a run reads through its site's bridges (empty for
	// an upload), and Site that source's site.
	DataSource string `json:"data_source,omitempty"`
	Site       string `json:"site,omitempty"`
	MapName    string `json:"map_name"`
	MapFile    string `json:"map_file,omitempty"`
	Class      string `json:"class"`
	// Source is the CMDB source name the rows are reconciled as (precedence).
	Source      string     `json:"source"`
	Created     time.Time  `json:"created"`
	Finished    *time.Time `json:"finished,omitempty"`
	StagingDone bool       `json:"staging_done"`
	// Schedule is the schedule that started the run, if one did.
	Schedule string   `json:"schedule,omitempty"`
	Counters Counters `json:"counters"`
}

// Terminal reports whether a run state is final.
func Terminal(state string) bool {
	return state == StateCompleted || state == StateFailed || state == StateCanceled
}

// Position is where a row came from in its source.
type Position struct {
	Line   int64  `json:"line,omitempty"`   // CSV, JSON Lines, XML: line of the row's start (1-based)
	Sheet  string `json:"sheet,omitempty"`  // XLSX
	Row    int64  `json:"row,omitempty"`    // XLSX row number (1-based)
	Cell   string `json:"cell,omitempty"`   // XLSX/CSV: the cell a problem is in, e.g. C7
	Record string `json:"record,omitempty"` // XML /servers/server[3], JSON $.servers[3]
	Offset int64  `json:"offset,omitempty"` // JSON: byte offset of the record
	Page   string `json:"page,omitempty"`   // paged sources (SQL, LDAP, REST): the cursor the row's page was asked with
	Index  int    `json:"index,omitempty"`  // paged sources: the row's 0-based index in its page
	Key    string `json:"key,omitempty"`    // SQL paged by key: the row's key
}

// SheetCell names a cell the way spreadsheets do, so an operator can paste it into the
// name box: servers!C12, or 'My Sheet'!C12 when the sheet's name needs quoting.
func SheetCell(sheet, cell string) string {
	if sheet == "" {
		return cell
	}
	if strings.ContainsAny(sheet, " !'-+(),;") {
		sheet = "'" + strings.ReplaceAll(sheet, "'", "''") + "'"
	}
	return sheet + "!" + cell
}

// String says where a row is, as reasons, the CLI and the console show it: servers!C12,
// servers row 12, line 7 (/servers/server[3]), $.data[4].
func (p Position) String() string {
	var parts []string
	switch {
	case p.Sheet != "" && p.Cell != "":
		parts = append(parts, SheetCell(p.Sheet, p.Cell))
	case p.Sheet != "":
		parts = append(parts, fmt.Sprintf("%s row %d", strings.TrimSuffix(SheetCell(p.Sheet, ""), "!"), p.Row))
	case p.Cell != "":
		parts = append(parts, "cell "+p.Cell)
	}
	if p.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d", p.Line))
	}
	if p.Record != "" {
		parts = append(parts, p.Record)
	}
	if p.Key != "" {
		parts = append(parts, "key "+p.Key)
	}
	if p.Page != "" {
		parts = append(parts, "page "+p.Page)
	}
	return strings.Join(parts, ", ")
}

// RowsRequest pages through a run's row outcomes, in the order they were decided.
type RowsRequest struct {
	Run     string `json:"run"`
	Outcome string `json:"outcome,omitempty"` // only rows with this outcome
	Cursor  string `json:"cursor,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// RowResult is one row's fate.
type RowResult struct {
	N        int64          `json:"n"` // 1-based ordinal of the row in its set
	Position Position       `json:"position"`
	Outcome  string         `json:"outcome"`
	Reason   string         `json:"reason,omitempty"`
	CI       string         `json:"ci,omitempty"`      // the CI the row became or matched
	Columns  map[string]any `json:"columns,omitempty"` // the staged row
}

// RowsResponse is one page of row outcomes.
type RowsResponse struct {
	Rows       []RowResult `json:"rows"`
	NextCursor string      `json:"next_cursor,omitempty"`
}
