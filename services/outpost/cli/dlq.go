package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	dlqapi "github.com/outpost-dev/outpost/libs/api/dlq"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
)

func newDLQ(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Dead-lettered messages: what failed, why, from where"}
	var limit int
	var service string
	ls := &cobra.Command{
		Use: "ls [--service S]", Short: "List dead-lettered messages, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/api/v1/dlq"
			if service != "" {
				path += "?service=" + url.QueryEscape(service)
			}
			var out gatewayapi.DLQList
			return g.showList(cmd, path, "items", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tSERVICE\tCODE\tSUBJECT\tREASON")
				for _, it := range out.Items {
					subject := it.SourceSubject
					if subject == "" {
						subject = it.Subject
					}
					when := it.Time
					if t, err := time.Parse(time.RFC3339, it.Time); err == nil {
						when = t.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", it.Seq, when, it.Service, it.Code, subject, clip(it.Reason, 80))
				}
				if len(out.Items) == 0 {
					fmt.Fprintln(tw, "(the DLQ is empty)")
				}
				return tw.Flush()
			})
		},
	}
	ls.Flags().StringVar(&service, "service", "", "only what this service dead-lettered (discovery, cmdb, bridge…)")
	limitFlag(ls, &limit, "messages")
	cmd.AddCommand(ls, newDLQShow(g), newDLQRetry(g), newDLQPurge(g))
	return cmd
}

func newDLQShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "show SEQ", Short: "Show one dead letter whole: why, from where, its headers and body, whether it may be retried", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usagef("%q is not a SEQ: give the SEQ column of `outpost dlq ls`", args[0])
			}
			return g.show(cmd, "/api/v1/dlq/"+strconv.FormatUint(seq, 10), func(raw []byte) error {
				var m dlqapi.Message
				if err := json.Unmarshal(raw, &m); err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
				row("SEQ", strconv.FormatUint(m.Seq, 10))
				row("TIME", m.Time.Local().Format(time.DateTime))
				row("SERVICE", m.Service)
				row("ORIGIN", m.Origin)
				row("CODE", m.Code)
				row("REASON", m.Reason)
				row("FROM", fmt.Sprintf("%s (stream %s seq %d, consumer %s, %d deliveries)", m.SourceSubject, m.SourceStream, m.SourceSeq, m.Consumer, m.Deliveries))
				if m.Retries > 0 {
					row("RETRIED", fmt.Sprintf("%d times before", m.Retries))
				}
				if m.Retryable {
					row("RETRY", "yes: outpost dlq retry "+strconv.FormatUint(m.Seq, 10))
				} else {
					row("RETRY", "no: "+m.RetryRefusal)
				}
				keys := make([]string, 0, len(m.Headers))
				for k := range m.Headers {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					row("HEADER "+k, strings.Join(m.Headers[k], ", "))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if m.DataBase64 {
					fmt.Fprintln(g.stdout, "BODY (base64):")
				} else {
					fmt.Fprintln(g.stdout, "BODY:")
				}
				fmt.Fprintln(g.stdout, m.Data)
				return nil
			})
		},
	}
}

func newDLQRetry(g *globals) *cobra.Command {
	var req dlqapi.RetryRequest
	cmd := &cobra.Command{
		Use:   "retry SEQ... | --all [--code C] [--service S] [--older-than D]",
		Short: "Send dead letters back to their original subject, once their cause is fixed (admin)",
		Long: "Send dead letters back to their original subject with their original headers and a retry marker\n" +
			"(outpost-retry: n), and remove them from the DLQ; one that fails again comes back under a new SEQ.\n" +
			"A dead letter from a site goes back only to a subject that site's bridges may publish themselves,\n" +
			"and one a bridge wrote itself is never re-sent: see `outpost dlq show SEQ`.",
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Seqs = nil
			for _, a := range args {
				seq, err := strconv.ParseUint(a, 10, 64)
				if err != nil || seq == 0 {
					return usagef("%q is not a SEQ: give SEQs of `outpost dlq ls`, or --all", a)
				}
				req.Seqs = append(req.Seqs, seq)
			}
			if err := req.Validate(); err != nil {
				return usagef("%v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/dlq/retry", req, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(r dlqapi.RetryReply) string {
				var b strings.Builder
				for _, x := range r.Retried {
					fmt.Fprintf(&b, "retried %d to %s (retry %d)\n", x.Seq, x.Subject, x.Retry)
				}
				for _, x := range r.NotRetried {
					fmt.Fprintf(&b, "not retried %d: %s\n", x.Seq, x.Reason)
				}
				fmt.Fprintf(&b, "%d retried, %d not", len(r.Retried), len(r.NotRetried))
				return b.String()
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&req.All, "all", false, "every dead letter the filters select")
	dlqFilterFlags(cmd, &req.Filter)
	return cmd
}

func newDLQPurge(g *globals) *cobra.Command {
	var req dlqapi.PurgeRequest
	cmd := &cobra.Command{
		Use: "purge [--code C] [--service S] [--older-than D] | --all", Short: "Delete dead letters for good (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := req.Validate(); err != nil {
				return usagef("%v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/dlq/purge", req, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(r dlqapi.PurgeReply) string { return fmt.Sprintf("%d dead letters purged", r.Purged) })
		},
	}
	cmd.Flags().BoolVar(&req.All, "all", false, "purge every dead letter (needed when no filter is given)")
	dlqFilterFlags(cmd, &req.Filter)
	return cmd
}

func dlqFilterFlags(cmd *cobra.Command, f *dlqapi.Filter) {
	fl := cmd.Flags()
	fl.StringVar(&f.Code, "code", "", "only dead letters of this code (decode, permanent, max_deliveries)")
	fl.StringVar(&f.Service, "service", "", "only what this service dead-lettered (discovery, cmdb, bridge…)")
	fl.StringVar(&f.OlderThan, "older-than", "", "only dead letters at least this old (72h, 30m)")
}
