package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/version"
)

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show streams, consumer lag, DLQ size and the hub's rates at a glance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.show(cmd, "/api/v1/status", func(raw []byte) error {
				var st gatewayapi.Status
				if err := json.Unmarshal(raw, &st); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "hub %s — DLQ: %d messages\n", st.Version, st.DLQ.Messages)
				if r := st.Rates; r != nil {
					fmt.Fprintf(g.stdout, "rates (last %s): probes %.1f/s  scan %.1f addresses/s  CMDB %.1f CIs/s  alerts %.2f/s\n",
						time.Duration(r.WindowSeconds*float64(time.Second)).Round(time.Second), r.Probes, r.ScanAddresses, r.CMDBIngested, r.AlertWrites)
				}
				fmt.Fprintln(g.stdout)
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tCONSUMER\tPENDING\tACK PENDING\tREDELIVERED")
				for _, s := range st.Streams {
					fmt.Fprintf(tw, "%s\t%d\t%s\t\t\t\t\n", s.Name, s.Messages, humanBytes(s.Bytes))
					for _, c := range s.Consumers {
						fmt.Fprintf(tw, "\t\t\t%s\t%d\t%d\t%d\n", c.Name, c.Pending, c.AckPending, c.Redelivered)
					}
				}
				return tw.Flush()
			})
		},
	}
}

func newWhoami(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the name and role of the API token in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.show(cmd, "/api/v1/whoami", func(raw []byte) error {
				var id gatewayapi.Identity
				if err := json.Unmarshal(raw, &id); err != nil {
					return err
				}
				_, err := fmt.Fprintf(g.stdout, "%s (role %s) at %s\n", id.Name, id.Role, g.server)
				return err
			})
		},
	}
}

// show GETs path and prints the answer as it came with -o json, or through table.
func (g *globals) show(cmd *cobra.Command, path string, table func(raw []byte) error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.do(cmd.Context(), "GET", path, nil, &raw); err != nil {
		return err
	}
	if g.output == "json" {
		_, err := g.stdout.Write(raw)
		return err
	}
	return table(raw)
}

func newVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this outpost binary",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(map[string]string{"version": version.Version, "commit": version.Commit()})
			}
			fmt.Fprintf(g.stdout, "outpost %s %s\n", version.Version, version.Commit())
			return nil
		},
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
