package errs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/errs"
)

// repo is the root of the source tree, from libs/errs.
const repo = "../.."

func TestTableHasNoDuplicates(t *testing.T) {
	codes, names, statuses := map[errs.Code]bool{}, map[string]bool{}, map[int]errs.Code{}
	for _, e := range errs.Table {
		if codes[e.Code] {
			t.Errorf("code %q appears twice", e.Code)
		}
		if names[e.Name] {
			t.Errorf("name %s appears twice", e.Name)
		}
		codes[e.Code], names[e.Name] = true, true
		if e.Scope == 0 || e.Doc == "" {
			t.Errorf("%s: no scope or no doc", e.Name)
		}
		if e.Scope&errs.API != 0 {
			if e.Status < 400 || e.Status > 599 {
				t.Errorf("%s: API code with status %d", e.Name, e.Status)
			}
			if other, dup := statuses[e.Status]; dup {
				t.Errorf("status %d has two API codes: %s and %s (a ServiceError's status must name one)", e.Status, other, e.Code)
			}
			statuses[e.Status] = e.Code
		} else if e.Status != 0 {
			t.Errorf("%s: a status on a code no API answers with", e.Name)
		}
		if !regexp.MustCompile(`^[a-z][a-z_]*[a-z]$`).MatchString(string(e.Code)) {
			t.Errorf("code %q: want lower_snake_case", e.Code)
		}
	}
}

// The table's names are its Go constants, and every constant is a row.
func TestConstantsAreRows(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errs.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]errs.Code{}
	for _, e := range errs.Table {
		rows[e.Name] = e.Code
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for i, name := range vs.Names {
				n++
				lit := vs.Values[i].(*ast.BasicLit)
				v, _ := strconv.Unquote(lit.Value)
				if code, ok := rows[name.Name]; !ok || string(code) != v {
					t.Errorf("constant %s = %q is not the table's row %s (%q)", name.Name, v, name.Name, code)
				}
			}
		}
	}
	if n != len(errs.Table) {
		t.Errorf("%d constants, %d rows", n, len(errs.Table))
	}
}

func TestForStatusAndProblemTypes(t *testing.T) {
	for _, c := range []struct {
		status int
		code   errs.Code
		typ    string
	}{
		{404, errs.NotFound, "https://outpost.dev/problems/not-found"},
		{429, errs.RateLimited, "https://outpost.dev/problems/rate-limited"},
		{400, errs.BadRequest, "https://outpost.dev/problems/bad-request"},
		{418, errs.Internal, "https://outpost.dev/problems/internal"},
	} {
		e := errs.ForStatus(c.status)
		if e.Code != c.code || e.Status != c.status || e.Code.ProblemType() != c.typ {
			t.Errorf("status %d: %s %d %s, want %s %s", c.status, e.Code, e.Status, e.Code.ProblemType(), c.code, c.typ)
		}
	}
	if !errs.Unavailable.Retryable() || errs.BadRequest.Retryable() || errs.Code("nope").Retryable() {
		t.Error("retryable flags are not the table's")
	}
}

// httpStatus maps the net/http constants services pass to bus.Errorf.
var httpStatus = map[string]int{
	"StatusBadRequest": http.StatusBadRequest, "StatusUnauthorized": http.StatusUnauthorized, "StatusForbidden": http.StatusForbidden,
	"StatusNotFound": http.StatusNotFound, "StatusConflict": http.StatusConflict, "StatusTooManyRequests": http.StatusTooManyRequests,
	"StatusInternalServerError": http.StatusInternalServerError, "StatusBadGateway": http.StatusBadGateway,
	"StatusServiceUnavailable": http.StatusServiceUnavailable, "StatusGatewayTimeout": http.StatusGatewayTimeout,
}

var codeConst = regexp.MustCompile(`^[Cc]ode[A-Z]`)

// TestEveryCodeUsedIsInTheTable reads the source of every service and lib: each result or
// dead-letter code constant (Code…, code…), each literal code of an envelope.Error, and each
// status a ServiceError is made with (bus.Errorf) must be a row of the table.
func TestEveryCodeUsedIsInTheTable(t *testing.T) {
	statuses := map[int]bool{}
	for _, e := range errs.Table {
		if e.Scope&errs.API != 0 {
			statuses[e.Status] = true
		}
	}
	seen := 0
	fset := token.NewFileSet()
	err := filepath.WalkDir(repo, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != repo && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		check := func(n ast.Node, what, v string) {
			seen++
			if _, ok := errs.Lookup(errs.Code(v)); !ok {
				t.Errorf("%s: %s %q is not in the error table (libs/errs)", fset.Position(n.Pos()), what, v)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.ValueSpec:
				for i, name := range x.Names {
					if !codeConst.MatchString(name.Name) || i >= len(x.Values) {
						continue
					}
					if lit, ok := x.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						check(lit, "code constant "+name.Name, v)
					}
				}
			case *ast.CompositeLit:
				if sel, ok := x.Type.(*ast.SelectorExpr); !ok || sel.Sel.Name != "Error" {
					if id, ok := x.Type.(*ast.Ident); !ok || id.Name != "Error" {
						return true
					}
				}
				for _, el := range x.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if k, _ := kv.Key.(*ast.Ident); !ok || k == nil || k.Name != "Code" {
						continue
					}
					if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						check(lit, "result code", v)
					}
				}
			case *ast.CallExpr:
				sel, ok := x.Fun.(*ast.SelectorExpr)
				isErrorf := ok && sel.Sel.Name == "Errorf" && isIdent(sel.X, "bus")
				if id, ok := x.Fun.(*ast.Ident); ok && id.Name == "Errorf" && strings.Contains(path, "libs/bus") {
					isErrorf = true
				}
				if !isErrorf || len(x.Args) == 0 {
					return true
				}
				status := -1
				switch a := x.Args[0].(type) {
				case *ast.BasicLit:
					status, _ = strconv.Atoi(a.Value)
				case *ast.SelectorExpr:
					if s, ok := httpStatus[a.Sel.Name]; ok && isIdent(a.X, "http") {
						status = s
					} else {
						t.Errorf("%s: status %s: add it to this test's httpStatus", fset.Position(a.Pos()), a.Sel.Name)
					}
				default:
					return true // a variable: checked where it was set
				}
				seen++
				if !statuses[status] {
					t.Errorf("%s: ServiceError status %d has no API code in the error table", fset.Position(x.Pos()), status)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 50 {
		t.Fatalf("only %d codes found: is %s the repository root?", seen, repo)
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
