package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
)

// printRun shows a run as an operator reads it: where it stands, what it counted, what the
// CMDB made of it, its hosts, errors and log.
func printRun(w io.Writer, v discovery.Run) error {
	c := v.Counters
	took := ""
	if v.Finished != nil {
		took = fmt.Sprintf(", finished %s (%s)", v.Finished.Local().Format(time.DateTime), v.Finished.Sub(v.Created).Round(time.Second))
	}
	fmt.Fprintf(w, "run %s on site %s: %s\n", v.ID, v.Site, v.State)
	fmt.Fprintf(w, "  started %s%s\n", v.Created.Local().Format(time.DateTime), took)
	if v.Reason != "" {
		fmt.Fprintf(w, "  %s\n", v.Reason)
	}
	fmt.Fprintf(w, "  ranges %s", strings.Join(v.Ranges, ", "))
	if len(v.Ports) > 0 {
		fmt.Fprintf(w, ", ports %s", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(v.Ports)), ","), "[]"))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  addresses %d, scanned %d, alive %d, classified %d, unclassified %d\n", c.Addresses, c.Scanned, c.Alive, c.Classified, c.Unclassified)
	fmt.Fprintf(w, "  CIs: %d created, %d updated, %d unchanged (%d sent in %d payloads, %d with a CMDB receipt)\n",
		c.CIsCreated, c.CIsUpdated, c.CIsUnchanged, c.CIsSent, c.PayloadsSent, c.Ingested)
	fmt.Fprintf(w, "  probes %d/%d done, %d pending", c.ProbesDone, c.ProbesSent, v.PendingProbes)
	if c.ProbesResent > 0 {
		fmt.Fprintf(w, ", %d sent again (no result before their deadline)", c.ProbesResent)
	}
	if c.ProbesNotRun > 0 {
		fmt.Fprintf(w, ", %d not run (a bridge took them past their deadline)", c.ProbesNotRun)
	}
	fmt.Fprintf(w, "; errors %d\n", c.Errors)
	if len(v.Hosts) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tCLASS\tNAME\tSTAGE\tCREDENTIAL\tCIS\tCMDB (created/updated/unchanged)")
		for _, h := range v.Hosts {
			class := orDash(h.Class)
			if h.ByPorts {
				class += " (by ports)"
			}
			cmdb := "-"
			if h.Ingested != nil {
				cmdb = fmt.Sprintf("%d/%d/%d", h.Ingested.Created, h.Ingested.Updated, h.Ingested.Unchanged)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", h.IP, class, orDash(h.Name), h.Stage, orDash(h.Credential), h.CIs, cmdb)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(v.Errors) > 0 {
		fmt.Fprintf(w, "\nerrors:\n")
		for _, e := range v.Errors {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if len(v.Log) > 0 {
		fmt.Fprintf(w, "\nlog:\n")
		for _, l := range v.Log {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return nil
}

// printHost shows what happened on one host of a run: its class, the credentials that worked
// and failed, what the CMDB made of it, and its log.
func printHost(w io.Writer, run string, h *discovery.Host) error {
	fmt.Fprintf(w, "host %s of run %s: %s\n", h.IP, run, h.Stage)
	class := orDash(h.Class)
	if h.ByPorts {
		class += ", by its ports only"
	}
	fmt.Fprintf(w, "  class %s", class)
	if h.Classifier != "" {
		fmt.Fprintf(w, " (classifier %s)", h.Classifier)
	}
	if h.Name != "" {
		fmt.Fprintf(w, ", name %s", h.Name)
	}
	fmt.Fprintln(w)
	facts := h.Summary()
	if len(facts.Ports) > 0 {
		fmt.Fprintf(w, "  open TCP ports %s\n", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(facts.Ports)), ","), "[]"))
	}
	if facts.SSHHostKey != "" {
		fmt.Fprintf(w, "  SSH host key %s (on record at the hub)\n", facts.SSHHostKey)
	}
	if facts.SSHHostKeyChanged != "" {
		fmt.Fprintf(w, "  SSH HOST KEY CHANGED: %s\n", facts.SSHHostKeyChanged)
	}
	for _, typ := range slices.Sorted(maps.Keys(h.Worked)) {
		fmt.Fprintf(w, "  %s credential that worked: %s\n", typ, h.Worked[typ])
	}
	for _, typ := range slices.Sorted(maps.Keys(h.Failed)) {
		fmt.Fprintf(w, "  %s credentials that failed: %s\n", typ, strings.Join(h.Failed[typ], ", "))
	}
	if in := h.Ingested; in != nil {
		fmt.Fprintf(w, "  CMDB: %d created, %d updated, %d unchanged", in.Created, in.Updated, in.Unchanged)
		if in.Conflicts+in.Skipped > 0 {
			fmt.Fprintf(w, ", %d in conflict, %d skipped", in.Conflicts, in.Skipped)
		}
		fmt.Fprintln(w)
	}
	if len(h.Log) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSTEP\tKIND\tSTATUS\tCREDENTIAL\tDETAIL")
	for _, l := range h.Log {
		detail := l.Note
		if l.Error != "" {
			detail = strings.TrimSpace(l.Error + " " + detail)
		}
		if len(l.Failed) > 0 {
			detail = strings.TrimSpace(detail + " (failed: " + strings.Join(l.Failed, ", ") + ")")
		}
		if l.Bridge != "" {
			detail = strings.TrimSpace(detail + " [bridge " + l.Bridge + "]")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Time.Local().Format(time.TimeOnly), l.Step, orDash(l.Kind), orDash(l.Status),
			orDash(l.Credential), clip(detail, 120))
	}
	return tw.Flush()
}
