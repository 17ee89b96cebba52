package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// enrollTokenV is an enrollment token as the API lists it (never its secret).
type enrollTokenV struct {
	ID          string    `json:"id"`
	Site        string    `json:"site"`
	AutoApprove bool      `json:"auto_approve"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
	MaxUses     int       `json:"max_uses"`
	Used        int       `json:"used"`
	UsesLeft    *int      `json:"uses_left"`
	Revoked     time.Time `json:"revoked"`
	State       string    `json:"state"`
}

func (t enrollTokenV) usesLeft() string {
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
func printNewToken(g *globals, secret string, t enrollTokenV) {
	fmt.Fprintf(g.stdout, "enrollment token %s (give it to the site's bridges, --token; shown once):\n  %s\n", t.ID, secret)
	fmt.Fprintf(g.stdout, "expires %s; enrolls %s bridge(s)\n", t.Expires.Local().Format(time.DateTime), t.usesLeft())
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
			var out struct {
				Token     string       `json:"token"`
				TokenInfo enrollTokenV `json:"token_info"`
			}
			body := map[string]any{"site": args[0], "ttl": ttl.String(), "uses": uses, "auto_approve": auto}
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
			var out struct {
				Tokens []enrollTokenV `json:"tokens"`
			}
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
						expires, t.usesLeft(), t.AutoApprove, revoked, t.State)
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
			return printResult(g, raw, func(m map[string]any) string {
				return fmt.Sprintf("enrollment token %v of site %v revoked", m["id"], m["site"])
			})
		},
	}
	cmd.AddCommand(add, ls, revoke)
	return cmd
}
