package source

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// sniffSize is how much of a file encoding and delimiter detection look at.
const sniffSize = 64 << 10

// csvReader reads RFC 4180 CSV. The encoding (UTF-8 with or without BOM, UTF-16 with BOM,
// else Windows-1252, the superset of Latin-1 spreadsheet exports use) and the delimiter
// (, ; tab |) are detected from the first 64 KiB.
type csvReader struct {
	fileCloser
	r        *csv.Reader
	header   []string
	n        int64
	Encoding string
	Delim    rune
}

func newCSV(f *os.File, opts api.FileOptions) (*csvReader, error) {
	text, enc, err := decodeText(f)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(text, sniffSize)
	head, _ := br.Peek(sniffSize)
	delim := detectDelimiter(head)
	r := csv.NewReader(br)
	r.Comma = delim
	r.FieldsPerRecord = -1 // counted per row, so a short row is a row error, not a stop
	r.ReuseRecord = true
	c := &csvReader{fileCloser: fileCloser{f}, r: r, Encoding: enc, Delim: delim}
	headerRow := max(opts.HeaderRow, 1)
	for i := 1; i <= headerRow; i++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("header row %d: the file has only %d rows", headerRow, i-1)
		}
		if err != nil {
			return nil, fmt.Errorf("header row %d: %w", headerRow, err)
		}
		if i == headerRow {
			line, _ := r.FieldPos(0)
			if c.header, err = headerNames(rec, func(col int) string { return fmt.Sprintf("line %d, column %d", line, col+1) }); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// headerNames checks column names: none blank, none twice. where names a column's cell.
func headerNames(rec []string, where func(col int) string) ([]string, error) {
	names := make([]string, len(rec))
	seen := map[string]int{}
	var errs []error
	for i, v := range rec {
		name := trimSpace(v)
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("header %s is blank: every column needs a name", where(i)))
		case seen[name] > 0:
			errs = append(errs, fmt.Errorf("header %s: column name %q is used twice (first at %s)", where(i), name, where(seen[name]-1)))
		default:
			seen[name] = i + 1
		}
		names[i] = name
	}
	return names, errors.Join(errs...)
}

// Header is the column names.
func (c *csvReader) Header() []string { return c.header }

func (c *csvReader) Next() (Row, error) {
	rec, err := c.r.Read()
	if errors.Is(err, io.EOF) {
		return Row{}, io.EOF
	}
	c.n++
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return Row{N: c.n, Pos: api.Position{Line: int64(pe.StartLine)},
				Err: csvProblem(pe)}, nil
		}
		return Row{}, err
	}
	line, _ := c.r.FieldPos(0)
	pos := api.Position{Line: int64(line)}
	if len(rec) != len(c.header) {
		return Row{N: c.n, Pos: pos, Err: fmt.Sprintf("line %d: %d fields, the header has %d", line, len(rec), len(c.header))}, nil
	}
	cols := make(map[string]any, len(rec))
	for i, v := range rec {
		cols[c.header[i]] = v
	}
	return Row{N: c.n, Pos: pos, Cols: cols}, nil
}

// csvProblem says what is wrong with a malformed record: where the record starts (its row's
// position), and where the reader noticed, which for an unclosed quote is lines later.
func csvProblem(pe *csv.ParseError) string {
	if errors.Is(pe.Err, csv.ErrQuote) && pe.Line > pe.StartLine {
		return fmt.Sprintf("line %d: malformed CSV: a quoted field opened on line %d is not closed (noticed at line %d, column %d: %v); the lines after it were read into that field",
			pe.StartLine, pe.StartLine, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Sprintf("line %d: malformed CSV at column %d: %v", pe.Line, pe.Column, pe.Err)
}

// decodeText returns r as UTF-8 text and the encoding it was found in.
func decodeText(r io.Reader) (io.Reader, string, error) {
	br := bufio.NewReaderSize(r, sniffSize)
	head, err := br.Peek(sniffSize)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, "", err
	}
	switch {
	case bytes.HasPrefix(head, []byte{0xEF, 0xBB, 0xBF}):
		_, _ = br.Discard(3)
		return br, "utf-8 (BOM)", nil
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}), bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		dec := unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM).NewDecoder()
		return transform.NewReader(br, dec), "utf-16", nil
	}
	if validUTF8Prefix(head, len(head) == sniffSize) {
		return br, "utf-8", nil
	}
	return transform.NewReader(br, charmap.Windows1252.NewDecoder()), "windows-1252", nil
}

// validUTF8Prefix is utf8.Valid, forgiving a rune cut at the end of a truncated sample.
func validUTF8Prefix(b []byte, truncated bool) bool {
	if utf8.Valid(b) {
		return true
	}
	if !truncated {
		return false
	}
	for cut := 1; cut <= 3 && cut < len(b); cut++ {
		if utf8.Valid(b[:len(b)-cut]) {
			return true
		}
	}
	return false
}

// detectDelimiter picks among , ; tab | the one found the same number of times (outside
// quotes) on the most of the first lines, more often being the tie-break; comma by default.
func detectDelimiter(head []byte) rune {
	lines := bytes.SplitN(head, []byte("\n"), 12)
	if len(lines) > 1 {
		lines = lines[:len(lines)-1] // the last may be cut by the sample
	}
	best, bestScore := ',', -1
	for _, d := range []byte{',', ';', '\t', '|'} {
		counts := map[int]int{}
		first := -1
		for _, l := range lines {
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			n, quoted := 0, false
			for _, ch := range l {
				switch {
				case ch == '"':
					quoted = !quoted
				case ch == d && !quoted:
					n++
				}
			}
			if first < 0 {
				first = n
			}
			counts[n]++
		}
		if first <= 0 {
			continue
		}
		score := counts[first]*1000 + first // lines agreeing with the header, then columns
		if score > bestScore {
			best, bestScore = rune(d), score
		}
	}
	return best
}

func trimSpace(s string) string { return string(bytes.TrimSpace([]byte(s))) }
