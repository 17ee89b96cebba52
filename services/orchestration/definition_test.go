package orchestration

import (
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

const goodDefinition = `
name: restart-web
inputs:
  host: {type: string, required: true}
  port: {type: number, default: 80}
steps:
  - id: check
    kind: ssh_exec
    site: lab
    target: '${{ inputs.host }}'
    credentials: [lab-ssh]
    params: {commands: ["systemctl is-active nginx"]}
    timeout: 30s
    retry: {max_attempts: 3, backoff: exponential, initial: 1s}
  - id: ok
    kind: approval
    needs: [check]
    if: '${{ steps.check.output.exit_code != 0 }}'
  - id: record
    kind: cmdb_update
    needs: [ok]
    params: {ci: {class: linux_server, ip_address: '${{ inputs.host }}'}, set: {last_restart: '${{ now() }}'}}
`

// Bad definitions are refused with the file, the step and the reason.
func TestDefinitionValidation(t *testing.T) {
	if _, err := ParseDefinition("good.yaml", []byte(goodDefinition)); err != nil {
		t.Fatalf("a good definition is refused: %v", err)
	}
	for _, c := range []struct {
		name, yaml string
		want       []string // every fragment must be in the error
	}{
		{"cycle", `
name: c
steps:
  - {id: a, kind: wait, params: {duration: 1s}, needs: [c]}
  - {id: b, kind: wait, params: {duration: 1s}, needs: [a]}
  - {id: c, kind: wait, params: {duration: 1s}, needs: [b]}
`, []string{"bad.yaml: step a: needs form a cycle: a → c → b → a"}},
		{"unknown kind", `
name: k
steps:
  - {id: a, kind: teleport}
`, []string{"bad.yaml: step a: unknown kind \"teleport\"", "ssh_exec", "approval"}},
		{"unknown step in needs", `
name: n
steps:
  - {id: a, kind: approval, needs: [nope]}
`, []string{"bad.yaml: step a: needs \"nope\": no step has that id"}},
		{"bad expression", `
name: e
inputs: {host: {}}
steps:
  - {id: a, kind: http_request, site: lab, target: '${{ inputs.host + }}'}
`, []string{"bad.yaml: step a: target: bad expression"}},
		{"undeclared input", `
name: e
steps:
  - {id: a, kind: http_request, site: lab, target: '${{ inputs.host }}'}
`, []string{"bad.yaml: step a: target:", "inputs.host, which the workflow does not declare"}},
		{"step output not needed", `
name: e
steps:
  - {id: a, kind: approval}
  - {id: b, kind: approval, if: "steps.a.state == 'succeeded'"}
`, []string{"bad.yaml: step b: if:", "steps.a, which this step does not need"}},
		{"unknown identifier", `
name: e
steps:
  - {id: a, kind: approval, if: '${{ secrets.x }}'}
`, []string{"bad.yaml: step a: if: bad expression"}},
		{"probe without site, bad params, bad retry", `
name: p
steps:
  - {id: a, kind: http_request, params: {port: "eighty"}, retry: {max_attempts: 0, backoff: linear}}
`, []string{"step a: site or site_of is required", "params.port", "retry.max_attempts 0", "retry.backoff \"linear\""}},
		{"duplicate ids and bad names", `
name: Bad_Name
steps:
  - {id: a, kind: approval}
  - {id: a, kind: approval}
  - {id: B-2, kind: approval}
`, []string{"name \"Bad_Name\"", "step a: id used by another step", "step B-2: id:"}},
		{"unknown field", `
name: f
steps:
  - {id: a, kind: approval, wait_for: ever}
`, []string{"bad.yaml: not a workflow definition", "wait_for"}},
		{"built-in params", `
name: b
steps:
  - {id: w, kind: wait}
  - {id: u, kind: cmdb_update, params: {ci: {class: linux_server}}}
  - {id: n, kind: notify, site: lab}
`, []string{"step w: params.duration is required", "step u: params.ci needs at least one identifying attribute", "step u: params.set is required",
			"step n: params.url is required", "step n: site, site_of, target, credentials and priority are for probe kinds"}},
		{"for_each and site_of", `
name: fe
inputs: {hosts: {}}
steps:
  - {id: a, kind: http_request, site: lab, site_of: '${{ inputs.hosts }}', for_each: 'inputs.hosts', concurrency: 5000}
  - {id: b, kind: approval, concurrency: 3}
`, []string{"step a: site and site_of: give one", "step a: for_each \"inputs.hosts\": want one expression giving a list",
			"step a: concurrency 5000: want 1 to 1000", "step b: concurrency is for for_each steps"}},
		{"item outside a for_each", `
name: fe
steps:
  - {id: c, kind: http_request, site: lab, target: '${{ item }}'}
`, []string{"step c: target: bad expression \"item\""}},
		{"item in the list of a for_each", `
name: fe
steps:
  - {id: d, kind: http_request, site: lab, for_each: '${{ item }}', target: '${{ item.ip }}'}
`, []string{"step d: for_each: bad expression \"item\""}},
		{"compensating steps", `
name: comp
steps:
  - id: a
    kind: approval
    on_failure:
      - {id: undo, kind: approval, needs: [a]}
      - {id: undo, kind: wait, params: {duration: 1s}, for_each: '${{ [1] }}'}
      - {id: x, kind: teleport}
  - {id: b, kind: approval, needs: [a], on_failure: sometimes}
`, []string{"step a:undo: needs: compensating steps run one after another", "step a:undo: id used by another compensating step of a",
			"step a:undo: for_each is not supported", "step a:x: unknown kind \"teleport\"",
			"step b: on_failure \"sometimes\": want fail, continue or a list of compensating steps"}},
		{"compensating step reading a later step", `
name: comp
steps:
  - {id: a, kind: approval, on_failure: [{id: y, kind: approval, if: '${{ steps.b.state == "failed" }}'}]}
  - {id: b, kind: approval, needs: [a]}
`, []string{"step a:y: if:", "steps.b"}},
		{"compensating step with an unknown field", `
name: comp
steps:
  - {id: a, kind: approval, on_failure: [{id: u, kind: approval, wait_for: ever}]}
`, []string{"bad.yaml: not a workflow definition", "wait_for"}},
		{"workflow step and outputs", `
name: parent
steps:
  - {id: s, kind: workflow, params: {version: 0, inputs: [1], other: x}}
outputs:
  bad-name: '${{ steps.s.output }}'
  x: '${{ steps.nope.output }}'
`, []string{"step s: params.other: workflow takes workflow, version, inputs", "step s: params.workflow is required",
			"step s: params.version 0", "step s: params.inputs: want a map", "output \"bad-name\"", "outputs.x:"}},
		{"triggers", `
name: trig
inputs: {ci: {required: true}, other: {}}
on:
  cron: "every tuesday"
  cmdb_change: {class: "Linux Server", op: renamed}
  inputs: {nope: x, other: '${{ event.ci + }}'}
steps:
  - {id: a, kind: approval}
`, []string{"on: cron \"every tuesday\"", "on: cmdb_change.class \"Linux Server\"", "on: cmdb_change.op \"renamed\"",
			"on: inputs.nope: the workflow declares no such input", "on: inputs.other: bad expression", "on: input ci is required and has no default"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseDefinition("bad.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\n does not say %q", err, w)
				}
			}
		})
	}
}

// A run's inputs are checked against the definition: required, unknown, typed.
func TestRunInputs(t *testing.T) {
	wf, err := ParseDefinition("good.yaml", []byte(goodDefinition))
	if err != nil {
		t.Fatal(err)
	}
	d := api.Definition{Name: wf.Name, Version: 2, Workflow: wf.Workflow}
	for _, c := range []struct {
		name  string
		given map[string]any
		want  string // error fragment; "" = accepted
		check func(map[string]any) bool
	}{
		{"missing required", map[string]any{}, "input host is required by workflow restart-web v2: give --input host=…", nil},
		{"unknown", map[string]any{"host": "h", "hots": "x"}, "input \"hots\": workflow restart-web v2 takes no such input (it takes host, port)", nil},
		{"wrong type", map[string]any{"host": "h", "port": "eighty"}, "input port: eighty is not a number", nil},
		{"converted and defaulted", map[string]any{"host": "10.0.0.1"}, "", func(m map[string]any) bool { return m["host"] == "10.0.0.1" && m["port"] == 80 }},
		{"string to number", map[string]any{"host": "h", "port": "8080"}, "", func(m map[string]any) bool { return m["port"] == 8080.0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := typedInputs(d, c.given)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %v, want %q", err, c.want)
				}
				return
			}
			if err != nil || !c.check(got) {
				t.Fatalf("inputs %v, err %v", got, err)
			}
		})
	}
}

// Expressions: a whole ${{ }} keeps its type, embedded ones are formatted into the text.
func TestRender(t *testing.T) {
	r := &api.Run{ID: "R1", Workflow: "w", Version: 3, Inputs: map[string]any{"host": "h1", "ports": []any{22.0, 80.0}},
		Steps: []api.StepRun{{ID: "a", State: api.StepSucceeded, Output: []byte(`{"exit_code": 2}`)}}}
	env := runEnv(r, func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }, nil)
	got, err := render(map[string]any{"list": "${{ inputs.ports }}", "text": "host ${{ inputs.host }} run ${{ run.id }} v${{ run.version }}",
		"code": "${{ steps.a.output.exit_code }}", "at": "${{ now() }}"}, env)
	if err != nil {
		t.Fatal(err)
	}
	m := got.(map[string]any)
	if l, ok := m["list"].([]any); !ok || len(l) != 2 || m["text"] != "host h1 run R1 v3" || m["code"] != 2.0 || m["at"] != "2030-01-02T03:04:05Z" {
		t.Fatalf("rendered %#v", m)
	}
	if ok, err := condition("${{ steps.a.output.exit_code != 0 }}", env); !ok || err != nil {
		t.Fatalf("condition: %v %v", ok, err)
	}
	if _, err := condition("inputs.host", env); err == nil || !strings.Contains(err.Error(), "not true or false") {
		t.Fatalf("a non-bool if: %v", err)
	}
}

// An item may be anything: a string to split, a map to index.
func TestItemExpressions(t *testing.T) {
	_, err := ParseDefinition("items.yaml", []byte(`
name: items
inputs: {hosts: {}}
steps:
  - id: a
    kind: ssh_exec
    site: lab
    for_each: '${{ split(inputs.hosts, ",") }}'
    target: '${{ split(item, "|")[0] }}'
    credentials: ['${{ split(item, "|")[1] }}']
    params: {commands: ['echo ${{ index }} ${{ now() }}']}
  - {id: b, kind: http_request, site: lab, needs: [a], for_each: '${{ steps.a.output }}', target: '${{ item.ip }}'}
`))
	if err != nil {
		t.Fatal(err)
	}
}
