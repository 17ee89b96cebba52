// Package apitest holds checks that consumers of the service contracts run in their tests.
package apitest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"
)

// MirrorTypes lists the struct types of the Go package in dir (tests excluded) that
// re-declare a wire shape: a struct with a json-tagged field. A consumer of the API decodes
// into the contract types (libs/api/<service>) instead; a struct that embeds another type
// (an event extending a contract type with figures of its own) is allowed.
func MirrorTypes(dir string) ([]string, error) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var found []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			st, ok := n.(*ast.StructType)
			if !ok {
				return true
			}
			embeds, tagged := false, false
			for _, fl := range st.Fields.List {
				if len(fl.Names) == 0 {
					embeds = true
				}
				if fl.Tag != nil && reflect.StructTag(strings.Trim(fl.Tag.Value, "`")).Get("json") != "" {
					tagged = true
				}
			}
			if tagged && !embeds {
				found = append(found, fmt.Sprintf("%s: struct with json tags", fset.Position(st.Pos())))
			}
			return true
		})
	}
	return found, nil
}
