package source

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/text/encoding/charmap"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// xmlReader streams records: elements at the record path (/servers/server). A record's
// attributes and child elements become columns (a grandchild is "child.grandchild"; a
// child repeated becomes a list). An element where a record path step was expected is a
// row error at its line, and the reader goes on with the next element.
type xmlReader struct {
	fileCloser
	dec   *xml.Decoder
	path  []string // record path steps; nil: every child of the root is a record
	stack []string
	n     int64
	index int64 // records matched
	done  bool
	rpath string
}

func newXML(f *os.File, opts api.FileOptions) (*xmlReader, error) {
	x := &xmlReader{fileCloser: fileCloser{f}, dec: xml.NewDecoder(f), rpath: opts.RecordPath}
	x.dec.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "iso-8859-1", "latin1", "latin-1", "windows-1252", "cp1252":
			return charmap.Windows1252.NewDecoder().Reader(in), nil
		case "us-ascii", "ascii":
			return in, nil
		}
		return nil, fmt.Errorf("XML encoding %q is not supported: save the file as UTF-8", label)
	}
	if p := strings.Trim(opts.RecordPath, "/ "); p != "" {
		x.path = strings.Split(p, "/")
		for _, s := range x.path {
			if s == "" || strings.ContainsAny(s, "[]*@()= ") {
				return nil, fmt.Errorf("record path %q: want element names separated by / (e.g. /servers/server)", opts.RecordPath)
			}
		}
	}
	return x, nil
}

func (x *xmlReader) line() int64 {
	l, _ := x.dec.InputPos()
	return int64(l)
}

func (x *xmlReader) recordDepth() int {
	if x.path == nil {
		return 2
	}
	return len(x.path)
}

func (x *xmlReader) Next() (Row, error) {
	for !x.done {
		tok, err := x.dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			x.done = true
			x.n++
			return Row{N: x.n, Pos: api.Position{Line: x.line()}, Err: fmt.Sprintf("line %d: malformed XML, nothing after it is read: %v", x.line(), err)}, nil
		}
		switch t := tok.(type) {
		case xml.StartElement:
			d := len(x.stack) + 1
			name := t.Name.Local
			if x.path != nil && name != x.path[d-1] {
				// The parent is on the path (else it was skipped): this element is not.
				line := x.line()
				if err := x.dec.Skip(); err != nil {
					x.done = true
				}
				x.n++
				where := "/" + strings.Join(append(append([]string{}, x.stack...), name), "/")
				msg := fmt.Sprintf("line %d: element <%s> at %s does not match the record path %s", line, name, where, x.rpath)
				if d == 1 {
					x.done = true
					msg = fmt.Sprintf("line %d: the root element is <%s>, the record path %s wants <%s>: no record read", line, name, x.rpath, x.path[0])
				}
				return Row{N: x.n, Pos: api.Position{Line: line, Record: where}, Err: msg}, nil
			}
			if d < x.recordDepth() {
				x.stack = append(x.stack, name)
				continue
			}
			line := x.line()
			x.index++
			x.n++
			where := fmt.Sprintf("/%s[%d]", strings.Join(append(append([]string{}, x.stack...), name), "/"), x.index)
			cols := map[string]any{}
			for _, a := range t.Attr {
				cols[a.Name.Local] = a.Value
			}
			if err := x.collect(cols, ""); err != nil {
				x.done = true
				return Row{N: x.n, Pos: api.Position{Line: line, Record: where}, Err: fmt.Sprintf("line %d: malformed XML in record %s, nothing after it is read: %v", x.line(), where, err)}, nil
			}
			return Row{N: x.n, Pos: api.Position{Line: line, Record: where}, Cols: cols}, nil
		case xml.EndElement:
			if len(x.stack) > 0 {
				x.stack = x.stack[:len(x.stack)-1]
			}
		}
	}
	x.done = true
	if x.index == 0 && x.n == 0 {
		if x.rpath == "" {
			return Row{}, errors.New("the XML document has no record (no element under its root): give --record-path")
		}
		return Row{}, fmt.Errorf("no element matches the record path %s", x.rpath)
	}
	return Row{}, io.EOF
}

// collect reads the inside of an element up to its end: child elements' text into cols
// under prefix+name, deeper ones flattened with dots, repeated ones as lists.
func (x *xmlReader) collect(cols map[string]any, prefix string) error {
	for {
		tok, err := x.dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			key := prefix + t.Name.Local
			text, children, err := x.element()
			if err != nil {
				return err
			}
			if len(children) > 0 {
				for k, v := range children {
					put(cols, key+"."+k, v)
				}
				continue
			}
			put(cols, key, text)
		case xml.EndElement:
			return nil
		}
	}
}

// element reads one element's content: its text, or its children when it has any.
func (x *xmlReader) element() (string, map[string]any, error) {
	var text strings.Builder
	var children map[string]any
	for {
		tok, err := x.dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", nil, io.ErrUnexpectedEOF
			}
			return "", nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			text.Write(t)
		case xml.StartElement:
			if children == nil {
				children = map[string]any{}
			}
			ct, cc, err := x.element()
			if err != nil {
				return "", nil, err
			}
			if len(cc) > 0 {
				for k, v := range cc {
					put(children, t.Name.Local+"."+k, v)
				}
			} else {
				put(children, t.Name.Local, ct)
			}
		case xml.EndElement:
			return strings.TrimSpace(text.String()), children, nil
		}
	}
}

// put sets cols[k], turning a repeated key into a list.
func put(cols map[string]any, k string, v any) {
	old, ok := cols[k]
	if !ok {
		cols[k] = v
		return
	}
	if l, ok := old.([]any); ok {
		cols[k] = append(l, v)
		return
	}
	cols[k] = []any{old, v}
}
