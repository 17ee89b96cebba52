package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

func newCI(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ci", Short: "Query the CMDB: configuration items, relations, history, conflicts"}
	var class, search string
	var limit int
	var all bool
	ls := &cobra.Command{
		Use: "ls", Short: "List CIs (a class includes its subclasses)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _ := g.client()
			var items []cmdbapi.CI
			cursor := ""
			for limit <= 0 || len(items) < limit {
				q := url.Values{}
				if class != "" {
					q.Set("class", class)
				}
				if search != "" {
					q.Set("search", search)
				}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				page := 500 // the API's largest page
				if limit > 0 {
					page = min(page, limit-len(items))
				}
				q.Set("limit", fmt.Sprint(page))
				var resp cmdbapi.ListResponse
				if err := c.do(cmd.Context(), "GET", "/api/v1/cis?"+q.Encode(), nil, &resp); err != nil {
					return err
				}
				items = append(items, resp.Items...)
				if !all || resp.NextCursor == "" {
					break
				}
				cursor = resp.NextCursor
			}
			if items == nil {
				items = []cmdbapi.CI{}
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(items)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCLASS\tNAME\tATTRIBUTES")
			for _, it := range items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.ID, it.Class, it.Name, summary(it.Attributes))
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&class, "class", "", "class (subclasses included), e.g. server, linux_server")
	ls.Flags().StringVar(&search, "search", "", "text to find in name, IP, serial or MAC")
	ls.Flags().IntVar(&limit, "limit", 0, "at most this many CIs (default: all)")
	ls.Flags().BoolVar(&all, "all", true, "follow the cursor through every page")
	cmd.AddCommand(ls)
	for _, sub := range []struct {
		use, short, path string
		table            func(raw []byte) error
	}{
		{"show ID", "Show one CI: attributes, relations, recent history", "", func(raw []byte) error {
			var d cmdbapi.Detail
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			return printCI(g.stdout, d)
		}},
		{"rel ID", "Show the relations of a CI, both directions", "/relations", func(raw []byte) error {
			var r cmdbapi.RelResponse
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			return printRelations(g.stdout, r.Outgoing, r.Incoming)
		}},
		{"history ID", "Show the change history of a CI with its sources, newest first", "/history", func(raw []byte) error {
			var h cmdbapi.HistoryResponse
			if err := json.Unmarshal(raw, &h); err != nil {
				return err
			}
			return printHistory(g.stdout, h.Items)
		}},
	} {
		cmd.AddCommand(&cobra.Command{
			Use: sub.use, Short: sub.short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.show(cmd, "/api/v1/cis/"+url.PathEscape(args[0])+sub.path, sub.table)
			},
		})
	}
	cmd.AddCommand(&cobra.Command{
		Use: "conflicts", Short: "List identification conflicts (payloads that matched several CIs)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.show(cmd, "/api/v1/cmdb/conflicts", func(raw []byte) error {
				var r cmdbapi.ConflictsResponse
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				return printConflicts(g.stdout, r.Items)
			})
		},
	})
	ciExtras(g, cmd)
	return cmd
}

// summary shows a few attributes on one line, sorted by name.
func summary(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		s := fmt.Sprint(m[k])
		if len(s) > 40 {
			s = s[:37] + "..."
		}
		parts = append(parts, k+"="+s)
		if len(parts) == 4 {
			break
		}
	}
	return strings.Join(parts, " ")
}
