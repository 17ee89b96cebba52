package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/spf13/cobra"
)

// usesLeft says how many more bridges a token may enroll.
func usesLeft(t agentsapi.TokenView) string {
	if t.UsesLeft == nil {
		return "unlimited"
	}
	return strconv.Itoa(*t.UsesLeft)
}

func checkTokenFlags(ttl time.Duration, uses int, ttlFlag, usesFlag string) error {
	if ttl <= 0 {
		return usagef("%s %s: want a duration more than 0, such as 24h or 30m", ttlFlag, ttl)
	}
	if uses < 0 {
		return usagef("%s %d: want 0 (any number until it expires) or more", usesFlag, uses)
	}
	return nil
}

// printNewToken shows a new enrollment token's secret (once) and what it allows.
func printNewToken(g *globals, secret string, t agentsapi.TokenView) {
	fmt.Fprintf(g.stdout, "enrollment token %s (give it to the site's bridges, --token; shown once):\n  %s\n", t.ID, secret)
	fmt.Fprintf(g.stdout, "expires %s; enrolls %s bridge(s)\n", t.Expires.Local().Format(time.DateTime), usesLeft(t))
	if !t.AutoApprove {
		fmt.Fprintln(g.stdout, "bridges enrolling with it stay pending until `outpost agents approve NAME`")
	}
}

func newSiteTokens(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Make, list and revoke a site's enrollment tokens (admin)"}
	var ttl time.Duration
	var uses int
	var auto bool
	add := &cobra.Command{
		Use:   "add SITE [--ttl 24h] [--uses N] [--auto-approve]",
		Short: "Make another enrollment token for an existing site; its secret is shown once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTokenFlags(ttl, uses, "--ttl", "--uses"); err != nil {
				return err
			}
			c, _ := g.client()
			var out agentsapi.TokenAddReply
			body := agentsapi.TokenAddRequest{Site: args[0], TTL: ttl.String(), Uses: uses, AutoApprove: auto}
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/enrollment-tokens", body, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return writeLine(g.stdout, raw)
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			printNewToken(g, out.Token, out.TokenInfo)
			return nil
		},
	}
	add.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "the token stops working after this long")
	add.Flags().IntVar(&uses, "uses", 0, "how many bridges it may enroll (0: any number until it expires)")
	add.Flags().BoolVar(&auto, "auto-approve", false, "bridges enrolling with it are approved at once")
	var limit int
	ls := &cobra.Command{
		Use: "ls [SITE]", Short: "List enrollment tokens: expiry, uses left, state (never their secrets)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/enrollment-tokens"
			if len(args) == 1 {
				path += "?site=" + url.QueryEscape(args[0])
			}
			var out agentsapi.TokenListReply
			return g.showList(cmd, path, "tokens", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSITE\tCREATED\tEXPIRES\tUSES LEFT\tAUTO-APPROVE\tREVOKED\tSTATE")
				for _, t := range out.Tokens {
					revoked := "-"
					if !t.Revoked.IsZero() {
						revoked = t.Revoked.Local().Format(time.DateTime)
					}
					expires := "-"
					if !t.Expires.IsZero() {
						expires = t.Expires.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\n", t.ID, t.Site, t.Created.Local().Format(time.DateTime),
						expires, usesLeft(t), t.AutoApprove, revoked, t.State)
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "tokens")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an enrollment token: it enrolls no more bridges (those it enrolled stay)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/enrollment-tokens/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(t agentsapi.TokenView) string {
				return fmt.Sprintf("enrollment token %s of site %s revoked", t.ID, t.Site)
			})
		},
	}
	cmd.AddCommand(add, ls, revoke)
	return cmd
}
