package api_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/api"
	"github.com/outpost-dev/outpost/libs/api/apitest"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/schema"
)

// contractPkgs are where request and answer types may come from: the contract packages and
// the libs they build on (envelope's wire types, page's paging).
var contractPkgs = []string{
	"github.com/outpost-dev/outpost/libs/api/",
	"github.com/outpost-dev/outpost/libs/envelope",
	"github.com/outpost-dev/outpost/libs/page",
}

func fromContract(t reflect.Type) bool {
	if t.Name() == "" && t.Kind() == reflect.Struct && t.NumField() == 0 {
		return true // struct{}: an op without input
	}
	for _, p := range contractPkgs {
		if strings.HasPrefix(t.PkgPath(), p) {
			return true
		}
	}
	return false
}

func TestOpsAreTypedByContracts(t *testing.T) {
	seen := map[string]bool{}
	ops := api.Ops()
	if len(ops) < 30 {
		t.Fatalf("%d ops: the registry lost services", len(ops))
	}
	for _, o := range ops {
		if seen[o.Subject()] {
			t.Errorf("%s declared twice", o.Subject())
		}
		seen[o.Subject()] = true
		for what, typ := range map[string]reflect.Type{"request": o.Request, "answer": o.Response} {
			if typ == nil || !fromContract(typ) {
				t.Errorf("%s: %s type %v is not from a contract package (libs/api/<service>)", o.Subject(), what, typ)
			}
		}
		// Every type has a schema: the OpenAPI document is generated from them.
		g := schema.New("#/$defs/")
		g.Schema(o.Request)
		g.Schema(o.Response)
	}
	if _, ok := api.Lookup("agents", "probe"); !ok {
		t.Error("agents.probe not found")
	}
}

func TestCheckEndpointsFindsEveryDifference(t *testing.T) {
	h := func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil }
	eps := map[string]bus.Endpoint{}
	for _, o := range api.Ops() {
		if o.Service == "cmdb" {
			eps[o.Name] = bus.Endpoint{Request: o.Request, Response: o.Response}
		}
	}
	if err := api.CheckEndpoints("cmdb", eps); err != nil {
		t.Fatalf("matching endpoints refused: %v", err)
	}
	delete(eps, "ls")
	eps["extra"] = bus.Typed(h)
	eps["get"] = bus.JSON(func(context.Context, struct{ ID string }) (any, error) { return nil, nil })
	err := api.CheckEndpoints("cmdb", eps)
	for _, want := range []string{"svc.cmdb.ls: in the contract", "svc.cmdb.extra: the service serves it", "svc.cmdb.get: request is"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

func TestMirrorTypesFindsAWireStruct(t *testing.T) {
	dir := t.TempDir()
	src := "package x\n\ntype view struct {\n\tName string `json:\"name\"`\n}\n\ntype ext struct {\n\tview\n\tN int `json:\"n\"`\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	found, err := apitest.MirrorTypes(dir)
	if err != nil || len(found) != 1 || !strings.Contains(found[0], "x.go:3") {
		t.Errorf("found %v, %v; want the one struct at x.go:3", found, err)
	}
}
