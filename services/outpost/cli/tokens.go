package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/spf13/cobra"
)

func newTokens(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Manage API tokens (admin)"}
	var role, name string
	create := &cobra.Command{
		Use: "create --role admin|operator|viewer --name N", Short: "Create a token; its secret is shown once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "POST", "/api/v1/tokens", gatewayapi.TokenCreateRequest{Name: name, Role: role}, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(t gatewayapi.TokenCreated) string {
				return fmt.Sprintf("token %s (%s, role %s) — shown once:\n  %s", t.ID, t.Name, t.Role, t.Token)
			})
		},
	}
	create.Flags().StringVar(&role, "role", "viewer", "admin, operator or viewer")
	create.Flags().StringVar(&name, "name", "", "what or who the token is for")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out gatewayapi.TokenList
			return g.showList(cmd, "/api/v1/tokens", "tokens", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tREVOKED")
				for _, t := range out.Tokens {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.ID, t.Name, t.Role, t.Created.Format(time.DateTime), t.Revoked)
				}
				return tw.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID|NAME", Short: "Revoke a token by ID, or every token of a name: they stop working at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/tokens/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(r gatewayapi.TokenRevoked) string {
				var ids []string
				for _, t := range r.Revoked {
					ids = append(ids, t.ID)
				}
				return fmt.Sprintf("revoked %d token(s): %s", len(ids), strings.Join(ids, ", "))
			})
		},
	}
	limitFlag(ls, &limit, "tokens")
	cmd.AddCommand(create, ls, revoke)
	return cmd
}
