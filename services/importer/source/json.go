package source

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// jsonReader streams the elements of an array (the document itself, or the array at a root
// path such as /data/servers) with json.Decoder tokens: one element is decoded at a time.
// An element that is not an object is a row error; a syntax error ends the file.
type jsonReader struct {
	fileCloser
	dec   *json.Decoder
	where string // $.data.servers
	n     int64
	state int // 0 before the array, 1 inside, 2 done
	path  []string
}

func newJSON(f *os.File, opts api.FileOptions) (*jsonReader, error) {
	text, _, err := decodeText(f)
	if err != nil {
		return nil, err
	}
	j := &jsonReader{fileCloser: fileCloser{f}, dec: json.NewDecoder(text), where: "$"}
	j.dec.UseNumber()
	p := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(opts.RecordPath), "$"), ".")
	for _, s := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '.' }) {
		j.path = append(j.path, s)
		j.where += "." + s
	}
	return j, nil
}

// seek walks the document to the array at the path.
func (j *jsonReader) seek() error {
	for i := 0; ; i++ {
		here := "$"
		if i > 0 {
			here += "." + strings.Join(j.path[:i], ".")
		}
		tok, err := j.dec.Token()
		if err != nil {
			return fmt.Errorf("at %s (byte %d): %w", here, j.dec.InputOffset(), err)
		}
		if i == len(j.path) {
			if d, ok := tok.(json.Delim); ok && d == '[' {
				return nil
			}
			return fmt.Errorf("at %s: want an array of records, found %s (give --record-path to the array, e.g. /data/servers)", here, describe(tok))
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return fmt.Errorf("at %s: want an object holding %q, found %s", here, j.path[i], describe(tok))
		}
		found := false
		for j.dec.More() {
			kt, err := j.dec.Token()
			if err != nil {
				return fmt.Errorf("at %s: %w", here, err)
			}
			if k, _ := kt.(string); k == j.path[i] {
				found = true
				break
			}
			if err := skipValue(j.dec); err != nil {
				return fmt.Errorf("at %s.%v: %w", here, kt, err)
			}
		}
		if !found {
			return fmt.Errorf("at %s: no key %q (record path %s)", here, j.path[i], j.where)
		}
	}
}

func (j *jsonReader) Next() (Row, error) {
	switch j.state {
	case 2:
		return Row{}, io.EOF
	case 0:
		if err := j.seek(); err != nil {
			j.state = 2
			return Row{}, err
		}
		j.state = 1
	}
	if !j.dec.More() {
		j.state = 2
		return Row{}, io.EOF
	}
	j.n++
	off := j.dec.InputOffset()
	pos := api.Position{Record: fmt.Sprintf("%s[%d]", j.where, j.n-1), Offset: off}
	var v any
	if err := j.dec.Decode(&v); err != nil {
		j.state = 2
		return Row{N: j.n, Pos: pos, Err: fmt.Sprintf("%s (byte %d): malformed JSON, nothing after it is read: %v", pos.Record, off, err)}, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return Row{N: j.n, Pos: pos, Err: fmt.Sprintf("%s (byte %d): want an object, found %s", pos.Record, off, describeValue(v))}, nil
	}
	return Row{N: j.n, Pos: pos, Cols: Normalize(obj).(map[string]any)}, nil
}

// jsonlReader reads JSON Lines: one object per line; a bad line is a row error.
type jsonlReader struct {
	fileCloser
	sc   *bufio.Scanner
	line int64
	n    int64
}

func newJSONL(f *os.File) (*jsonlReader, error) {
	text, _, err := decodeText(f)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(text)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &jsonlReader{fileCloser: fileCloser{f}, sc: sc}, nil
}

func (j *jsonlReader) Next() (Row, error) {
	for j.sc.Scan() {
		j.line++
		b := bytes.TrimSpace(j.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		j.n++
		pos := api.Position{Line: j.line}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return Row{N: j.n, Pos: pos, Err: fmt.Sprintf("line %d: malformed JSON: %v", j.line, err)}, nil
		}
		if dec.More() {
			return Row{N: j.n, Pos: pos, Err: fmt.Sprintf("line %d: more than one JSON value on the line", j.line)}, nil
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return Row{N: j.n, Pos: pos, Err: fmt.Sprintf("line %d: want an object, found %s", j.line, describeValue(v))}, nil
		}
		return Row{N: j.n, Pos: pos, Cols: Normalize(obj).(map[string]any)}, nil
	}
	if err := j.sc.Err(); err != nil {
		return Row{}, fmt.Errorf("after line %d: %w", j.line, err)
	}
	return Row{}, io.EOF
}

// skipValue reads past one value (of any size) token by token.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// Normalize turns json.Number into int64 when whole and in range, else float64, everywhere
// in v: expressions then see numbers, not strings.
func Normalize(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = Normalize(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = Normalize(e)
		}
		return t
	}
	return v
}

func describe(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return fmt.Sprintf("%q", t.String())
	}
	return describeValue(tok)
}

func describeValue(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, int64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
