package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
)

func newAudit(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit trail: every write made through the API"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List writes, oldest first: when, who, what, from where", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out gatewayapi.AuditList
			return g.showList(cmd, "/api/v1/audit", "events", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tACTOR\tROLE\tACTION\tTARGET\tSTATUS\tFROM")
				for _, e := range out.Events {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Time.Local().Format(time.DateTime), e.Actor, e.Role, e.Action, e.Target, e.Status, e.Remote)
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "events")
	cmd.AddCommand(ls)
	return cmd
}

func newClassifiers(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "classifiers", Short: "Discovery classifiers (the rules that name what answered)"}
	cmd.AddCommand(&cobra.Command{
		Use: "reload", Short: "Reload classifier files; a bad set is refused and the old one kept (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/discovery/classifiers/reload", struct{}{}, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(m map[string]any) string {
				return fmt.Sprintf("%v classifiers loaded from %v", m["classifiers"], m["files"])
			})
		},
	})
	return cmd
}

// ciExtras are the CMDB commands beyond ls/show/rel/history/conflicts.
func ciExtras(g *globals, cmd *cobra.Command) {
	var depth int
	graph := &cobra.Command{
		Use: "graph ID [--depth N]", Short: "Show the neighbourhood graph of a CI", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/cis/" + url.PathEscape(args[0]) + "/graph"
			if depth > 0 {
				path += fmt.Sprintf("?depth=%d", depth)
			}
			return g.show(cmd, path, func(raw []byte) error {
				var gr cmdbapi.Graph
				if err := json.Unmarshal(raw, &gr); err != nil {
					return err
				}
				return printGraph(g.stdout, gr)
			})
		},
	}
	graph.Flags().IntVar(&depth, "depth", 0, "hops from the CI (default 1, at most 5)")
	cmd.AddCommand(&cobra.Command{
		Use: "counts", Short: "Count CIs by class", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.show(cmd, "/api/v1/cmdb/counts", func(raw []byte) error {
				var c cmdbapi.CountsResponse
				if err := json.Unmarshal(raw, &c); err != nil {
					return err
				}
				return printCounts(g.stdout, c)
			})
		},
	}, &cobra.Command{
		Use: "classes", Short: "Show the class model", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.show(cmd, "/api/v1/cmdb/classes", func(raw []byte) error {
				var c cmdbapi.ClassesResponse
				if err := json.Unmarshal(raw, &c); err != nil {
					return err
				}
				return printClasses(g.stdout, c)
			})
		},
	})
	ingest := &cobra.Command{
		Use: "ingest FILE|-", Short: "Ingest a CI payload (JSON: source, items, relations) now", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			if !json.Valid(data) {
				return usagef("%s is not JSON: give a CI payload ({\"source\":…,\"items\":[…]})", args[0])
			}
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/cis/ingest", json.RawMessage(data), &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			var o cmdbapi.Outcome
			if err := json.Unmarshal(raw, &o); err != nil {
				return err
			}
			return printIngest(g.stdout, o)
		},
	}
	cmd.AddCommand(graph, ingest)
}

func writeLine(w io.Writer, b []byte) error {
	_, err := fmt.Fprintf(w, "%s\n", b)
	return err
}
