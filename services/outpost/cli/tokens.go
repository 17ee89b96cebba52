package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

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
			if err := c.do(cmd.Context(), "POST", "/api/v1/tokens", map[string]string{"name": name, "role": role}, &raw); err != nil {
				return err
			}
			return printResult(g, raw, func(m map[string]any) string {
				return fmt.Sprintf("token %v (%v, role %v) — shown once:\n  %v", m["id"], m["name"], m["role"], m["token"])
			})
		},
	}
	create.Flags().StringVar(&role, "role", "viewer", "admin, operator or viewer")
	create.Flags().StringVar(&name, "name", "", "what or who the token is for")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Tokens []struct {
					ID, Name, Role string
					Created        time.Time
					Revoked        bool
				}
			}
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
			return printResult(g, raw, func(m map[string]any) string {
				var ids []string
				list, _ := m["revoked"].([]any)
				for _, t := range list {
					if t, ok := t.(map[string]any); ok {
						ids = append(ids, fmt.Sprint(t["id"]))
					}
				}
				return fmt.Sprintf("revoked %d token(s): %s", len(ids), strings.Join(ids, ", "))
			})
		},
	}
	limitFlag(ls, &limit, "tokens")
	cmd.AddCommand(create, ls, revoke)
	return cmd
}
