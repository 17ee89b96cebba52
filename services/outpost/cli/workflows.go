package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

func newWorkflow(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "workflow", Short: "Workflows: definitions (YAML), runs on the sites' bridges, approvals"}
	cmd.AddCommand(&cobra.Command{
		Use: "add FILE", Short: "Add a workflow definition (a new version when the name exists)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := os.ReadFile(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			c, _ := g.client()
			var out api.AddResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/workflows", api.AddRequest{File: args[0], YAML: string(src)}, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "workflow %s version %d added (%d steps) — `outpost workflow run %s` starts it\n", out.Name, out.Version, out.Steps, out.Name)
			return nil
		},
	})
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List workflow definitions (latest versions)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.ListResponse
			return g.showList(cmd, "/api/v1/workflows", "workflows", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tSTEPS\tADDED\tDESCRIPTION")
				for _, w := range out.Workflows {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", w.Name, w.Version, w.Steps, w.Added.Format(time.DateTime), clip(w.Description, 60))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "workflows")
	cmd.AddCommand(ls)
	var version int
	show := &cobra.Command{
		Use: "show NAME [--version N]", Short: "Show a workflow definition as it was added", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/workflows/" + url.PathEscape(args[0])
			if version > 0 {
				path += fmt.Sprintf("?version=%d", version)
			}
			return g.show(cmd, path, func(raw []byte) error {
				var d api.Definition
				if err := json.Unmarshal(raw, &d); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "# %s version %d of %d, added %s\n%s", d.Name, d.Version, d.Versions, d.Added.Format(time.DateTime), d.YAML)
				return nil
			})
		},
	}
	show.Flags().IntVar(&version, "version", 0, "a version (default: the latest)")
	cmd.AddCommand(show)
	cmd.AddCommand(newWorkflowRun(g), newWorkflowRuns(g))
	cmd.AddCommand(&cobra.Command{
		Use: "cancel RUN", Short: "Cancel a workflow run (what runs on a bridge is not recalled; its result is ignored)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.runAction(cmd, "/api/v1/workflow-runs/"+url.PathEscape(args[0])+"/cancel", nil)
		},
	})
	var reject bool
	var comment string
	approve := &cobra.Command{
		Use: "approve RUN STEP [--reject]", Short: "Approve (or refuse) an approval step waiting in a run", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.runAction(cmd, "/api/v1/workflow-runs/"+url.PathEscape(args[0])+"/steps/"+url.PathEscape(args[1])+"/approve",
				api.Decision{Reject: reject, Comment: comment})
		},
	}
	approve.Flags().BoolVar(&reject, "reject", false, "refuse: the step fails (and with it the run, unless on_failure: continue)")
	approve.Flags().StringVar(&comment, "comment", "", "a word for the record")
	cmd.AddCommand(approve)
	return cmd
}

// runAction POSTs to a run's action and shows the run as it is after it.
func (g *globals) runAction(cmd *cobra.Command, path string, body any) error {
	c, _ := g.client()
	var raw []byte
	if err := c.do(cmd.Context(), "POST", path, body, &raw); err != nil {
		return err
	}
	if g.output == "json" {
		return writeLine(g.stdout, raw)
	}
	var r api.Run
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	return printWorkflowRun(g.stdout, r)
}

func newWorkflowRun(g *globals) *cobra.Command {
	var inputs []string
	var wait bool
	var version int
	cmd := &cobra.Command{
		Use: "run NAME [--input k=v]… [--wait]", Short: "Start a run of a workflow", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := api.RunOptions{Version: version, Inputs: map[string]any{}}
			for _, kv := range inputs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--input %q: want name=value", kv)
				}
				opts.Inputs[k] = v
			}
			c, _ := g.client()
			var r api.Run
			if err := c.do(cmd.Context(), "POST", "/api/v1/workflows/"+url.PathEscape(args[0])+"/runs", opts, &r); err != nil {
				return err
			}
			if wait {
				var err error
				if r, err = waitWorkflowRun(cmd.Context(), c, r.ID, g.stderr); err != nil {
					return err
				}
			}
			if g.output == "json" {
				if err := json.NewEncoder(g.stdout).Encode(r); err != nil {
					return err
				}
			} else if wait {
				if err := printWorkflowRun(g.stdout, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "run %s of %s v%d started — `outpost workflow runs show %s` follows it\n", r.ID, r.Workflow, r.Version, r.ID)
			}
			if wait && r.State != api.RunCompleted {
				return fmt.Errorf("run %s %s: %s", r.ID, r.State, r.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&inputs, "input", nil, "an input, name=value (repeatable)")
	f.BoolVar(&wait, "wait", false, "wait for the run to finish (approvals are given from another shell)")
	f.IntVar(&version, "version", 0, "a version of the workflow (default: the latest)")
	return cmd
}

// waitWorkflowRun polls a run until it is finished, telling stderr once about each step
// that waits for an approval.
func waitWorkflowRun(ctx context.Context, c *client, id string, stderr io.Writer) (api.Run, error) {
	told := map[string]bool{}
	for {
		var r api.Run
		if err := c.do(ctx, "GET", "/api/v1/workflow-runs/"+url.PathEscape(id), nil, &r); err != nil {
			return r, err
		}
		if r.Done() {
			return r, nil
		}
		for _, st := range r.Steps {
			if st.Kind == api.KindApproval && st.State == api.StepWaiting && !told[st.ID] {
				told[st.ID] = true
				fmt.Fprintf(stderr, "step %s waits for an approval: outpost workflow approve %s %s [--reject]\n", st.ID, r.ID, st.ID)
			}
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func newWorkflowRuns(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Short: "Workflow runs: list, show"}
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List workflow runs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.RunsResponse
			return g.showList(cmd, "/api/v1/workflow-runs", "runs", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RUN\tWORKFLOW\tSTATE\tSTARTED\tSTEPS")
				for _, r := range out.Runs {
					fmt.Fprintf(tw, "%s\t%s v%d\t%s\t%s\t%s\n", r.ID, r.Workflow, r.Version, r.State, r.Created.Format(time.DateTime), stepCounts(r))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "runs")
	cmd.AddCommand(ls)
	var events bool
	var output string
	show := &cobra.Command{
		Use: "show RUN [--events | --output STEP]", Short: "Show a run: each step's state, attempts and reason; its history; a step's whole output", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base := "/api/v1/workflow-runs/" + url.PathEscape(args[0])
			switch {
			case events && output != "":
				return fmt.Errorf("--events or --output, not both")
			case output != "":
				return g.workflowOutput(cmd, base+"/steps/"+url.PathEscape(output)+"/output")
			case events:
				return g.show(cmd, base+"/events", func(raw []byte) error {
					var h api.EventsResponse
					if err := json.Unmarshal(raw, &h); err != nil {
						return err
					}
					tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "SEQ	TIME	EVENT	STEP	ATTEMPT	STATE")
					for _, e := range h.Events {
						state := ""
						if e.Into != nil {
							state = e.Into.State
						} else if e.Run != nil {
							state = e.Run.State
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Time.Format(time.DateTime), e.Type, orDash(e.Step), e.Attempt, orDash(state))
					}
					return tw.Flush()
				})
			}
			return g.show(cmd, base, func(raw []byte) error {
				var r api.Run
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				return printWorkflowRun(g.stdout, r)
			})
		},
	}
	show.Flags().BoolVar(&events, "events", false, "the run's history of events, oldest first")
	show.Flags().StringVar(&output, "output", "", "print this step's whole output (JSON), fetched in pages even when kept by reference")
	cmd.AddCommand(show)
	return cmd
}

// workflowOutput prints a step's whole output, page after page.
func (g *globals) workflowOutput(cmd *cobra.Command, path string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	var off int64
	for {
		var page api.OutputResponse
		if err := c.do(cmd.Context(), "GET", fmt.Sprintf("%s?offset=%d", path, off), nil, &page); err != nil {
			return err
		}
		if page.Offset != off {
			return fmt.Errorf("the hub answered the page at %d, asked for %d", page.Offset, off)
		}
		if _, err := g.stdout.Write(page.Data); err != nil {
			return err
		}
		if page.Next == 0 {
			_, err := fmt.Fprintln(g.stdout)
			return err
		}
		off = page.Next
	}
}

// stepCounts is "3 succeeded, 1 waiting" for a run's steps.
func stepCounts(r api.Run) string {
	n := map[string]int{}
	var order []string
	for _, st := range r.Steps {
		if n[st.State] == 0 {
			order = append(order, st.State)
		}
		n[st.State]++
	}
	parts := make([]string, 0, len(order))
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
	}
	return strings.Join(parts, ", ")
}

func printWorkflowRun(w io.Writer, r api.Run) error {
	fmt.Fprintf(w, "run %s of %s v%d: %s", r.ID, r.Workflow, r.Version, r.State)
	if r.Reason != "" {
		fmt.Fprintf(w, " — %s", r.Reason)
	}
	fmt.Fprintln(w)
	if t := r.Trigger; t != nil {
		fmt.Fprintf(w, "started by %s", t.Kind)
		if !t.Slot.IsZero() {
			fmt.Fprintf(w, " (slot %s)", t.Slot.Format(time.RFC3339))
		}
		if t.Detail != "" {
			fmt.Fprintf(w, ": %s", t.Detail)
		} else if t.Event != "" {
			fmt.Fprintf(w, ": %s", t.Event)
		}
		fmt.Fprintln(w)
	}
	if p := r.Parent; p != nil {
		fmt.Fprintf(w, "child of run %s (step %s)\n", p.Run, p.Step)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Outputs)) {
		b, _ := json.Marshal(r.Outputs[k])
		fmt.Fprintf(w, "output %s = %s\n", k, clip(string(b), 200))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tKIND\tSTATE\tATTEMPTS\tREASON")
	for _, st := range r.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", st.ID, st.Kind, st.State, len(st.Attempts), orDash(clip(st.Reason, 80)))
	}
	return tw.Flush()
}
