// Package source reads the rows of an import's data source, one at a time, each with its
// position in the source. File readers stream: a row is decoded when it is asked for, and
// memory does not grow with the file.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// Row is one record of a source. A row the source could not read (a malformed CSV line, an
// XML element outside the record path, a JSON value that is not an object) has Err set and
// no columns: the run records it as an error at its position and goes on.
type Row struct {
	N    int64          // 1-based ordinal in the source, gaps never
	Pos  api.Position   // where it is
	Cols map[string]any // column name → value (string for text sources; JSON keeps its types)
	Err  string
	// Next and Last are set by the stager on a page's last row: the cursor after the page,
	// and whether it was the last page (see the importer's resume).
	Next string
	Last bool
}

// Reader yields rows in source order; io.EOF after the last. An error other than io.EOF is
// fatal for the source (it cannot go on: a broken zip, an XML syntax error).
type Reader interface {
	Next() (Row, error)
	Close() error
}

// Page is a slice of a paged source: its rows and the cursor to ask for the next page with.
type Page struct {
	Rows []Row
	Next string // opaque; pass back to Source.Page to continue after these rows
	Done bool   // no page follows
}

// Source is any data source as the importer sees it: pages of rows after a resumable cursor.
// A file is one (its cursor is the last row's ordinal); sources reached through a site's
// bridge (SQL paged by key or offset, LDAP with paging cookies, REST with link headers or
// cursors, a file on a site host) implement it with probes: the run stores the cursor of
// the last staged page, so a restarted run asks for the page after it, never from zero.
type Source interface {
	Page(ctx context.Context, cursor string, max int) (Page, error)
	Close() error
}

// FileSource pages through a local file with one of the readers. Resuming re-reads the
// file and skips the rows before the cursor: cheap next to transforming them again.
type FileSource struct {
	path string
	opts api.FileOptions
	r    Reader
	at   int64 // ordinal of the last row returned
}

// NewFileSource opens path as the given (or detected) format.
func NewFileSource(path string, opts api.FileOptions) (*FileSource, error) {
	r, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	return &FileSource{path: path, opts: opts, r: r}, nil
}

// Page returns up to max rows after cursor ("" = from the start).
func (f *FileSource) Page(ctx context.Context, cursor string, max int) (Page, error) {
	after := int64(0)
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n < 0 {
			return Page{}, fmt.Errorf("file cursor %q: want a row number", cursor)
		}
		after = n
	}
	if after < f.at {
		return Page{}, fmt.Errorf("file cursor %d is behind the reader (at %d): reopen the source", after, f.at)
	}
	var p Page
	for len(p.Rows) < max {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		row, err := f.r.Next()
		if errors.Is(err, io.EOF) {
			p.Done = true
			break
		}
		if err != nil {
			return p, err
		}
		f.at = row.N
		if row.N <= after {
			continue
		}
		p.Rows = append(p.Rows, row)
	}
	p.Next = strconv.FormatInt(f.at, 10)
	return p, nil
}

// Close closes the file.
func (f *FileSource) Close() error { return f.r.Close() }

// Header is the file's column names in order (CSV, XLSX), nil for formats without one.
func (f *FileSource) Header() []string {
	if h, ok := f.r.(interface{ Header() []string }); ok {
		return h.Header()
	}
	return nil
}

// ColumnLetters is a spreadsheet column's name: 1 → A, 27 → AA.
func ColumnLetters(n int) string {
	s := ""
	for n > 0 {
		n--
		s = string(rune('A'+n%26)) + s
		n /= 26
	}
	return s
}

// DetectFormat picks the format from an explicit choice or the file name's extension.
func DetectFormat(name, format string) (string, error) {
	if format != "" {
		switch format {
		case api.FormatCSV, api.FormatXLSX, api.FormatXML, api.FormatJSON, api.FormatJSONL:
			return format, nil
		}
		return "", fmt.Errorf("format %q: want csv, xlsx, xml, json or jsonl", format)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv", ".tsv", ".txt":
		return api.FormatCSV, nil
	case ".xlsx", ".xlsm":
		return api.FormatXLSX, nil
	case ".xml":
		return api.FormatXML, nil
	case ".json":
		return api.FormatJSON, nil
	case ".jsonl", ".ndjson":
		return api.FormatJSONL, nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its name: give --format csv|xlsx|xml|json|jsonl", filepath.Base(name))
}

// Open opens a file as a Reader of its format.
func Open(path string, opts api.FileOptions) (Reader, error) {
	format, err := DetectFormat(path, opts.Format)
	if err != nil {
		return nil, err
	}
	if format == api.FormatXLSX {
		return openXLSX(path, opts)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var r Reader
	switch format {
	case api.FormatCSV:
		r, err = newCSV(f, opts)
	case api.FormatXML:
		r, err = newXML(f, opts)
	case api.FormatJSON:
		r, err = newJSON(f, opts)
	case api.FormatJSONL:
		r, err = newJSONL(f)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// fileCloser closes the underlying file of a reader.
type fileCloser struct{ c io.Closer }

func (f fileCloser) Close() error { return f.c.Close() }
