package layout

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const prefix = "github.com/outpost-dev/outpost/"

// deps lists the transitive imports of every package of the module at dir (tests included).
func deps(t *testing.T, dir string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-test", "-deps=false", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v", dir, err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}

func modules(t *testing.T) []string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func serviceOf(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, prefix+"services/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	name = strings.TrimSuffix(strings.TrimSuffix(name, ".test"), "_test")
	return name
}

func TestDependencyRules(t *testing.T) {
	for _, m := range modules(t) {
		path, dir, _ := strings.Cut(m, " ")
		if !strings.HasPrefix(path, prefix) {
			continue
		}
		self := serviceOf(path + "/")
		for pkg, ds := range deps(t, filepath.Clean(dir)) {
			for _, d := range ds {
				other := serviceOf(d)
				switch {
				case other == "":
				case strings.HasPrefix(path, prefix+"libs"):
					t.Errorf("libs package %s imports service package %s", pkg, d)
				case path == prefix+"packaging" && other == "bridge":
					// the release tool packages the bridge: its unit and paths come from
					// the bridge's own service package, so the package and the service agree
				case self != "outpost" && other != self:
					t.Errorf("service %s (%s) imports another service's package %s: services meet on the bus", self, pkg, d)
				}
			}
		}
	}
}
