package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// definitions reads the definitions of a YAML file: one mapping, a list of mappings, or
// several documents separated by ---. Each is decoded strictly (an unknown key is a typo,
// not something to ignore) and checked with validate; every problem of every definition is
// reported at once, as FILE:LINE: name: problem, before anything is sent.
func definitions[T any](path string, validate func(T) error) ([]T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("-f %s: %v", path, err)
	}
	var nodes []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, usagef("%s: not YAML: %v", path, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		switch n := doc.Content[0]; n.Kind {
		case yaml.MappingNode:
			nodes = append(nodes, n)
		case yaml.SequenceNode:
			nodes = append(nodes, n.Content...)
		default:
			return nil, usagef("%s:%d: want a definition (a mapping) or a list of them", path, n.Line)
		}
	}
	if len(nodes) == 0 {
		return nil, usagef("%s: no definition in the file", path)
	}
	var out []T
	var errs []error
	for _, n := range nodes {
		var v any
		if err := n.Decode(&v); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", path, n.Line, err))
			continue
		}
		b, err := json.Marshal(stringKeys(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", path, n.Line, err))
			continue
		}
		var d T
		jd := json.NewDecoder(bytes.NewReader(b))
		jd.DisallowUnknownFields()
		strictErr := jd.Decode(&d)
		if strictErr != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", path, n.Line, strings.TrimPrefix(strictErr.Error(), "json: ")))
			// an unknown key alone still lets the rest be checked: every problem at once
			if d = *new(T); json.Unmarshal(b, &d) != nil {
				continue
			}
		}
		if err := validate(d); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				errs = append(errs, fmt.Errorf("%s:%d: %s", path, n.Line, line))
			}
			continue
		}
		if strictErr == nil {
			out = append(out, d)
		}
	}
	if len(errs) > 0 {
		return nil, usageError{fmt.Errorf("%w\nfix the file and run the command again; nothing was sent", errors.Join(errs...))}
	}
	return out, nil
}

// stringKeys turns YAML mappings with non-string keys ({5: critical}) into JSON objects.
func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = stringKeys(e)
		}
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = stringKeys(e)
		}
	}
	return v
}

// addDefinitions sends each definition of -f FILE to POST path, in the file's order, and
// prints one line per stored definition (or, with -o json, the stored definitions).
func addDefinitions[T any](g *globals, cmd *cobra.Command, file, path string, validate func(T) error, line func(T) string) error {
	if file == "" {
		return usagef("-f FILE: want a YAML file of definitions (see --help for an example)")
	}
	defs, err := definitions(file, validate)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	var stored []json.RawMessage
	for _, d := range defs {
		var raw []byte
		if err := c.do(cmd.Context(), "POST", path, d, &raw); err != nil {
			if len(stored) > 0 {
				return fmt.Errorf("%w (the %d definition(s) before it were stored)", err, len(stored))
			}
			return err
		}
		stored = append(stored, raw)
		if g.output != "json" {
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, line(v))
		}
	}
	if g.output == "json" {
		b, err := json.Marshal(map[string]any{"items": stored})
		if err != nil {
			return err
		}
		return writeLine(g.stdout, b)
	}
	return nil
}

// removeDefinition is `rm NAME` of a definition list.
func removeDefinition[T any](g *globals, what, path string, line func(T) string) *cobra.Command {
	return &cobra.Command{
		Use: "rm NAME", Short: "Remove a " + what + ": its collection stops", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(cmd.Context(), "DELETE", path+"/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return printResult(g, raw, line)
		},
	}
}

const metricsExample = `  # load.yaml: a gauge read every 30s from two hosts' JSON status page
  name: load
  site: dc1
  kind: http_request        # or snmp_get, ssh_exec
  targets: [10.1.0.5, 10.1.0.6]
  interval: 30s
  params: {port: 80, path: /status.json}
  value: cpu.load           # http_request: JSON path; snmp_get: OID; ssh_exec: regexp
  baseline: {threshold: 4, min_samples: 10, severity: major}

  outpost metrics add -f load.yaml`

func newMetrics(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "metrics", Short: "Metrics collected on a schedule through a site's bridges, with baselines and anomaly alerts"}
	var file string
	add := &cobra.Command{
		Use:   "add -f FILE.yaml",
		Short: "Add (or replace by name) metric definitions from a YAML file",
		Long: "Add metric definitions: every interval one probe per target through the site's bridges; each target is a\n" +
			"series with an EWMA and hour-of-week baseline; a sample scoring at or above the threshold raises an anomaly\n" +
			"event (type anomaly, source metrics) and a normal sample clears it. The file holds one definition, a list, or\n" +
			"several YAML documents. Name a stored credential (outpost credentials ls), never a secret.\n\n" + metricsExample,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return addDefinitions(g, cmd, file, "/api/v1/metrics", api.MetricDef.Validate, func(d api.MetricDef) string {
				return fmt.Sprintf("metric %s: %s on %s every %s, %d target(s)", d.Name, d.Kind, d.Site, d.Interval, len(d.Targets))
			})
		},
	}
	add.Flags().StringVarP(&file, "file", "f", "", "YAML file of metric definitions")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List metric definitions", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.MetricDefsResponse
			return g.showList(cmd, "/api/v1/metrics", "items", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSITE\tKIND\tINTERVAL\tTARGETS\tVALUE\tCOUNTER")
				for _, d := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", d.Name, d.Site, d.Kind, d.Interval, clip(strings.Join(d.Targets, ","), 40),
						orDash(clip(d.Value, 40)), d.Counter)
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "definitions")
	var metric string
	var slimit int
	series := &cobra.Command{
		Use: "series [--metric NAME]", Short: "List series (definition × target): baseline, last sample, score, last error", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/api/v1/metric-series"
			if metric != "" {
				path += "?" + url.Values{"metric": {metric}}.Encode()
			}
			var out api.SeriesListResponse
			return g.showList(cmd, path, "items", slimit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "METRIC\tSITE\tTARGET\tSAMPLES\tMEAN\tSTDDEV\tLAST\tSCORE\tANOMALY\tLAST SAMPLE\tERRORS\tLAST ERROR")
				for _, s := range out.Items {
					last := "-"
					if !s.LastTime.IsZero() {
						last = s.LastTime.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.4g\t%.4g\t%.4g\t%.2f\t%v\t%s\t%d\t%s\n", s.Metric, s.Site, s.Target, s.Samples, s.Mean, s.StdDev,
						s.LastValue, s.LastScore, s.Anomalous, last, s.Errors, orDash(clip(s.LastError, 50)))
				}
				return tw.Flush()
			})
		},
	}
	series.Flags().StringVar(&metric, "metric", "", "only this definition's series")
	limitFlag(series, &slimit, "series")
	cmd.AddCommand(add, ls, series, removeDefinition(g, "metric definition", "/api/v1/metrics",
		func(d api.MetricDef) string { return "metric " + d.Name + " removed" }))
	return cmd
}

const connectorsExample = `  # tool.yaml: another tool's event API, polled every minute through dc1's bridges
  name: nagios
  site: dc1
  url: http://10.1.0.9/api/events
  interval: 1m
  credential: nagios-api    # a stored http credential: its Authorization goes with the request
  records: data.events      # path to the array of records in the answer
  since_param: since        # the API answers only what is newer than ?since=RFC3339
  fields: {id: id, node: host, type: check, severity: state, message: output, time: last_change}
  additional: {ticket: meta.ticket}
  severities: {CRITICAL: critical, WARNING: warning, OK: clear}

  outpost connectors add -f tool.yaml`

func newConnectors(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "connectors", Short: "Pull connectors: other tools' event APIs polled through a site's bridges"}
	var file string
	add := &cobra.Command{
		Use:   "add -f FILE.yaml",
		Short: "Add (or replace by name) pull connectors from a YAML file",
		Long: "Add pull connectors: every interval the site's bridge GETs the URL; each record of the answer is mapped\n" +
			"to an event (source connector-NAME) by fields, severities and additional. A record already taken (by id at\n" +
			"the newest time) is skipped; a record that cannot be mapped is rejected, counted and dead-lettered with its\n" +
			"reason. The file holds one connector, a list, or several YAML documents.\n\n" + connectorsExample,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return addDefinitions(g, cmd, file, "/api/v1/connectors", api.Connector.Validate, func(d api.Connector) string {
				return fmt.Sprintf("connector %s: %s through %s every %s", d.Name, d.URL, d.Site, d.Interval)
			})
		},
	}
	add.Flags().StringVarP(&file, "file", "f", "", "YAML file of connectors")
	var limit int
	ls := &cobra.Command{
		Use: "ls", Short: "List pull connectors with their polls, events, skipped and rejected records", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.ConnectorsResponse
			return g.showList(cmd, "/api/v1/connectors", "items", limit, &out, func() error {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSITE\tINTERVAL\tURL\tPOLLS\tEVENTS\tSKIPPED\tREJECTED\tLAST POLL\tLAST ERROR")
				for _, d := range out.Items {
					st := api.ConnectorState{}
					if d.State != nil {
						st = *d.State
					}
					last := "-"
					if !st.LastPoll.IsZero() {
						last = st.LastPoll.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", d.Name, d.Site, d.Interval, clip(d.URL, 50), st.Polls, st.Events,
						st.Skipped, st.Rejected, last, orDash(clip(st.LastError, 50)))
				}
				return tw.Flush()
			})
		},
	}
	limitFlag(ls, &limit, "connectors")
	cmd.AddCommand(add, ls, removeDefinition(g, "pull connector", "/api/v1/connectors",
		func(d api.Connector) string { return "connector " + d.Name + " removed" }))
	return cmd
}
