package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// newImport is `outpost import`: runs over files, their rows, maps.
func newImport(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "import", Short: "Import files into the CMDB through transform maps; runs and every row's outcome"}
	cmd.AddCommand(newImportRun(g), newImportRuns(g), newImportMaps(g), newImportRetransform(g), newImportSchedules(g), newImportSource(g))
	return cmd
}

func newImportRun(g *globals) *cobra.Command {
	var file, mapPath string
	var opts api.FileOptions
	var wait bool
	cmd := &cobra.Command{
		Use:   "run (--file PATH | SOURCE) --map MAP.yaml [--format F] [--sheet S] [--header-row N] [--record-path P] [--wait]",
		Short: "Upload a file (streamed), or read a stored source through its site's bridge, and import it with a transform map",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if file != "" || mapPath == "" {
					return usagef("a stored source (%s) takes --map and no --file", args[0])
				}
				return g.runSource(cmd, args[0], mapPath, wait)
			}
			if file == "" || mapPath == "" {
				return usagef("--file and --map are required")
			}
			if opts.HeaderRow < 0 {
				return usagef("--header-row %d: rows count from 1", opts.HeaderRow)
			}
			mapText, err := os.ReadFile(mapPath)
			if err != nil {
				return usagef("--map: %v", err)
			}
			c, _ := g.client()
			run, err := uploadImport(cmd.Context(), c, file, mapPath, mapText, opts)
			if err != nil {
				return err
			}
			return g.finishImport(cmd.Context(), c, run, wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "the data file: CSV, XLSX, XML, JSON or JSON Lines")
	f.StringVar(&mapPath, "map", "", "the transform map (YAML)")
	f.StringVar(&opts.Format, "format", "", "csv, xlsx, xml, json or jsonl (default: from the file name)")
	f.StringVar(&opts.Sheet, "sheet", "", "XLSX: the sheet to read (default: the first)")
	f.IntVar(&opts.HeaderRow, "header-row", 0, "CSV, XLSX: the row holding the column names (default 1)")
	f.StringVar(&opts.RecordPath, "record-path", "", "XML: path of one record (/servers/server); JSON: path to the array of records (/data/servers)")
	f.BoolVar(&wait, "wait", false, "wait for the run to finish, with progress on a terminal")
	return cmd
}

// uploadImport streams the map and the file as multipart (map first, so that a bad map is
// refused before the file is sent in full); the file is never held in memory.
func uploadImport(ctx context.Context, c *client, file, mapPath string, mapText []byte, opts api.FileOptions) (api.Run, error) {
	var run api.Run
	err := postUpload(ctx, c, "/api/v1/imports/runs", fileFields(opts), mapPart{path: mapPath, text: mapText}, file, &run)
	return run, err
}

// fileFields are the file options as form fields.
func fileFields(opts api.FileOptions) [][2]string {
	f := [][2]string{{"format", opts.Format}, {"sheet", opts.Sheet}, {"record_path", opts.RecordPath}}
	if opts.HeaderRow > 0 {
		f = append(f, [2]string{"header_row", strconv.Itoa(opts.HeaderRow)})
	}
	return f
}

// mapPart is the map of an upload: a file's text, or a stored map's name.
type mapPart struct {
	path string
	text []byte
	name string
}

// postUpload streams fields, the map and then the file as multipart/form-data to path.
func postUpload(ctx context.Context, c *client, path string, fields [][2]string, m mapPart, file string, out any) error {
	f, err := os.Open(file)
	if err != nil {
		return usagef("--file: %v", err)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			for _, kv := range fields {
				if kv[1] != "" {
					if err := mw.WriteField(kv[0], kv[1]); err != nil {
						return err
					}
				}
			}
			if m.name != "" {
				if err := mw.WriteField("map_name", m.name); err != nil {
					return err
				}
			} else if m.text != nil {
				w, err := mw.CreateFormFile("map", filepath.Base(m.path))
				if err != nil {
					return err
				}
				if _, err := w.Write(m.text); err != nil {
					return err
				}
			}
			w, err := mw.CreateFormFile("file", filepath.Base(file))
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, pr)
	if err != nil {
		return usagef("--server %q: %v", c.base, err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// No overall timeout: a large file takes as long as it takes; ctx still cancels.
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s — is `outpost up` running? (%v)", c.base, err)
	}
	defer resp.Body.Close()
	return c.answer(resp, req.Method, path, out)
}

// readMap reads --map: a YAML file, or (with no such file and a name's shape) a stored map.
func readMap(arg string) (mapPart, error) {
	text, err := os.ReadFile(arg)
	if err == nil {
		return mapPart{path: arg, text: text}, nil
	}
	if os.IsNotExist(err) && !strings.ContainsAny(arg, "./\\") {
		return mapPart{name: arg}, nil
	}
	return mapPart{}, usagef("--map: %v", err)
}

// finishImport prints a started run, or waits for it first.
func (g *globals) finishImport(ctx context.Context, c *client, run api.Run, wait bool) error {
	if wait {
		var err error
		if run, err = waitImport(ctx, c, run.ID, progressWriter(g)); err != nil {
			return err
		}
	}
	if g.output == "json" {
		if err := json.NewEncoder(g.stdout).Encode(run); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(g.stdout, importLine(run))
		if !wait {
			fmt.Fprintf(g.stdout, "`outpost import runs show %s` follows it\n", run.ID)
		} else if run.Counters.Error > 0 {
			fmt.Fprintf(g.stdout, "rows in error: `outpost import runs show %s --rows error`\n", run.ID)
		}
	}
	if wait && run.State != api.StateCompleted {
		return fmt.Errorf("import run %s %s: %s", run.ID, run.State, run.Reason)
	}
	return nil
}

func importLine(r api.Run) string {
	c := r.Counters
	return fmt.Sprintf("run %s %-9s staged %d  inserted %d  updated %d  unchanged %d  ignored %d  skipped %d  error %d",
		r.ID, r.State, c.Staged, c.Inserted, c.Updated, c.Unchanged, c.Ignored, c.Skipped, c.Error)
}

func waitImport(ctx context.Context, c *client, id string, progress io.Writer) (api.Run, error) {
	for {
		var r api.Run
		if err := c.do(ctx, "GET", "/api/v1/imports/runs/"+url.PathEscape(id), nil, &r); err != nil {
			return r, err
		}
		fmt.Fprintf(progress, "\r%s %s\x1b[K", progressBar(int(r.Counters.Done()), int(r.Counters.Staged), 24), importLine(r))
		if api.Terminal(r.State) {
			fmt.Fprintln(progress)
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func newImportRuns(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Short: "Import runs: list, show with each row's outcome, re-transform"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List import runs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.RunsResponse
			return g.showList(cmd, "/api/v1/imports/runs", "runs", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "RUN\tSTATE\tFILE\tMAP\tSTAGED\tINSERTED\tUPDATED\tUNCHANGED\tIGNORED\tSKIPPED\tERROR")
				for _, r := range out.Runs {
					c := r.Counters
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", r.ID, r.State, clip(r.Filename, 30), r.MapName,
						c.Staged, c.Inserted, c.Updated, c.Unchanged, c.Ignored, c.Skipped, c.Error)
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "runs")
	var rows string
	var rowLimit int
	show := &cobra.Command{
		Use: "show RUN [--rows OUTCOME|all]", Short: "An import run's counters, and its rows with --rows (error, inserted, …, or all)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var run api.Run
			if err := c.do(cmd.Context(), "GET", "/api/v1/imports/runs/"+url.PathEscape(args[0]), nil, &run); err != nil {
				return err
			}
			var page api.RowsResponse
			if rows != "" {
				path := "/api/v1/imports/runs/" + url.PathEscape(args[0]) + "/rows"
				if rows != "all" {
					path += "?outcome=" + url.QueryEscape(rows)
				}
				raw, err := listPages(cmd.Context(), c, path, "rows", rowLimit)
				if err != nil {
					return err
				}
				if err := json.Unmarshal(raw, &page); err != nil {
					return err
				}
			}
			if g.output == "json" {
				out := map[string]any{"run": run}
				if rows != "" {
					out["rows"] = page.Rows
				}
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintln(g.stdout, importLine(run))
			if run.Reason != "" {
				fmt.Fprintf(g.stdout, "  reason: %s\n", run.Reason)
			}
			fmt.Fprintf(g.stdout, "  file %s, map %s (class %s, source %s), created %s\n", orDash(run.Filename), run.MapName, run.Class, run.Source,
				run.Created.Format(time.RFC3339))
			if rows == "" {
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ROW\tOUTCOME\tWHERE\tREASON / CI")
			for _, r := range page.Rows {
				detail := r.Reason
				if detail == "" {
					detail = r.CI
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.N, r.Outcome, position(r.Position), detail)
			}
			return tw.Flush()
		},
	}
	show.Flags().StringVar(&rows, "rows", "", "show rows with this outcome (inserted, updated, unchanged, ignored, skipped, error) or all")
	limitFlag(show, &rowLimit, "rows")
	// Also here, where operators look for it beside the run they debug.
	re := newImportRetransform(g)
	cmd.AddCommand(ls, show, re)
	return cmd
}

// newImportRetransform is `outpost import retransform RUN --map MAP.yaml`: the debugging
// loop — a changed map over a run's staged rows, without fetching or uploading again.
func newImportRetransform(g *globals) *cobra.Command {
	var mapArg string
	var wait bool
	re := &cobra.Command{
		Use: "retransform RUN --map MAP.yaml|NAME [--wait]", Short: "Run a changed map over a run's staged rows, without fetching or uploading again",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mapArg == "" {
				return usagef("--map is required")
			}
			m, err := readMap(mapArg)
			if err != nil {
				return err
			}
			c, _ := g.client()
			var run api.Run
			if err := c.do(cmd.Context(), "POST", "/api/v1/imports/runs/"+url.PathEscape(args[0])+"/retransform",
				api.MapSource{Map: string(m.text), MapFile: filepath.Base(m.path), MapName: m.name}, &run); err != nil {
				return err
			}
			return g.finishImport(cmd.Context(), c, run, wait)
		},
	}
	re.Flags().StringVar(&mapArg, "map", "", "the changed transform map (YAML file), or a stored map's name")
	re.Flags().BoolVar(&wait, "wait", false, "wait for the run to finish")
	return re
}

func newImportMaps(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "maps", Short: "Transform maps: check, store (versioned), list, show, dry-run on a file"}
	check := &cobra.Command{
		Use: "check MAP.yaml", Short: "Check a map against the CMDB's classes: every problem with file, line and field", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := os.ReadFile(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			c, _ := g.client()
			var out api.ValidateResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/imports/maps/validate",
				api.ValidateRequest{Map: string(text), MapFile: filepath.Base(args[0])}, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "map %s ok: class %s, coalesce [%s], fields %s\n", out.Name, out.Class,
				strings.Join(out.Coalesce, ", "), strings.Join(out.Fields, ", "))
			return nil
		},
	}
	add := &cobra.Command{
		Use: "add MAP.yaml", Short: "Store a map (checked first) as the next version of its name", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := os.ReadFile(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			c, _ := g.client()
			var out api.StoredMap
			if err := c.do(cmd.Context(), "POST", "/api/v1/imports/maps", api.MapSource{Map: string(text), MapFile: filepath.Base(args[0])}, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			if out.Unchanged {
				fmt.Fprintf(g.stdout, "map %s v%d unchanged: the same text is stored already\n", out.Name, out.Version)
				return nil
			}
			fmt.Fprintf(g.stdout, "map %s v%d stored: class %s, coalesce [%s], fields %s\n", out.Name, out.Version, out.Class,
				strings.Join(out.Coalesce, ", "), strings.Join(out.Fields, ", "))
			return nil
		},
	}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List stored maps (latest versions)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.MapsResponse
			return g.showList(cmd, "/api/v1/imports/maps", "maps", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "MAP\tVERSION\tCLASS\tSOURCE\tCOALESCE\tFIELDS\tSTORED")
				for _, m := range out.Maps {
					fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Version, m.Class, m.Source, orDash(strings.Join(m.Coalesce, ",")),
						len(m.Fields), m.Created.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "maps")
	var version int
	show := &cobra.Command{
		Use: "show NAME [--version N]", Short: "A stored map's YAML (the latest version, or --version N)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			path := "/api/v1/imports/maps/" + url.PathEscape(args[0])
			if version > 0 {
				path += "?version=" + strconv.Itoa(version)
			}
			var out api.StoredMap
			if err := c.do(cmd.Context(), "GET", path, nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "# map %s v%d, stored %s\n%s", out.Name, out.Version, out.Created.Format(time.RFC3339), out.Map)
			return nil
		},
	}
	show.Flags().IntVar(&version, "version", 0, "a version (default: the latest)")
	var file string
	var rows int
	var opts api.FileOptions
	test := &cobra.Command{
		Use:   "test MAP.yaml|NAME --file PATH [--rows N]",
		Short: "Dry run: the map over the first N rows of a file, each row's target attributes, likely outcome and reason; nothing written",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			if rows < 1 || rows > api.MaxTestRows {
				return usagef("--rows %d: want 1 to %d", rows, api.MaxTestRows)
			}
			m, err := readMap(args[0])
			if err != nil {
				return err
			}
			c, _ := g.client()
			var out api.MapTestResponse
			fields := append(fileFields(opts), [2]string{"rows", strconv.Itoa(rows)})
			if err := postUpload(cmd.Context(), c, "/api/v1/imports/maps/test", fields, m, file, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			counts := api.Counters{}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ROW\tWHERE\tOUTCOME\tTARGET / REASON")
			for _, r := range out.Rows {
				counts.Add(r.Outcome, 1)
				detail := r.Reason
				if len(r.Target) > 0 {
					detail = attrs(r.Target)
					if r.Reason != "" {
						detail += "  — " + r.Reason
					}
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.N, position(r.Position), r.Outcome, detail)
				for _, rel := range r.Related {
					fmt.Fprintf(tw, "\t\t  %s →\t%s %s\n", rel.Relation, rel.Class, attrs(rel.Attributes))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			more := ""
			if out.More {
				more = " (the file has more rows)"
			}
			fmt.Fprintf(g.stdout, "map %s (class %s): %d rows tried%s — would be inserted %d, updated %d, unchanged %d, ignored %d, skipped %d, error %d\n",
				out.Map.Name, out.Map.Class, len(out.Rows), more, counts.Inserted, counts.Updated, counts.Unchanged, counts.Ignored, counts.Skipped, counts.Error)
			return nil
		},
	}
	tf := test.Flags()
	tf.StringVar(&file, "file", "", "the data file to try the map on")
	tf.IntVar(&rows, "rows", 10, "how many rows to try")
	tf.StringVar(&opts.Format, "format", "", "csv, xlsx, xml, json or jsonl (default: from the file name)")
	tf.StringVar(&opts.Sheet, "sheet", "", "XLSX: the sheet to read (default: the first)")
	tf.IntVar(&opts.HeaderRow, "header-row", 0, "CSV, XLSX: the row holding the column names (default 1)")
	tf.StringVar(&opts.RecordPath, "record-path", "", "XML: path of one record; JSON: path to the array of records")
	cmd.AddCommand(check, add, ls, show, test)
	return cmd
}

// attrs shows attributes as k=v, sorted.
func attrs(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, " ")
}

func newImportSchedules(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "schedules", Short: "Imports on a cron schedule: a file kept with the schedule, a stored map"}
	var cronSpec, mapName, file string
	var opts api.FileOptions
	add := &cobra.Command{
		Use:   "add NAME --cron SPEC --map NAME --file PATH",
		Short: "Import a file on a cron schedule (UTC) with a stored map's latest version; one run per slot across replicas",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cronSpec == "" || mapName == "" || file == "" {
				return usagef("--cron, --map (a stored map's name: `outpost import maps add`) and --file are required")
			}
			c, _ := g.client()
			var out api.Schedule
			fields := append([][2]string{{"name", args[0]}, {"cron", cronSpec}}, fileFields(opts)...)
			if err := postUpload(cmd.Context(), c, "/api/v1/imports/schedules", fields, mapPart{name: mapName}, file, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "schedule %s added: %s with map %s, next %s\n", out.Name, out.File, out.MapName, when(out.Next))
			return nil
		},
	}
	af := add.Flags()
	af.StringVar(&cronSpec, "cron", "", `cron spec, UTC: "0 2 * * *", @hourly, "@every 6h"`)
	af.StringVar(&mapName, "map", "", "a stored map's name (`outpost import maps add MAP.yaml`)")
	af.StringVar(&file, "file", "", "the data file, kept with the schedule")
	af.StringVar(&opts.Format, "format", "", "csv, xlsx, xml, json or jsonl (default: from the file name)")
	af.StringVar(&opts.Sheet, "sheet", "", "XLSX: the sheet to read (default: the first)")
	af.IntVar(&opts.HeaderRow, "header-row", 0, "CSV, XLSX: the row holding the column names (default 1)")
	af.StringVar(&opts.RecordPath, "record-path", "", "XML: path of one record; JSON: path to the array of records")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List import schedules", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.SchedulesResponse
			return g.showList(cmd, "/api/v1/imports/schedules", "schedules", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SCHEDULE\tCRON\tMAP\tFILE\tNEXT\tLAST RUN\tLAST ERROR")
				for _, s := range out.Schedules {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Cron, s.MapName, clip(s.File, 30), when(s.Next), orDash(s.LastRun), orDash(clip(s.LastErr, 60)))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "schedules")
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove an import schedule and its file (runs it started stay)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var out api.Schedule
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/imports/schedules/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "schedule %s removed\n", out.Name)
			return nil
		},
	}
	cmd.AddCommand(add, ls, rm)
	return cmd
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// position shows where a row is.
func position(p api.Position) string { return orDash(p.String()) }
