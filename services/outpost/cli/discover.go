package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/libs/version"
)

// runLine is a run's progress on one line.
func runLine(r discovery.Run) string {
	c := r.Counters
	return fmt.Sprintf("%-11s scanned %d/%d  alive %d  classified %d  CIs created %d  updated %d  unchanged %d  errors %d",
		r.State, c.Scanned, c.Addresses, c.Alive, c.Classified, c.CIsCreated, c.CIsUpdated, c.CIsUnchanged, c.Errors)
}

func newDiscover(g *globals) *cobra.Command {
	var site, ports string
	var ranges []string
	var wait bool
	cmd := &cobra.Command{
		Use:   "discover --site S [--range CIDR] [--ports P] [--wait]",
		Short: "Start a discovery run on a site (scan, classify, identify, explore)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if site == "" {
				return usagef("--site is required")
			}
			body := discovery.StartRequest{Site: site, Ranges: ranges}
			if ports != "" {
				ps, err := parsePorts(ports)
				if err != nil {
					return usagef("--ports: %v", err)
				}
				body.Ports = ps
			}
			c, _ := g.client()
			var started discovery.StartReply
			if err := startTraced(cmd.Context(), c, body, &started); err != nil {
				return err
			}
			if !wait {
				if g.output == "json" {
					// "id" too: the run's id under the name every other object uses
					return json.NewEncoder(g.stdout).Encode(map[string]string{"run": started.Run, "id": started.Run})
				}
				fmt.Fprintf(g.stdout, "run %s started — `outpost runs show %s` follows it\n", started.Run, started.Run)
				return nil
			}
			r, err := waitRun(cmd.Context(), c, started.Run, progressWriter(g))
			if err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(r)
			}
			fmt.Fprintf(g.stdout, "run %s %s in %s\n  %s\n", r.ID, r.State, time.Since(r.Created).Round(time.Second), runLine(r))
			if r.State != "completed" {
				return fmt.Errorf("run %s %s: %s", r.ID, r.State, r.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&site, "site", "", "site to discover")
	f.StringSliceVar(&ranges, "range", nil, "CIDR (default: the site's ranges; repeatable)")
	f.StringVar(&ports, "ports", "", "ports to scan, e.g. 22,80,443 or 1-1024 (default: the discovery set)")
	f.BoolVar(&wait, "wait", false, "wait for the run to finish, with progress on a terminal")
	return cmd
}

// startTraced starts the run inside the trace's root span when OTEL_EXPORTER_OTLP_* asks
// for traces: the gateway, discovery, the bridges and the CMDB add their spans to it.
func startTraced(ctx context.Context, c *client, body discovery.StartRequest, out *discovery.StartReply) error {
	tel, err := telemetry.Setup(ctx, "outpost-cli", version.Version)
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(fctx) // the span is sent before the command returns
	}()
	ctx, span := tel.Tracer.Tracer("github.com/outpost-dev/outpost/services/outpost/cli").Start(ctx, "outpost discover",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.String("outpost.site", body.Site)))
	defer span.End()
	err = c.do(ctx, "POST", "/api/v1/discovery/runs", body, out)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(attribute.String("outpost.run", out.Run))
	}
	return err
}

// progressWriter shows progress only on a terminal: redirected output stays clean.
func progressWriter(g *globals) io.Writer {
	if f, ok := g.stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return f
		}
	}
	return io.Discard
}

func waitRun(ctx context.Context, c *client, id string, progress io.Writer) (discovery.Run, error) {
	for {
		var r discovery.Run
		if err := c.do(ctx, "GET", "/api/v1/discovery/runs/"+url.PathEscape(id), nil, &r); err != nil {
			return r, err
		}
		fmt.Fprintf(progress, "\r%s %s\x1b[K", progressBar(r.Counters.Scanned, r.Counters.Addresses, 24), runLine(r))
		if r.Final() {
			fmt.Fprintln(progress)
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// progressBar draws done of total as [#####·····]  42%.
func progressBar(done, total, width int) string {
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	n := int(frac * float64(width))
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat("·", width-n), 100*frac)
}

func parsePorts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(p), "-")
		var a, b int
		if _, err := fmt.Sscan(lo, &a); err != nil {
			return nil, fmt.Errorf("%q is not a port", p)
		}
		b = a
		if isRange {
			if _, err := fmt.Sscan(hi, &b); err != nil {
				return nil, fmt.Errorf("%q is not a port range", p)
			}
		}
		if a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("%q: ports are 1-65535", p)
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}

func newRuns(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Short: "Discovery runs: list, show (per host), cancel"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List discovery runs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out discovery.RunListReply
			return g.showList(cmd, "/api/v1/discovery/runs", "runs", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RUN\tSITE\tSTARTED\tPROGRESS")
				for _, r := range out.Runs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Site, r.Created.Format(time.DateTime), runLine(r))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "runs")
	cmd.AddCommand(ls)
	var host string
	var showTrace bool
	show := &cobra.Command{
		Use: "show ID [--host IP] [--trace]", Short: "Show a run, or what happened on one host of it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			path := "/api/v1/discovery/runs/" + url.PathEscape(args[0])
			if host != "" {
				path += "?host=" + url.QueryEscape(host)
			}
			var raw []byte
			if err := c.do(cmd.Context(), "GET", path, nil, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			var v discovery.Run
			if err := json.Unmarshal(raw, &v); err != nil {
				return err
			}
			if showTrace {
				if v.TraceID == "" {
					return fmt.Errorf("run %s has no trace: tracing was off when it started (set OTEL_EXPORTER_OTLP_ENDPOINT for the hub, the bridges and the CLI)", v.ID)
				}
				_, err := fmt.Fprintln(g.stdout, v.TraceID)
				return err
			}
			if v.Host != nil {
				return printHost(g.stdout, args[0], v.Host)
			}
			return printRun(g.stdout, v)
		},
	}
	show.Flags().StringVar(&host, "host", "", "show this host's log: what was tried, what answered, which credentials worked or failed")
	show.Flags().BoolVar(&showTrace, "trace", false, "print only the run's OpenTelemetry trace id (look it up in your tracing backend)")
	cmd.AddCommand(show)
	cmd.AddCommand(&cobra.Command{
		Use: "cancel ID", Short: "Cancel a run", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/discovery/runs/"+url.PathEscape(args[0])+"/cancel", nil, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			var r struct{ Run, State string }
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			_, err := fmt.Fprintf(g.stdout, "run %s: %s\n", r.Run, r.State)
			return err
		},
	})
	return cmd
}

func newSchedules(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "schedules", Short: "Discovery schedules (cron or one-off)"}
	var name, site, cron, at, maxRun string
	var ranges []string
	add := &cobra.Command{
		Use: "add --name N --site S (--cron EXPR | --at TIME)", Short: "Add a schedule", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := discovery.Schedule{Name: name, Site: site, Cron: cron, MaxRunTime: maxRun, Ranges: ranges}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return usagef("--at %q: want an RFC 3339 time such as 2026-12-24T02:00:00Z", at)
				}
				body.At = &t
			}
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/discovery/schedules", body, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			var r discovery.ScheduleReply
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			when := r.Schedule.Cron
			if r.Schedule.Next != nil {
				when += ", next " + r.Schedule.Next.Local().Format(time.DateTime)
			}
			_, err := fmt.Fprintf(g.stdout, "schedule %s on site %s: %s\n", r.Schedule.Name, r.Schedule.Site, strings.TrimPrefix(when, ", "))
			return err
		},
	}
	add.Flags().StringVar(&name, "name", "", "schedule name")
	add.Flags().StringVar(&site, "site", "", "site")
	add.Flags().StringSliceVar(&ranges, "range", nil, "CIDR (default: the site's)")
	add.Flags().StringVar(&cron, "cron", "", "cron expression, e.g. \"0 2 * * *\"")
	add.Flags().StringVar(&at, "at", "", "one-off time (RFC 3339)")
	add.Flags().StringVar(&maxRun, "max-run-time", "", "stop a run after this long, e.g. 2h")
	cmd.AddCommand(add)
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List schedules", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out discovery.ScheduleListReply
			return g.showList(cmd, "/api/v1/discovery/schedules", "schedules", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSITE\tWHEN\tNEXT\tRANGES")
				for _, s := range out.Schedules {
					when, next := s.Cron, "-"
					if s.At != nil {
						when = "at " + s.At.Local().Format(time.DateTime)
					}
					if s.Next != nil {
						next = s.Next.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Site, when, next, strings.Join(s.Ranges, ","))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "schedules")
	cmd.AddCommand(ls)
	cmd.AddCommand(&cobra.Command{
		Use: "rm NAME", Short: "Remove a schedule", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/discovery/schedules/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(discovery.RemovedReply) string { return "schedule " + args[0] + " removed" })
		},
	})
	return cmd
}

func newCredentials(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "credentials", Short: "Target credentials (stored encrypted; secrets never shown)"}
	var name, typ, site, user, secretFile string
	var secretStdin, allowInsecure bool
	var fields []string
	add := &cobra.Command{
		Use:   "add --name N --type ssh|snmp|snmpv3|ldap|sql|http --site S [--username U] --secret-file F|--secret-stdin",
		Short: "Add a credential; the secret is read from a file or stdin, never from argv",
		Long: `Add a credential; the secret is read from a file or stdin, never from argv.

Each probe kind takes only its own type: ssh_exec ssh, snmp_* snmp/snmpv3, ldap_search ldap,
sql_query sql, http_request http. An http credential says how it is sent:
--field scheme=basic (username + secret), scheme=bearer, or scheme=header with
--field header_name=X-Api-Key.

Secrets travel only over verified TLS (LDAP StartTLS/LDAPS, SQL verify-full, https) unless
the credential is stored with --allow-insecure (admin only); a sql credential may say its own
transport with --field tls=verify|insecure|none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var secret []byte
			var err error
			switch {
			case secretFile != "" && secretStdin:
				return usagef("give --secret-file or --secret-stdin, not both")
			case secretFile != "":
				secret, err = os.ReadFile(secretFile)
			case secretStdin:
				secret, err = io.ReadAll(cmd.InOrStdin())
			default:
				return usagef("the secret comes from --secret-file F or --secret-stdin (never the command line)")
			}
			if err != nil {
				return err
			}
			body := discovery.CredentialAddRequest{Name: name, Type: typ, Site: site, Username: user,
				Secret: strings.TrimRight(string(secret), "\r\n"), AllowInsecure: allowInsecure}
			if len(fields) > 0 {
				fm := map[string]string{}
				for _, kv := range fields {
					k, v, ok := strings.Cut(kv, "=")
					if !ok {
						return usagef("--field %q: want key=value", kv)
					}
					fm[k] = v
				}
				body.Fields = fm
			}
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/credentials", body, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(discovery.CredentialReply) string { return "credential " + name + " stored" })
		},
	}
	f := add.Flags()
	f.StringVar(&name, "name", "", "credential name")
	f.StringVar(&typ, "type", "", "ssh, snmp, snmpv3, ldap, sql or http")
	f.StringVar(&site, "site", "", "site whose bridges may use it")
	f.StringVar(&user, "username", "", "user name (ssh, ldap bind DN, sql, snmpv3 user)")
	f.StringVar(&secretFile, "secret-file", "", "file holding the secret (password, community, key)")
	f.BoolVar(&secretStdin, "secret-stdin", false, "read the secret from stdin")
	f.StringArrayVar(&fields, "field", nil, "type-specific key=value (snmpv3: auth_protocol, priv_protocol, priv_password…; http: scheme, header_name; sql: database, tls)")
	f.BoolVar(&allowInsecure, "allow-insecure", false, "let probes send this secret over plaintext or unverified TLS (admin only; avoid)")
	cmd.AddCommand(add)
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List credentials (no secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out discovery.CredentialListReply
			return g.showList(cmd, "/api/v1/credentials", "credentials", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTYPE\tSITE\tUSERNAME\tTRANSPORT")
				for _, c := range out.Credentials {
					transport := "verified TLS"
					if c.AllowInsecure {
						transport = "insecure allowed"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Type, c.Site, orDash(c.Username), transport)
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "credentials")
	cmd.AddCommand(ls)
	cmd.AddCommand(&cobra.Command{
		Use: "rm NAME", Short: "Remove a credential", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/credentials/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(discovery.RemovedReply) string { return "credential " + args[0] + " removed" })
		},
	})
	return cmd
}

func newHostKeys(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "hostkeys", Short: "SSH host keys on record at the hub (trusted on first use)"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List the SSH host keys on record", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out discovery.HostKeyListReply
			return g.showList(cmd, "/api/v1/hostkeys", "hostkeys", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SITE\tADDRESS\tFINGERPRINT\tTYPE\tFIRST SEEN\tLAST SEEN")
				for _, h := range out.HostKeys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Site, h.Address, h.Fingerprint, orDash(h.Type),
						h.FirstSeen.Format(time.RFC3339Nano), h.LastSeen.Format(time.RFC3339Nano))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "host keys")
	cmd.AddCommand(ls)
	var site string
	forget := &cobra.Command{
		Use: "forget ADDRESS [--site S]", Short: "Forget an address's host key (after a rebuild): the next probe trusts what it sees",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			path := "/api/v1/hostkeys/" + url.PathEscape(args[0])
			if site != "" {
				path += "?site=" + url.QueryEscape(site)
			}
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", path, nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(discovery.HostKeyForgetReply) string { return "host key of " + args[0] + " forgotten" })
		},
	}
	forget.Flags().StringVar(&site, "site", "", "only this site's record")
	cmd.AddCommand(forget)
	return cmd
}
