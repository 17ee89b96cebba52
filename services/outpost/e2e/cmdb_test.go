package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The CMDB runs inside `outpost up`: a payload ingested through the API is listed by
// `outpost ci ls`, and the same payload again changes nothing.
func TestCMDBThroughTheHub(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	payload := map[string]any{
		"source": "import", "observed": time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), // not a fixed day: the hub marks old CIs stale by its real clock
		"items": []map[string]any{
			{"ref": "h", "class": "linux_server", "attributes": map[string]any{"name": "web-01", "serial_number": "SN-123", "os": "Debian"}},
			{"ref": "n", "class": "network_adapter", "parent": "h", "attributes": map[string]any{"mac_address": "52:54:00:12:34:56"}},
		},
	}
	var first, second map[string]any
	h.mustAPI(t, "POST", "/api/v1/cis/ingest", payload, &first)
	h.mustAPI(t, "POST", "/api/v1/cis/ingest", payload, &second)
	if first["created"] == nil || second["created"] != nil || second["updated"] != nil {
		t.Fatalf("ingest twice: %v then %v", first, second)
	}
	out, err := exec.Command(filepath.Join(binDir, "outpost"), "--server", "http://"+h.http, "--data", h.dir,
		"ci", "ls", "--class", "server", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("ci ls: %v %s", err, out)
	}
	var items []map[string]any
	if err := json.Unmarshal(out, &items); err != nil || len(items) != 1 || items[0]["class"] != "linux_server" {
		t.Fatalf("ci ls --class server: %v %s", err, out)
	}
	id := items[0]["id"].(string)
	out, err = exec.Command(filepath.Join(binDir, "outpost"), "--server", "http://"+h.http, "--data", h.dir, "ci", "show", id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SN-123") {
		t.Fatalf("ci show: %v %s", err, out)
	}
	// Bad input is refused with the field named, nothing written.
	code, body := h.api(t, "POST", "/api/v1/cis/ingest", map[string]any{"source": "import", "items": []map[string]any{{"ref": "x", "class": "spaceship", "attributes": map[string]any{"name": "x"}}}})
	if code != 400 || !strings.Contains(string(body), "class") {
		t.Fatalf("bad payload: %d %s", code, body)
	}
}
