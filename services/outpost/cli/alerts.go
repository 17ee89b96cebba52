package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// keyValues reads repeated k=v flags into a map; a flag without "=" is a usage error.
func keyValues(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

func newEvents(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Send events to the correlation service"}
	var in api.EventInput
	var additional []string
	send := &cobra.Command{
		Use:   "send --node N --type T --severity S --message M",
		Short: "Send one event (published on event.hub.api); events of one dedup key make one alert",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			add, err := keyValues("additional", additional)
			if err != nil {
				return err
			}
			for k, v := range add {
				if in.Additional == nil {
					in.Additional = map[string]any{}
				}
				in.Additional[k] = v
			}
			if err := in.Validate(); err != nil {
				return usageError{err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/events", in, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(r api.EventSendResponse) string { return fmt.Sprintf("event %s sent on %s", r.ID, r.Subject) })
		},
	}
	f := send.Flags()
	f.StringVar(&in.Node, "node", "", "the host or device the event is about (name or IP)")
	f.StringVar(&in.Type, "type", "", "what kind of event (cpu, disk, link…; default: api)")
	f.StringVar(&in.Resource, "resource", "", "the part of the node (cpu0, /var, eth1)")
	f.StringVar(&in.Metric, "metric", "", "what was measured (load, free_space)")
	f.StringVar(&in.Severity, "severity", "", "critical, major, minor, warning, info or clear (default warning; clear closes the alert)")
	f.StringVar(&in.Message, "message", "", "the text a person reads")
	f.StringVar(&in.MessageKey, "message-key", "", "dedup key instead of node+type+resource+metric")
	f.StringArrayVar(&additional, "additional", nil, "extra key=value (repeatable)")
	cmd.AddCommand(send)
	return cmd
}

func newAlerts(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "List, show, acknowledge and close alerts"}
	var state, node string
	var limit int
	ls := &cobra.Command{
		Use: "ls [--state open|acknowledged|closed] [--node N]", Short: "List alerts, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := (api.AlertsListRequest{State: state}).Validate(); err != nil {
				return usageError{err}
			}
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			if node != "" {
				q.Set("node", node)
			}
			path := "/api/v1/alerts"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var out api.AlertsListResponse
			return g.showList(cmd, path, "items", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tSEVERITY\tCOUNT\tNODE\tCI\tGROUP\tLAST SEEN\tMESSAGE")
				for _, a := range out.Items {
					st := a.State
					if len(a.SilencedBy) > 0 {
						st += " (silenced)"
					}
					if a.Flapping {
						st += " (flapping)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", a.ID, st, a.Severity, a.Count, orDash(a.Node), orDash(a.CI),
						orDash(a.Group), a.LastSeen.Local().Format(time.DateTime), clip(a.Message, 60))
				}
				return tw.Flush()
			})
		},
	}
	ls.Flags().StringVar(&state, "state", "", "open, acknowledged or closed (default: all)")
	ls.Flags().StringVar(&node, "node", "", "only this node's alerts")
	limitFlag(ls, &limit, "alerts")
	one := func(use, short, method, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client()
				if err != nil {
					return err
				}
				var raw []byte
				if err := c.do(cmd.Context(), method, "/api/v1/alerts/"+url.PathEscape(args[0])+suffix, nil, &raw); err != nil {
					return err
				}
				if g.output == "json" {
					return writeLine(g.stdout, raw)
				}
				var a api.Alert
				if err := json.Unmarshal(raw, &a); err != nil {
					return err
				}
				printAlert(g, a)
				return nil
			},
		}
	}
	var glimit int
	groups := &cobra.Command{
		Use: "groups", Short: "List topology groups: alerts on related CIs and their probable root cause", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.GroupsListResponse
			return g.showList(cmd, "/api/v1/alert-groups", "items", glimit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tROOT CAUSE\tROOT NODE\tALERTS\tCIS")
				for _, x := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", x.ID, x.RootCause, orDash(x.RootNode), len(x.Alerts), len(x.CIs))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(groups, &glimit, "groups")
	cmd.AddCommand(groups)
	cmd.AddCommand(ls, one("show", "Show one alert", "GET", ""), one("ack", "Acknowledge an alert: it keeps counting events", "POST", "/ack"),
		one("close", "Close an alert; the next event of its key opens a new one", "POST", "/close"))
	return cmd
}

func printAlert(g *globals, a api.Alert) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, orDash(v)) }
	row("id", a.ID)
	row("state", a.State+map[bool]string{true: " (" + a.CloseReason + ")", false: ""}[a.CloseReason != ""])
	row("severity", a.Severity)
	row("count", a.Count)
	row("site", a.Site)
	row("source", a.Source)
	row("node", a.Node)
	row("type", a.Type)
	row("resource", a.Resource)
	row("metric", a.Metric)
	row("ci", a.CI)
	row("message", a.Message)
	row("first seen", a.FirstSeen.Local().Format(time.DateTime))
	row("last seen", a.LastSeen.Local().Format(time.DateTime))
	row("silenced by", strings.Join(a.SilencedBy, ", "))
	row("topology group", a.TopologyGroup)
	row("root cause", a.RootCause)
	for _, k := range slices.Sorted(maps.Keys(a.Additional)) {
		row("additional."+k, a.Additional[k])
	}
	_ = tw.Flush()
}

func newSilences(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "silences", Short: "Mute alerts for a while"}
	var match []string
	var dur, comment string
	add := &cobra.Command{
		Use: "add --match k=v [--match k=v…] --for 2h", Short: "Mute alerts matching every k=v for a duration", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := keyValues("match", match)
			if err != nil {
				return err
			}
			req := api.SilenceAddRequest{Match: m, For: dur, Comment: comment}
			if _, err := req.Validate(); err != nil {
				return usageError{err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/silences", req, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(s api.Silence) string {
				return fmt.Sprintf("silence %s until %s", s.ID, s.EndsAt.Local().Format(time.DateTime))
			})
		},
	}
	add.Flags().StringArrayVar(&match, "match", nil, "field=value to match (node, type, resource, metric, severity, site, source, message_key, ci, additional.<key>); repeatable")
	add.Flags().StringVar(&dur, "for", "", "how long: 30m, 2h, 24h")
	add.Flags().StringVar(&comment, "comment", "", "why (shown in silences ls)")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List silences, active and ended", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.SilencesListResponse
			return g.showList(cmd, "/api/v1/silences", "items", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tMATCH\tSTARTS\tENDS\tCOMMENT")
				for _, s := range out.Items {
					var kv []string
					for k, v := range s.Match {
						kv = append(kv, k+"="+v)
					}
					sort.Strings(kv)
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, strings.Join(kv, ","), s.StartsAt.Local().Format(time.DateTime),
						s.EndsAt.Local().Format(time.DateTime), orDash(s.Comment))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "silences")
	rm := &cobra.Command{
		Use: "rm ID", Short: "End a silence now", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/silences/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(s api.Silence) string { return "silence " + s.ID + " ended" })
		},
	}
	cmd.AddCommand(add, ls, rm)
	return cmd
}
