package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// newImportSource is `outpost import source`: data sources read through a site's bridge.
func newImportSource(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "source", Short: "Data sources read through a site's bridge (sql, ldap, rest, file)"}
	var def api.Source
	var params []string
	add := &cobra.Command{
		Use:   "add NAME --site S --type sql|ldap|rest|file [--credential C] --param k=v…",
		Short: "Store a data source; `outpost import run NAME --map MAP.yaml` reads it",
		Long:  "Store a data source read through a site's bridges. Params per type:\n\n" + sourceParamsHelp(),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			def.Name = args[0]
			def.Params = map[string]string{}
			for _, kv := range params {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--param %q: want key=value", kv)
				}
				def.Params[k] = v
			}
			c, _ := g.client()
			var out api.Source
			if err := c.do(cmd.Context(), "POST", "/api/v1/imports/sources", def, &out); err != nil {
				return err
			}
			return g.printSource(out)
		},
	}
	f := add.Flags()
	f.StringVar(&def.Site, "site", "", "the site whose bridges reach the source")
	f.StringVar(&def.Type, "type", "", "sql, ldap, rest or file")
	f.StringVar(&def.Credential, "credential", "", "a stored credential's name (`outpost credentials ls`); sealed to the site's bridges per probe")
	f.StringArrayVar(&params, "param", nil, "key=value, repeatable (see the params per type above)")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List stored data sources", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.SourcesResponse
			return g.showList(cmd, "/api/v1/imports/sources", "sources", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSITE\tTYPE\tCREDENTIAL\tPARAMS")
				for _, s := range out.Sources {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Site, s.Type, s.Credential, clip(paramLine(s.Params), 60))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "sources")
	show := &cobra.Command{
		Use: "show NAME", Short: "A stored data source", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var out api.Source
			if err := c.do(cmd.Context(), "GET", "/api/v1/imports/sources/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return g.printSource(out)
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove a stored data source (its runs keep their copy)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var out api.SourceRemoved
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/imports/sources/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "removed", out.Removed)
			return nil
		},
	}
	cmd.AddCommand(add, ls, show, rm)
	return cmd
}

// runSource starts a run over a stored source: `outpost import run NAME --map MAP.yaml`.
func (g *globals) runSource(cmd *cobra.Command, name, mapPath string, wait bool) error {
	mapText, err := os.ReadFile(mapPath)
	if err != nil {
		return usagef("--map: %v", err)
	}
	c, _ := g.client()
	var run api.Run
	if err := c.do(cmd.Context(), "POST", "/api/v1/imports/sources/"+url.PathEscape(name)+"/runs",
		api.MapSource{Map: string(mapText), MapFile: mapPath}, &run); err != nil {
		return err
	}
	return g.finishImport(cmd.Context(), c, run, wait)
}

func (g *globals) printSource(s api.Source) error {
	if g.output == "json" {
		return json.NewEncoder(g.stdout).Encode(s)
	}
	fmt.Fprintf(g.stdout, "source %s: %s on site %s", s.Name, s.Type, s.Site)
	if s.Credential != "" {
		fmt.Fprintf(g.stdout, " with credential %s", s.Credential)
	}
	fmt.Fprintln(g.stdout)
	for _, k := range sortedKeys(s.Params) {
		fmt.Fprintf(g.stdout, "  %s=%s\n", k, s.Params[k])
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func paramLine(m map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

func sourceParamsHelp() string {
	var b strings.Builder
	for _, t := range api.SourceTypes {
		fmt.Fprintf(&b, "%s:\n", t)
		for _, p := range api.SourceParams[t] {
			req := ""
			if p.Required {
				req = " (required)"
			} else if p.Default != "" {
				req = " (default " + p.Default + ")"
			}
			fmt.Fprintf(&b, "  %-22s %s%s\n", p.Key, p.Doc, req)
		}
	}
	return b.String()
}
