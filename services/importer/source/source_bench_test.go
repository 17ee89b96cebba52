package source

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

const benchRows = 20000

func benchCSV(b *testing.B) string {
	b.Helper()
	var s strings.Builder
	s.WriteString("host,serial,ip,ram_gb,os\n")
	for i := range benchRows {
		fmt.Fprintf(&s, "host-%06d.corp.example,SN%09d,10.%d.%d.%d,%d,\"Debian 12, bookworm\"\n", i, i*7919, i/65536%256, i/256%256, i%256, 4<<(i%4))
	}
	p := filepath.Join(b.TempDir(), "bench.csv")
	if err := os.WriteFile(p, []byte(s.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

func drain(b *testing.B, r Reader) int {
	n := 0
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil || row.Err != "" {
			b.Fatal(err, row.Err)
		}
		n++
	}
}

// The CSV reader (detection, positions, a map per row) beside encoding/csv alone.
func BenchmarkCSVReader(b *testing.B) {
	p := benchCSV(b)
	b.ResetTimer()
	for b.Loop() {
		r, err := Open(p, api.FileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := drain(b, r); n != benchRows {
			b.Fatalf("%d rows", n)
		}
		r.Close()
	}
	b.ReportMetric(float64(benchRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkEncodingCSV(b *testing.B) {
	p := benchCSV(b)
	b.ResetTimer()
	for b.Loop() {
		f, _ := os.Open(p)
		r := csv.NewReader(f)
		r.ReuseRecord = true
		n := -1
		for {
			_, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		f.Close()
		if n != benchRows {
			b.Fatalf("%d rows", n)
		}
	}
	b.ReportMetric(float64(benchRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func benchXLSX(b *testing.B) string {
	b.Helper()
	f := excelize.NewFile()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		b.Fatal(err)
	}
	_ = sw.SetRow("A1", []any{"host", "serial", "ram_gb"})
	for i := range benchRows {
		cell, _ := excelize.CoordinatesToCellName(1, i+2)
		_ = sw.SetRow(cell, []any{fmt.Sprintf("host-%06d", i), fmt.Sprintf("SN%09d", i), 4 << (i % 4)})
	}
	if err := sw.Flush(); err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "bench.xlsx")
	if err := f.SaveAs(p); err != nil {
		b.Fatal(err)
	}
	return p
}

// The XLSX reader beside excelize's raw row iterator.
func BenchmarkXLSXReader(b *testing.B) {
	p := benchXLSX(b)
	b.ResetTimer()
	for b.Loop() {
		r, err := Open(p, api.FileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := drain(b, r); n != benchRows {
			b.Fatalf("%d rows", n)
		}
		r.Close()
	}
	b.ReportMetric(float64(benchRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkExcelizeRows(b *testing.B) {
	p := benchXLSX(b)
	b.ResetTimer()
	for b.Loop() {
		f, err := excelize.OpenFile(p)
		if err != nil {
			b.Fatal(err)
		}
		rows, _ := f.Rows("Sheet1")
		n := -1
		for rows.Next() {
			if _, err := rows.Columns(); err != nil {
				b.Fatal(err)
			}
			n++
		}
		rows.Close()
		f.Close()
		if n != benchRows {
			b.Fatalf("%d rows", n)
		}
	}
	b.ReportMetric(float64(benchRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
