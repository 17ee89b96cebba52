package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
)

// outpost services: application services mapped top-down from their entry point.
func newServices(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "services", Short: "Application services: declared by their entry point, mapped through the site's bridges"}
	var add api.AddRequest
	addCmd := &cobra.Command{
		Use: "add NAME --entry https://host:443/path|host:port [--site S] [--depth N] [--every 1h]", Short: "Declare an application service by its entry point",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if add.Entry == "" {
				return usagef("--entry is required: where users reach the service (https://host:443/path or host:port)")
			}
			add.Name = args[0]
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/services", add, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			var a api.AppService
			if err := json.Unmarshal(raw, &a); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "service %s: entry %s:%d on site %s; map it with `outpost services map %s --wait`\n", a.Name, a.Host, a.Port, a.Site, a.Name)
			return nil
		},
	}
	addCmd.Flags().StringVar(&add.Entry, "entry", "", "entry point: https://host:443/path, http://host/ or host:port")
	addCmd.Flags().StringVar(&add.Site, "site", "", "site whose bridges map it (default: the site whose ranges hold the entry)")
	addCmd.Flags().IntVar(&add.Depth, "depth", 0, "hops followed from the entry (default 6)")
	addCmd.Flags().StringVar(&add.Every, "every", "", "re-map period (default 1h; 0: never)")

	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List application services and the state of their maps", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.ListReply
			return g.showList(cmd, "/api/v1/services", "services", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tENTRY\tSITE\tSTATE\tNODES\tEDGES\tUNREACHABLE\tMAPPED")
				for _, a := range out.Services {
					mapped := "-"
					if !a.Mapped.IsZero() {
						mapped = a.Mapped.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", a.Name, a.Entry, a.Site, a.State, a.Nodes, a.Edges, a.Unhealthy, mapped)
				}
				if len(out.Services) == 0 {
					fmt.Fprintln(tw, "(no services: outpost services add NAME --entry URL)")
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "services")

	show := &cobra.Command{
		Use: "show NAME", Short: "Show a service and its map (a tree; -o json, -o dot)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.serviceMap(cmd, "GET", "/api/v1/services/"+url.PathEscape(args[0]))
		},
	}
	var wait bool
	mapCmd := &cobra.Command{
		Use: "map NAME [--wait]", Short: "Show a service's map; --wait maps it first when it has none yet", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/services/" + url.PathEscape(args[0])
			c, _ := g.client()
			var d api.Detail
			if err := c.do(cmd.Context(), "POST", path+"/map", nil, &d); err != nil {
				return err
			}
			// Poll rather than hold one long request: a large map may take minutes.
			for wait && d.Map == nil && d.Service.State != api.ServiceFailed {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(500 * time.Millisecond):
				}
				if err := c.do(cmd.Context(), "GET", path, nil, &d); err != nil {
					return err
				}
			}
			if d.Map == nil && d.Service.State == api.ServiceFailed {
				return fmt.Errorf("mapping %s failed: %s", args[0], d.Service.Error)
			}
			if d.Map == nil && g.output != "json" {
				fmt.Fprintf(g.stdout, "service %s is being mapped; `outpost services map %s --wait` shows the map when it is done\n", args[0], args[0])
				return nil
			}
			return g.printServiceMap(d)
		},
	}
	mapCmd.Flags().BoolVar(&wait, "wait", false, "map first when the service has no map yet, and wait for it")
	remap := &cobra.Command{
		Use: "remap NAME", Short: "Map a service anew now; shows the map and what changed", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.serviceMap(cmd, "POST", "/api/v1/services/"+url.PathEscape(args[0])+"/remap")
		},
	}
	cmd.AddCommand(addCmd, ls, show, mapCmd, remap)
	return cmd
}

func (g *globals) serviceMap(cmd *cobra.Command, method, path string) error {
	c, _ := g.client()
	var d api.Detail
	if err := c.do(cmd.Context(), method, path, nil, &d); err != nil {
		return err
	}
	return g.printServiceMap(d)
}

func (g *globals) printServiceMap(d api.Detail) error {
	switch g.output {
	case "json":
		return json.NewEncoder(g.stdout).Encode(d)
	case "dot":
		if d.Map == nil {
			return fmt.Errorf("service %s has no map yet: outpost services map %s --wait", d.Service.Name, d.Service.Name)
		}
		return writeDot(g.stdout, d.Map)
	}
	a := d.Service
	fmt.Fprintf(g.stdout, "%s  entry %s  site %s  %s", a.Name, a.Entry, a.Site, a.State)
	if a.Error != "" {
		fmt.Fprintf(g.stdout, " (%s)", a.Error)
	}
	fmt.Fprintln(g.stdout)
	if d.Map == nil {
		fmt.Fprintf(g.stdout, "no map yet: outpost services map %s --wait\n", a.Name)
		return nil
	}
	writeTree(g.stdout, d.Map)
	return nil
}

func nodeLabel(n api.Node) string {
	var b strings.Builder
	b.WriteString(n.ID)
	if n.Hostname != "" {
		fmt.Fprintf(&b, " %s", n.Hostname)
	}
	if n.Name != "" {
		fmt.Fprintf(&b, " (%s)", n.Name)
	}
	switch {
	case n.Application != "":
		fmt.Fprintf(&b, " %s [%s]", n.Application, n.Class)
	case n.Process != "":
		fmt.Fprintf(&b, " %s [unrecognised]", n.Process)
	}
	if n.State != api.StateOK {
		fmt.Fprintf(&b, " %s", strings.ToUpper(n.State))
		if n.Reason != "" {
			fmt.Fprintf(&b, ": %s", n.Reason)
		}
	}
	return b.String()
}

// writeTree prints the map from its root; a node reached twice is printed once, then named.
func writeTree(w io.Writer, m *api.Map) {
	nodes := map[string]api.Node{}
	for _, n := range m.Nodes {
		nodes[n.ID] = n
	}
	out := map[string][]api.Edge{}
	for _, e := range m.Edges {
		out[e.From] = append(out[e.From], e)
	}
	for k := range out {
		sort.Slice(out[k], func(i, j int) bool { return out[k][i].To < out[k][j].To })
	}
	printed := map[string]bool{}
	var walk func(id, prefix string)
	walk = func(id, prefix string) {
		printed[id] = true
		es := out[id]
		for i, e := range es {
			branch, next := "├── ", "│   "
			if i == len(es)-1 {
				branch, next = "└── ", "    "
			}
			how := e.FoundBy
			if e.Dead {
				how += ", dead"
			}
			if printed[e.To] {
				fmt.Fprintf(w, "%s%s%s (%s) ↑ above\n", prefix, branch, e.To, how)
				continue
			}
			fmt.Fprintf(w, "%s%s%s  (%s)\n", prefix, branch, nodeLabel(nodes[e.To]), how)
			walk(e.To, prefix+next)
		}
	}
	fmt.Fprintln(w, nodeLabel(nodes[m.Root]))
	walk(m.Root, "")
	fmt.Fprintf(w, "map v%d, %s: %d nodes, %d edges, %d probes; CMDB %d created, %d updated, %d unchanged, %d relations\n",
		m.Version, m.Mapped.Local().Format(time.DateTime), len(m.Nodes), len(m.Edges), m.Probes, m.CMDB.Created, m.CMDB.Updated, m.CMDB.Unchanged, m.CMDB.Relations)
	for _, c := range m.Changes {
		was := ""
		if c.Previous != nil {
			was = ", was -> " + c.Previous.To
		}
		fmt.Fprintf(w, "  %s: %s -> %s (%s%s)\n", c.Change, c.Edge.From, c.Edge.To, c.Edge.FoundBy, was)
	}
	for _, wn := range m.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", wn)
	}
}

// writeDot writes the map as a Graphviz digraph.
func writeDot(w io.Writer, m *api.Map) error {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
	fmt.Fprintf(w, "digraph %s {\n  rankdir=LR;\n  node [shape=box];\n", q(m.Service))
	for _, n := range m.Nodes {
		label := n.ID
		if n.Application != "" {
			label = n.Application + "\\n" + n.ID
		}
		style := ""
		switch n.State {
		case api.StateUnreachable:
			style = ", color=red, style=dashed"
		case api.StateExternal, api.StateDepthLimit, api.StateUnresolved:
			style = ", style=dotted"
		}
		fmt.Fprintf(w, "  %s [label=%s%s];\n", q(n.ID), q(label), style)
	}
	for _, e := range m.Edges {
		style := ""
		if e.Dead {
			style = ", color=red, style=dashed"
		}
		fmt.Fprintf(w, "  %s -> %s [label=%s%s];\n", q(e.From), q(e.To), q(e.FoundBy), style)
	}
	_, err := fmt.Fprintln(w, "}")
	return err
}
