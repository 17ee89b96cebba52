package orchestration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/redact"
)

// SourcePrefix names a workflow as the source of what it writes to the CMDB:
// "workflow:<name>", shown in the CI's attribute sources and history. The CMDB ranks
// sources per attribute (manual > sccm > discovery > import by default); a workflow is
// unlisted, so it sets attributes nobody stronger owns, and a cmdb_update that the CMDB
// refuses to apply fails with the owner named.
const SourcePrefix = "workflow:"

// identityAttrs are the attributes the CMDB identifies a device by (serial; name and IP):
// sent back unchanged with the update so that the payload lands on the CI found.
var identityAttrs = []string{"serial_number", "name", "ip_address"}

// cmdbUpdate finds the one CI that params.ci names (class and attribute values), then
// sends a CI payload from source workflow:<name> setting params.set on it, and checks the
// CMDB's outcome: which attributes changed, or which stronger source kept its value.
func (s *service) cmdbUpdate(ctx context.Context, workflow string, params map[string]any) (any, error) {
	sel, _ := params["ci"].(map[string]any)
	set, _ := params["set"].(map[string]any)
	class, _ := sel["class"].(string)
	if class == "" || len(set) == 0 {
		return nil, permanent("params.ci.class and params.set are required")
	}
	filters := map[string]string{}
	for k, v := range sel {
		if k != "class" {
			filters[k] = format(v)
		}
	}
	// the CMDB not running yet (the hub restarting) is waited for, not the step's failure
	list, err := bus.WhenAvailable(ctx, 20*time.Second, func(ctx context.Context) (cmdbapi.ListResponse, error) {
		return cmdbapi.List.Call(ctx, s.deps.NC, cmdbapi.ListRequest{Class: class, Filters: filters, Limit: 2})
	})
	if err != nil {
		return nil, fmt.Errorf("find the CI: %w", err)
	}
	what := describe(class, filters)
	switch len(list.Items) {
	case 0:
		return nil, permanent("no CI is %s (`outpost ci ls --class %s`)", what, class)
	case 1:
	default:
		return nil, permanent("more than one CI is %s: name an identifying attribute that tells them apart", what)
	}
	d, err := cmdbapi.Get.Call(ctx, s.deps.NC, cmdbapi.IDRequest{ID: list.Items[0].ID})
	if err != nil {
		return nil, fmt.Errorf("read CI %s: %w", list.Items[0].ID, err)
	}
	attrs := map[string]any{}
	for _, k := range identityAttrs {
		if v, ok := d.Attributes[k]; ok && v != nil && v != "" {
			attrs[k] = v
		}
	}
	for k, v := range set {
		attrs[k] = v
	}
	source := SourcePrefix + workflow
	payload := envelope.CIPayload{Source: source, Observed: s.now(),
		Items: []envelope.CIItem{{Ref: "ci", Class: d.Class, Attributes: attrs}}}
	out, err := cmdbapi.Ingest.Call(ctx, s.deps.NC, cmdbapi.IngestRequest{Payload: payload})
	if err != nil {
		var se *bus.ServiceError
		if errors.As(err, &se) && se.Code == 400 {
			return nil, permanent("the CMDB refused the update: %s", se.Message)
		}
		return nil, fmt.Errorf("CMDB ingest: %w", err)
	}
	if len(out.Conflicts) > 0 || len(out.Created) > 0 {
		return nil, permanent("the CMDB did not take the update for CI %s (created %d, conflicts %d): its identifying attributes changed meanwhile?", d.ID, len(out.Created), len(out.Conflicts))
	}
	var changed []string
	for _, c := range out.Updated {
		if c.ID == d.ID {
			changed = c.Attributes
		}
	}
	// an attribute neither changed nor already equal was kept by a stronger source
	var kept []string
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if slices.Contains(changed, k) || format(d.Attributes[k]) == format(set[k]) {
			continue
		}
		kept = append(kept, fmt.Sprintf("%s (owned by %s)", k, d.Sources[k].Source))
	}
	if len(kept) > 0 {
		return nil, permanent("the CMDB kept its values of %s: those sources rank above %s", strings.Join(kept, ", "), source)
	}
	if changed == nil {
		changed = []string{}
	}
	return map[string]any{"ci": d.ID, "class": d.Class, "name": d.Name, "source": source, "changed": changed}, nil
}

func describe(class string, filters map[string]string) string {
	parts := []string{"a " + class}
	keys := make([]string, 0, len(filters))
	for k := range filters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%s", k, filters[k]))
	}
	return strings.Join(parts, " with ")
}

// notify sends a webhook (POST by default) with the attempt's idempotency key in the
// Idempotency-Key header, so a receiver can drop a repeat. A 2xx is success; 4xx other than
// 408/429 will not get better with another attempt.
func (s *service) notify(ctx context.Context, key string, params map[string]any) (any, error) {
	raw, _ := params["url"].(string)
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, permanent("params.url %s: want an absolute http(s) URL", redact.URLString(raw))
	}
	method := "POST"
	if m, ok := params["method"].(string); ok && m != "" {
		method = m
	}
	var body []byte
	switch b := params["body"].(type) {
	case nil:
		body = []byte("{}")
	case string:
		body = []byte(b)
	default:
		body, _ = json.Marshal(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, permanent("params.url %s: %v", redact.URL(u), redact.HTTPError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	if h, ok := params["headers"].(map[string]any); ok {
		for k, v := range h {
			req.Header.Set(k, format(v))
		}
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := s.httpc.Do(req)
	if err != nil {
		// *url.Error prints the whole URL: keep only its cause, and the host.
		return nil, fmt.Errorf("webhook %s: %w", redact.URL(u), redact.HTTPError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		msg := fmt.Sprintf("webhook %s answered %s", redact.URL(u), resp.Status)
		if resp.StatusCode < 500 && resp.StatusCode != 408 && resp.StatusCode != 429 {
			return nil, permanent("%s", msg)
		}
		return nil, errors.New(msg)
	}
	return map[string]any{"status": resp.StatusCode}, nil
}
