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
	cmd.AddCommand(newImportRun(g), newImportRuns(g), newImportMaps(g), newImportSource(g))
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
	f, err := os.Open(file)
	if err != nil {
		return run, usagef("--file: %v", err)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			for _, kv := range [][2]string{{"format", opts.Format}, {"sheet", opts.Sheet}, {"record_path", opts.RecordPath}} {
				if kv[1] != "" {
					if err := mw.WriteField(kv[0], kv[1]); err != nil {
						return err
					}
				}
			}
			if opts.HeaderRow > 0 {
				if err := mw.WriteField("header_row", strconv.Itoa(opts.HeaderRow)); err != nil {
					return err
				}
			}
			w, err := mw.CreateFormFile("map", filepath.Base(mapPath))
			if err != nil {
				return err
			}
			if _, err := w.Write(mapText); err != nil {
				return err
			}
			w, err = mw.CreateFormFile("file", filepath.Base(file))
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
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/api/v1/imports/runs", pr)
	if err != nil {
		return run, usagef("--server %q: %v", c.base, err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// No overall timeout: a large file takes as long as it takes; ctx still cancels.
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(req)
	if err != nil {
		return run, fmt.Errorf("cannot reach %s — is `outpost up` running? (%v)", c.base, err)
	}
	defer resp.Body.Close()
	err = c.answer(resp, req.Method, "/api/v1/imports/runs", &run)
	return run, err
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
	var mapPath string
	var wait bool
	re := &cobra.Command{
		Use: "retransform RUN --map MAP.yaml [--wait]", Short: "Run a changed map over a run's staged rows, without uploading again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mapPath == "" {
				return usagef("--map is required")
			}
			text, err := os.ReadFile(mapPath)
			if err != nil {
				return usagef("--map: %v", err)
			}
			c, _ := g.client()
			var run api.Run
			if err := c.do(cmd.Context(), "POST", "/api/v1/imports/runs/"+url.PathEscape(args[0])+"/retransform",
				api.MapSource{Map: string(text), MapFile: filepath.Base(mapPath)}, &run); err != nil {
				return err
			}
			return g.finishImport(cmd.Context(), c, run, wait)
		},
	}
	re.Flags().StringVar(&mapPath, "map", "", "the changed transform map (YAML)")
	re.Flags().BoolVar(&wait, "wait", false, "wait for the run to finish")
	cmd.AddCommand(ls, show, re)
	return cmd
}

func newImportMaps(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "maps", Short: "Transform maps"}
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
	cmd.AddCommand(check)
	return cmd
}

// position shows where a row is.
func position(p api.Position) string {
	var parts []string
	if p.Sheet != "" {
		parts = append(parts, fmt.Sprintf("sheet %s row %d", p.Sheet, p.Row))
	}
	if p.Cell != "" {
		parts = append(parts, "cell "+p.Cell)
	}
	if p.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d", p.Line))
	}
	if p.Record != "" {
		parts = append(parts, p.Record)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
