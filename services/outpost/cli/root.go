// Package cli is the `outpost` command line: it talks to the gateway over HTTP (and, for
// `outpost up`, starts the hub in process).
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes: 0 ok, 1 failure, 2 usage.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// usageError marks errors that are the caller's wrong invocation.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// globals are the flags every command shares.
type globals struct {
	server string
	token  string
	data   string
	output string
	stdout io.Writer
	stderr io.Writer
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "error:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "outpost",
		Short:         "Outpost: discover, import from, automate and watch networks the hub cannot reach",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" && g.output != "dot" {
				return usagef("-o %q: want table or json (dot: outpost services show|map)", g.output)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("OUTPOST_SERVER", "http://127.0.0.1:8080"), "gateway URL (env OUTPOST_SERVER)")
	pf.StringVar(&g.token, "token", os.Getenv("OUTPOST_TOKEN"), "API token (env OUTPOST_TOKEN; default: <data>/admin.token of a local hub)")
	pf.StringVar(&g.data, "data", "", "data directory of a local hub (its admin.token is used when no token is given)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newUp(g), newStatus(g), newVersion(g), newSite(g), newAgents(g), newProbe(g), newLab(g), newCI(g), newTokens(g), newDiscover(g), newWorkflow(g), newRuns(g), newSchedules(g), newCredentials(g), newHostKeys(g),
		newAudit(g), newDLQ(g), newClassifiers(g), newWhoami(g), newEvents(g), newAlerts(g), newSilences(g), newImport(g), newServices(g), newBridgeBuilds(g))
	root.AddCommand(newServe(g), newHubCreds(g), newReplay(g)) // scale-out: services as replicas on a NATS cluster
	root.AddCommand(newMetrics(g), newConnectors(g))           // correlation's collection definitions
	// Now rather than at Execute, so strictGroups covers it; it keeps the writer it sees now.
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.InitDefaultCompletionCmd()
	strictGroups(root)
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// strictGroups makes every command that only groups others (site, agents, ci…) refuse an
// unknown subcommand with a usage error (exit 2) instead of printing help and exiting 0, and
// marks every argument-count error as a usage error where cobra makes it, so no caller has to
// recognise cobra's messages.
func strictGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		strictGroups(c)
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q; `%s --help` lists them", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
	if args := cmd.Args; args != nil {
		cmd.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
}
