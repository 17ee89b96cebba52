package source

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// xlsxReader streams a sheet's rows with excelize's row iterator (the sheet's XML is read as
// it goes, not loaded whole).
type xlsxReader struct {
	f      *excelize.File
	rows   *excelize.Rows
	sheet  string
	header []string
	// unnamed holds the header's blank cells (column index → how to name it in a reason):
	// a merged or empty header cell names no column, so a value under it is that row's
	// error, not a reason to refuse the whole sheet.
	unnamed map[int]string
	rowNum  int64 // sheet row number of the last row read
	n       int64
}

func openXLSX(path string, opts api.FileOptions) (*xlsxReader, error) {
	f, err := excelize.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("not an XLSX workbook: %w", err)
	}
	x, err := newXLSX(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return x, nil
}

func newXLSX(f *excelize.File, opts api.FileOptions) (*xlsxReader, error) {
	sheets := f.GetSheetList()
	sheet := opts.Sheet
	if sheet == "" {
		if len(sheets) == 0 {
			return nil, errors.New("the workbook has no sheet")
		}
		sheet = sheets[0]
	} else if !contains(sheets, sheet) {
		return nil, fmt.Errorf("sheet %q not found: the workbook has %s", sheet, strings.Join(quoteAll(sheets), ", "))
	}
	rows, err := f.Rows(sheet)
	if err != nil {
		return nil, fmt.Errorf("sheet %q: %w", sheet, err)
	}
	x := &xlsxReader{f: f, rows: rows, sheet: sheet}
	headerRow := int64(max(opts.HeaderRow, 1))
	for x.rowNum < headerRow {
		if !rows.Next() {
			if err := rows.Error(); err != nil {
				return nil, fmt.Errorf("sheet %q: %w", sheet, err)
			}
			return nil, fmt.Errorf("sheet %q: header row %d: the sheet has only %d rows", sheet, headerRow, x.rowNum)
		}
		x.rowNum++
	}
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("sheet %q row %d: %w", sheet, headerRow, err)
	}
	for len(cols) > 0 && strings.TrimSpace(cols[len(cols)-1]) == "" {
		cols = cols[:len(cols)-1] // cells after the last named column are not columns
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("sheet %q: header row %d is empty (choose the row with the column names: --header-row N)", sheet, headerRow)
	}
	var merged map[string]string
	for _, c := range cols {
		if strings.TrimSpace(c) == "" {
			merged = x.mergedHeaderCells(headerRow) // only then: it loads the sheet
			break
		}
	}
	where := func(col int) string {
		cell, _ := excelize.CoordinatesToCellName(col+1, int(headerRow))
		where := fmt.Sprintf("cell %s of sheet %q", cell, sheet)
		if m, ok := merged[cell]; ok {
			where += " (merged into " + m + ")"
		}
		return where
	}
	named := make([]string, 0, len(cols))
	index := make([]int, 0, len(cols))
	for i, c := range cols {
		if strings.TrimSpace(c) == "" {
			if x.unnamed == nil {
				x.unnamed = map[int]string{}
			}
			x.unnamed[i] = "header " + where(i) + " is blank"
			continue
		}
		named = append(named, c)
		index = append(index, i)
	}
	names, err := headerNames(named, func(i int) string { return where(index[i]) })
	if err != nil {
		return nil, err
	}
	x.header = make([]string, len(cols)) // by column; "" under a blank header cell
	for i, n := range names {
		x.header[index[i]] = n
	}
	return x, nil
}

// mergedHeaderCells maps the header row's cells covered by a merge to the merge's range.
// excelize reads the merges from the whole sheet, so this is only asked when the header
// has a blank cell (a merged cell shows its value in its first cell only).
func (x *xlsxReader) mergedHeaderCells(row int64) map[string]string {
	out := map[string]string{}
	merges, err := x.f.GetMergeCells(x.sheet)
	if err != nil {
		return out
	}
	for _, m := range merges {
		c1, r1, err1 := excelize.CellNameToCoordinates(m.GetStartAxis())
		c2, r2, err2 := excelize.CellNameToCoordinates(m.GetEndAxis())
		if err1 != nil || err2 != nil || int64(r1) > row || int64(r2) < row {
			continue
		}
		for c := c1; c <= c2; c++ {
			name, _ := excelize.CoordinatesToCellName(c, int(row))
			out[name] = m.GetStartAxis() + ":" + m.GetEndAxis()
		}
	}
	return out
}

// Header is the column names, from column A on.
func (x *xlsxReader) Header() []string { return x.header }

func (x *xlsxReader) Next() (Row, error) {
	for {
		if !x.rows.Next() {
			if err := x.rows.Error(); err != nil {
				return Row{}, fmt.Errorf("sheet %q after row %d: %w", x.sheet, x.rowNum, err)
			}
			return Row{}, io.EOF
		}
		x.rowNum++
		cols, err := x.rows.Columns()
		pos := api.Position{Sheet: x.sheet, Row: x.rowNum}
		if err != nil {
			x.n++
			return Row{N: x.n, Pos: pos, Err: fmt.Sprintf("%s: %v", SheetCell(x.sheet, "A"+strconv.FormatInt(x.rowNum, 10)), err)}, nil
		}
		if blank(cols) {
			continue // spreadsheets have empty rows between blocks; they are not records
		}
		x.n++
		if len(cols) > len(x.header) && !blank(cols[len(x.header):]) {
			cell, _ := excelize.CoordinatesToCellName(len(x.header)+1, int(x.rowNum))
			pos.Cell = cell
			return Row{N: x.n, Pos: pos, Err: fmt.Sprintf("%s: a value beyond the last named column", SheetCell(x.sheet, cell))}, nil
		}
		for i := range min(len(cols), len(x.header)) {
			if why, ok := x.unnamed[i]; ok && strings.TrimSpace(cols[i]) != "" {
				cell, _ := excelize.CoordinatesToCellName(i+1, int(x.rowNum))
				pos.Cell = cell
				return Row{N: x.n, Pos: pos, Err: fmt.Sprintf("%s: %q has no column: the %s; name the column in the header row, or clear the cell",
					SheetCell(x.sheet, cell), cols[i], why)}, nil
			}
		}
		row := make(map[string]any, len(x.header))
		for i, name := range x.header {
			if name == "" {
				continue
			}
			v := ""
			if i < len(cols) {
				v = cols[i]
			}
			row[name] = v
		}
		return Row{N: x.n, Pos: pos, Cols: row}, nil
	}
}

func (x *xlsxReader) Close() error {
	_ = x.rows.Close()
	return x.f.Close()
}

func blank(cols []string) bool {
	for _, c := range cols {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// SheetCell names a cell the way spreadsheets do: servers!C12, 'My Sheet'!C12.
func SheetCell(sheet, cell string) string { return api.SheetCell(sheet, cell) }
