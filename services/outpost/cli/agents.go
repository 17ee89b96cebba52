package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/spf13/cobra"
)

func newSite(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "site", Aliases: []string{"sites"}, Short: "Manage sites (networks served by bridges), their enrollment tokens and pinned bridge version"}
	var ranges, exclude []string
	var auto bool
	var ttl time.Duration
	var uses int
	add := &cobra.Command{
		Use:   "add NAME --range CIDR... [--token-ttl 24h] [--token-uses N] [--auto-approve]",
		Short: "Create a site (or change its ranges) and print an enrollment token for its bridges",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTokenFlags(ttl, uses, "--token-ttl", "--token-uses"); err != nil {
				return err
			}
			c, _ := g.client()
			var raw []byte
			body := agentsapi.SiteAddRequest{Name: args[0], Ranges: ranges, Exclude: exclude, AutoApprove: auto,
				TokenTTL: ttl.String(), TokenUses: uses}
			if err := c.do(cmd.Context(), "POST", "/api/v1/sites", body, &raw); err != nil {
				return err
			}
			var out agentsapi.SiteAddReply
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"token": out.Token, "site": out.Site, "token_info": out.TokenInfo})
			}
			fmt.Fprintf(g.stdout, "site %s: %s\n", out.Site.Name, strings.Join(out.Site.Ranges, ", "))
			printNewToken(g, out.Token, out.TokenInfo)
			return nil
		},
	}
	add.Flags().StringSliceVar(&ranges, "range", nil, "CIDR the site's bridges may probe (repeatable)")
	add.Flags().StringSliceVar(&exclude, "exclude", nil, "CIDR never to scan (repeatable)")
	add.Flags().BoolVar(&auto, "auto-approve", false, "bridges enrolling with this token are approved at once")
	add.Flags().DurationVar(&ttl, "token-ttl", 24*time.Hour, "the enrollment token stops working after this long")
	add.Flags().IntVar(&uses, "token-uses", 0, "how many bridges the token may enroll (0: any number until it expires)")
	cmd.AddCommand(newSiteTokens(g))
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List sites", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out agentsapi.SiteListReply
			return g.showList(cmd, "/api/v1/sites", "sites", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SITE\tRANGES\tCREATED")
				for _, s := range out.Sites {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, strings.Join(s.Ranges, ","), s.Created.Format(time.DateTime))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "sites")
	cmd.AddCommand(add, ls, newSitePin(g))
	return cmd
}

func newAgents(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "List, approve, revoke and control bridges"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List agents with status, capabilities, pools, outbox and last heartbeat", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out agentsapi.ListReply
			return g.showList(cmd, "/api/v1/agents", "agents", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSITE\tSTATUS\tVERSION\tUPGRADE\tCAPABILITIES\tPOOLS (busy/size)\tOUTBOX\tLAST HEARTBEAT")
				for _, a := range out.Agents {
					var pools []string
					keys := make([]string, 0, len(a.Pools))
					for k := range a.Pools {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					for _, k := range keys {
						p := a.Pools[k]
						pools = append(pools, fmt.Sprintf("%s %d/%d", k[:3], p.Busy, p.Size))
					}
					hb := "-"
					if a.LastHeartbeat != nil {
						hb = time.Since(*a.LastHeartbeat).Round(time.Second).String() + " ago"
					}
					upg := a.Upgrade
					if upg == "" {
						upg = "-"
					}
					status := a.Status
					if a.Requested != nil {
						status += " (requests more)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, a.Site, status, a.Version, upg,
						strings.Join(a.Capabilities, ","), strings.Join(pools, " "), humanBytes(uint64(max(0, a.OutboxBytes))), hb)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				// A bridge asking for a wider profile than approved gets none of it until an
				// admin decides: say what it asks and how to grant it.
				for _, a := range out.Agents {
					if r := a.Requested; r != nil {
						apps := strings.Join(r.Apps, ",")
						if apps == "" {
							apps = "all"
						}
						fmt.Fprintf(g.stdout, "%s/%s requests apps %s, capabilities %s (not granted): `outpost agents approve %s/%s` grants it\n",
							a.Site, a.Name, apps, strings.Join(r.Capabilities, ","), a.Site, a.Name)
					}
				}
				return nil
			})
		},
	}
	limitFlag(ls, &limit, "agents")
	cmd.AddCommand(ls)
	for _, op := range []struct{ name, short string }{
		{"approve", "Approve a pending agent: it gets its site's work"},
		{"revoke", "Revoke an agent: its connection is closed and its key never enrolls again; its name stays taken until `agents forget`"},
		{"forget", "Forget a revoked agent: a new bridge (new key, valid token) may then enroll under its name; the old key stays revoked"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use: op.name + " NAME|SITE/NAME", Short: op.short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, _ := g.client()
				var raw []byte
				if err := c.do(cmd.Context(), "POST", "/api/v1/agents/"+agentPath(args[0])+"/"+op.name, nil, &raw); err != nil {
					return err
				}
				// approve and revoke answer the agent (AgentView), forget what it freed
				// (ForgetReply): both carry the status.
				return printResult(g, raw, func(v agentsapi.AgentView) string { return fmt.Sprintf("%s: %s", args[0], v.Status) })
			},
		})
	}
	var lines int
	for _, op := range []struct{ name, short string }{
		{"ping", "Ask an agent for its state and measure the round trip"},
		{"pause", "Stop an agent taking new work (in-flight work finishes)"},
		{"resume", "Let a paused agent take work again"},
		{"drain", "Finish in-flight work, stop pulling, send the outbox and exit"},
		{"logs", "Show the last log lines of an agent"},
	} {
		c := &cobra.Command{
			Use: op.name + " NAME|SITE/NAME", Short: op.short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, _ := g.client()
				var raw []byte
				body := agentsapi.ControlCommand{Command: op.name, Lines: lines}
				if err := c.do(cmd.Context(), "POST", "/api/v1/agents/"+agentPath(args[0])+"/control", body, &raw); err != nil {
					return err
				}
				return printResult(g, raw, func(r agentsapi.ControlReply) string {
					if op.name == agentsapi.CommandLogs {
						return strings.Join(r.Lines, "\n")
					}
					return fmt.Sprintf("%s: %s ok (state %s, %.1f ms)", args[0], op.name, r.State, r.RTTMillis)
				})
			},
		}
		if op.name == "logs" {
			c.Flags().IntVarP(&lines, "lines", "n", 100, "how many lines")
		}
		cmd.AddCommand(c)
	}
	return cmd
}

func agentPath(ref string) string { return url.PathEscape(strings.Replace(ref, "/", ":", 1)) }

// printResult prints an answer as it came with -o json, else decoded into T by human.
func printResult[T any](g *globals, raw []byte, human func(T) string) error {
	if g.output == "json" {
		_, err := g.stdout.Write(raw)
		return err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, human(v))
	return nil
}

func newProbe(g *globals) *cobra.Command {
	var site, kind, target, priority, timeout string
	var params, creds []string
	var helpParams bool
	cmd := &cobra.Command{
		Use:   "probe --site S --kind K [--target T] [--param k=v ...] [--credential NAME ...]",
		Short: "Send one probe to a site's bridges now and print its result(s)",
		Long: "Send one probe to a site's bridges now and print its result(s).\n\n" +
			"`outpost probe --kind K --help-params` prints what kind K takes (-o json: its JSON Schema).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if helpParams {
				if kind == "" {
					return usagef("--help-params needs --kind (kinds: %s)", kindsHelp())
				}
				return printParamsHelp(g.stdout, kind, g.output == "json")
			}
			if site == "" || kind == "" {
				return usagef("--site and --kind are required")
			}
			p := map[string]any{}
			for _, kv := range params {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--param %q: want key=value", kv)
				}
				p[k] = paramValue(v)
			}
			pj, err := json.Marshal(p)
			if err != nil {
				return err
			}
			body := agentsapi.ProbeRequest{Site: site, Kind: kind, Target: target, Params: pj, Priority: priority, Timeout: timeout, Credentials: creds}
			c, _ := g.client()
			c.http.Timeout = 0
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/probes", body, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				_, err := g.stdout.Write(raw)
				return err
			}
			var out agentsapi.ProbeReply
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			failed := false
			for _, r := range out.Results {
				fmt.Fprintf(g.stdout, "probe %s #%d by %s: %s\n", out.Probe, r.Seq, r.Agent, r.Status)
				if r.Error != nil {
					fmt.Fprintf(g.stdout, "  %s: %s\n", r.Error.Code, r.Error.Message)
					failed = true
				}
				if len(r.Data) > 0 {
					var pretty any
					_ = json.Unmarshal(r.Data, &pretty)
					b, _ := json.MarshalIndent(pretty, "  ", "  ")
					fmt.Fprintf(g.stdout, "  %s\n", b)
				}
			}
			if failed {
				return fmt.Errorf("probe failed")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&site, "site", "", "site whose bridges run it")
	f.StringVar(&kind, "kind", "", "probe kind: "+kindsHelp())
	f.BoolVar(&helpParams, "help-params", false, "print the params --kind takes (types, defaults, limits) and exit")
	f.StringVar(&target, "target", "", "target address, range or host")
	f.StringArrayVar(&params, "param", nil, "param key=value (repeatable; numbers, true/false and [a,b] lists are typed)")
	f.StringVar(&priority, "priority", "interactive", "interactive, expedited or standard")
	f.StringVar(&timeout, "timeout", "30s", "deadline of the probe")
	f.StringArrayVar(&creds, "credential", nil, "stored credential to use, by name (repeatable; tried in order; see `outpost credentials ls`)")
	return cmd
}

// paramValue types a --param value: JSON when it parses (numbers, booleans, lists, objects),
// a string otherwise.
func paramValue(v string) any {
	var x any
	if err := json.Unmarshal([]byte(v), &x); err == nil {
		if _, isStr := x.(string); !isStr {
			return x
		}
	}
	return v
}
