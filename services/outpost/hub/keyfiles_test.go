package hub_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// Secret files are created 0600, and the hub refuses to start on one that group or others
// may read, naming the file and the chmod to run. cmdb.db is 0600 too.
func TestKeyFileModes(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	r.stop(t)
	files := []string{"callout.nk", "hub.xk", "hub.secret", hub.TokenKeyFile, hub.AdminTokenFile,
		filepath.Join("discovery", "credentials.key")}
	for _, f := range append(files, "cmdb.db", "cmdb.db-wal", "cmdb.db-shm") {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			if strings.HasPrefix(f, "cmdb.db-") && os.IsNotExist(err) {
				continue // checkpointed away on a clean stop
			}
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			path := filepath.Join(dir, f)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(path, 0o600)
			cfg := r.cfg
			cfg.Out = &strings.Builder{}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := hub.Run(ctx, cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Fatalf("hub started with %s readable by others: %v", f, err)
			}
		})
	}
}

// API token records are signed with <data>/tokens.key: records the hub did not sign are not
// tokens. A hub whose key changed (or an upgrade from unsigned records) re-issues admin.token.
func TestAdminTokenReissuedWhenItNoLongerVerifies(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	old := r.token(t)
	r.stop(t)
	if err := os.Remove(filepath.Join(dir, hub.TokenKeyFile)); err != nil {
		t.Fatal(err)
	}
	r2 := start(t, dir)
	defer r2.stop(t)
	tok := r2.token(t)
	if tok == old || !strings.Contains(r2.out.String(), tok) {
		t.Fatalf("admin token not re-issued and shown: same=%v", tok == old)
	}
	for _, c := range []struct {
		token string
		want  int
	}{{old, http.StatusUnauthorized}, {tok, http.StatusOK}} {
		req, _ := http.NewRequest("GET", "http://"+r2.cfg.HTTPAddr+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("whoami with the %s token: %d, want %d", map[bool]string{true: "old", false: "new"}[c.token == old], resp.StatusCode, c.want)
		}
	}
}
