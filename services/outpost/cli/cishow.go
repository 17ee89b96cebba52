package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// printCI shows one CI as an operator reads it: what it is, its attributes with the source
// of each value, how it is identified, its relations and its latest changes.
func printCI(w io.Writer, d cmdbapi.Detail) error {
	fmt.Fprintf(w, "%s %s (%s) — %s", d.Class, d.Name, d.ID, orDash(d.OperationalStatus))
	if d.Stale {
		fmt.Fprint(w, ", stale")
	}
	fmt.Fprintf(w, "\n  created %s, updated %s, last seen %s\n\n", stamp(d.Created), stamp(d.Updated), stamp(d.LastSeen))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTRIBUTE\tVALUE\tSOURCE")
	for _, k := range slices.Sorted(maps.Keys(d.Attributes)) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k, clip(fmt.Sprint(d.Attributes[k]), 80), orDash(d.Sources[k].Source))
	}
	for _, id := range d.Identifiers {
		fmt.Fprintf(tw, "identifier\t%s\t\n", id)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Outgoing)+len(d.Incoming) > 0 {
		fmt.Fprintln(w)
		if err := printRelations(w, d.Outgoing, d.Incoming); err != nil {
			return err
		}
	}
	if len(d.History) > 0 {
		fmt.Fprintln(w)
		return printHistory(w, d.History)
	}
	return nil
}

func printRelations(w io.Writer, out, in []cmdbapi.Relation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tRELATION\tCI\tCLASS\tNAME\tSOURCE\tLAST SEEN")
	for _, set := range []struct {
		dir string
		rs  []cmdbapi.Relation
	}{{"this →", out}, {"→ this", in}} {
		for _, r := range set.rs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", set.dir, r.Type, r.Peer.ID, r.Peer.Class, orDash(r.Peer.Name), r.Source, stamp(r.LastSeen))
		}
	}
	return tw.Flush()
}

func printHistory(w io.Writer, hs []cmdbapi.HistoryEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tATTRIBUTE\tOLD\tNEW\tSOURCE")
	for _, h := range hs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", stamp(h.Time), h.Attr, jsonCell(h.Old), jsonCell(h.New), h.Source)
	}
	return tw.Flush()
}

func printConflicts(w io.Writer, cs []cmdbapi.Conflict) error {
	if len(cs) == 0 {
		_, err := fmt.Fprintln(w, "no identification conflict")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST SEEN\tSOURCE\tCLASS\tREF\tTIMES\tCANDIDATES\tREASON")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", stamp(c.LastSeen), c.Source, c.Class, c.Ref, c.Count, len(c.Candidates), clip(c.Reason, 80))
	}
	return tw.Flush()
}

// jsonCell shows a JSON value in a table cell: "-" for none.
func jsonCell(v []byte) string {
	if s := string(v); s != "" && s != "null" {
		return clip(s, 40)
	}
	return "-"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func printGraph(w io.Writer, gr cmdbapi.Graph) error {
	names := map[string]string{}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEPTH\tCI\tCLASS\tNAME")
	for _, n := range gr.Nodes {
		names[n.ID] = orDash(n.Name)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", n.Depth, n.ID, n.Class, orDash(n.Name))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d relations:\n", len(gr.Edges))
	for _, e := range gr.Edges {
		fmt.Fprintf(w, "  %s —%s→ %s\n", names[e.From], e.Type, names[e.To])
	}
	if gr.Truncated {
		fmt.Fprintln(w, "(cut short at max_nodes: ask for less depth)")
	}
	return nil
}

func printCounts(w io.Writer, c cmdbapi.CountsResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tCIS\tWITH SUBCLASSES")
	for _, k := range slices.Sorted(maps.Keys(c.WithSubclasses)) {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", k, c.Exact[k], c.WithSubclasses[k])
	}
	fmt.Fprintf(tw, "total\t%d\t\n", c.Total)
	return tw.Flush()
}

func printClasses(w io.Writer, c cmdbapi.ClassesResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tPARENT\tFAMILY\tATTRIBUTES\tDESCRIPTION")
	for _, k := range c.Classes {
		name := k.Name
		if k.Abstract {
			name += " (abstract)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", name, orDash(k.Parent), orDash(k.Family), len(k.Attributes), clip(k.Description, 60))
	}
	return tw.Flush()
}

func printIngest(w io.Writer, o cmdbapi.Outcome) error {
	_, err := fmt.Fprintf(w, "ingested: %d created, %d updated, %d unchanged, %d relations created, %d in conflict, %d skipped\n",
		len(o.Created), len(o.Updated), len(o.Unchanged), len(o.Relations), len(o.Conflicts), len(o.Skipped))
	return err
}
