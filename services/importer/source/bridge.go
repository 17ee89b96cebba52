package source

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Prober sends probes to a source's site and hands back their results: the importer's
// side of the bridge. A probe may run more than once (its bridge died and a sibling took
// it, or it was sent again after its deadline): each Chunk names its execution, so a
// source never mixes the chunks of two executions.
type Prober interface {
	// Probe sends one probe and calls each for every non-final result of it, in order per
	// execution; it returns the final result of the execution that finished first.
	Probe(ctx context.Context, kind, target string, params any, each func(Chunk) error) (envelope.Result, error)
}

// Chunk is one streamed result of a probe and the execution it belongs to.
type Chunk struct {
	Exec   string
	Result envelope.Result
}

// ProbeError is a probe that ended in error: its code (libs/probes) and message.
type ProbeError struct {
	Kind    string
	Status  envelope.Status
	Code    string
	Message string
}

func (e *ProbeError) Error() string {
	return fmt.Sprintf("%s probe %s: %s: %s", e.Kind, e.Status, e.Code, e.Message)
}

// FinalError turns a final result that is not ok into a *ProbeError (nil when ok).
func FinalError(r envelope.Result) error {
	if r.Status == envelope.StatusOK || r.Status == envelope.StatusPartial {
		return nil
	}
	e := &ProbeError{Kind: r.Kind, Status: r.Status, Code: string(r.Status)}
	if r.Error != nil {
		e.Code, e.Message = r.Error.Code, r.Error.Message
	}
	return e
}

// BridgeSource is a Source read through a site's bridges.
type BridgeSource interface {
	Source
	// Kind is the probe kind the source sends.
	Kind() string
}

// NewBridgeSource makes the source a stored definition describes (sql, ldap or rest; a
// site file is spooled with SpoolSiteFile and read as a file).
func NewBridgeSource(def api.Source, p Prober) (BridgeSource, error) {
	if err := CheckDefinition(def); err != nil {
		return nil, err
	}
	switch def.Type {
	case api.SourceSQL:
		return newSQL(def, p)
	case api.SourceLDAP:
		return newLDAP(def, p)
	case api.SourceREST:
		return newREST(def, p)
	}
	return nil, fmt.Errorf("source type %q is not paged: a site file is spooled (SpoolSiteFile)", def.Type)
}

var sourceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// CheckDefinition reports every problem of a source definition at once: unknown type,
// unknown or missing params, values that do not parse.
func CheckDefinition(def api.Source) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !sourceName.MatchString(def.Name) {
		bad("name %q: letters, digits, - and _ (up to 64), starting with a letter or digit", def.Name)
	}
	if def.Site == "" {
		bad("site: missing (--site: the site whose bridges reach the source)")
	}
	specs, ok := api.SourceParams[def.Type]
	if !ok {
		bad("type %q: want one of %s", def.Type, strings.Join(api.SourceTypes, ", "))
		return errors.Join(errs...)
	}
	if def.Type == api.SourceFile && def.Credential != "" {
		bad("credential: a site file is read by the bridge itself and takes none")
	}
	known := func(k string) bool {
		for _, s := range specs {
			if s.Key == k || matchPattern(s.Key, k) {
				return true
			}
		}
		return false
	}
	keys := make([]string, 0, len(def.Params))
	for k := range def.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !known(k) {
			var names []string
			for _, s := range specs {
				names = append(names, s.Key)
			}
			bad("param %s: unknown for a %s source (known: %s)", k, def.Type, strings.Join(names, ", "))
		}
	}
	for _, s := range specs {
		if s.Required && strings.TrimSpace(def.Params[s.Key]) == "" {
			bad("param %s: required for a %s source (%s)", s.Key, def.Type, s.Doc)
		}
	}
	for _, k := range []string{"page_size", "port", "header_row", "chunk_bytes"} {
		if v, ok := def.Params[k]; ok {
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				bad("param %s=%q: want a whole number", k, v)
			}
		}
	}
	if v, ok := def.Params["timeout"]; ok {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			bad("param timeout=%q: want a duration such as 60s", v)
		}
	}
	switch def.Type {
	case api.SourceSQL:
		errs = append(errs, checkSQL(def.Params)...)
	case api.SourceLDAP:
		if _, err := ldapOUs(def.Params); err != nil {
			errs = append(errs, err)
		}
	case api.SourceREST:
		errs = append(errs, checkREST(def.Params)...)
	case api.SourceFile:
		if p := def.Params["path"]; p != "" && !strings.HasPrefix(p, "/") {
			bad("param path=%q: want an absolute path", p)
		}
		if _, err := DetectFormat(def.Params["path"], def.Params["format"]); err != nil {
			bad("param format: %v", err)
		}
	}
	return errors.Join(errs...)
}

// matchPattern matches ou.N.base against ou.3.base.
func matchPattern(pattern, key string) bool {
	pp, kp := strings.Split(pattern, "."), strings.Split(key, ".")
	if len(pp) != len(kp) {
		return false
	}
	for i := range pp {
		switch {
		case pp[i] == "N":
			if n, err := strconv.Atoi(kp[i]); err != nil || n < 1 {
				return false
			}
		case pp[i] == "NAME":
			if kp[i] == "" {
				return false
			}
		case pp[i] != kp[i]:
			return false
		}
	}
	return true
}

func intParam(p map[string]string, k string, def int) int {
	if n, err := strconv.Atoi(p[k]); err == nil && n > 0 {
		return n
	}
	return def
}

func durationParam(p map[string]string, k string, def time.Duration) string {
	if d, err := time.ParseDuration(p[k]); err == nil && d > 0 {
		return d.String()
	}
	return def.String()
}

// Execs names the executions of a streamed probe: a chunk whose sequence does not follow
// the last one of its bridge starts a new execution (the bridge restarted under the same
// name and ran the probe again from its start).
type Execs struct{ at map[string][2]int } // probe/agent → generation, last seq

// Key names the execution r belongs to.
func (e *Execs) Key(r envelope.Result) string {
	if e.at == nil {
		e.at = map[string][2]int{}
	}
	base := r.Probe + "/" + r.Agent
	st, seen := e.at[base]
	if seen && r.Seq <= st[1] {
		st[0]++
	}
	st[1] = r.Seq
	e.at[base] = st
	return base + "/" + strconv.Itoa(st[0])
}
