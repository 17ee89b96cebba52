package orchestration

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// OnFailure is what a step's failure does, written `on_failure: fail`, `on_failure:
// continue` or `on_failure: [steps…]` (compensating steps: they run one after another,
// once the step failed after its retries, and the run then fails).
type OnFailure struct {
	Action     string // "", fail, continue (empty with Compensate)
	Compensate []Step
}

// Continue reports whether the step's dependents run despite its failure.
func (o OnFailure) Continue() bool { return o.Action == "continue" }

// IsZero: the default (fail) is left out of JSON.
func (o OnFailure) IsZero() bool { return o.Action == "" && len(o.Compensate) == 0 }

// UnmarshalYAML takes a word or a list of steps; the steps are decoded strictly, as the
// definition is (an unknown field is an error).
func (o *OnFailure) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*o = OnFailure{Action: n.Value}
		return nil
	case yaml.SequenceNode:
		b, err := yaml.Marshal(n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		var steps []Step
		if err := dec.Decode(&steps); err != nil {
			return fmt.Errorf("on_failure steps: %w", err)
		}
		*o = OnFailure{Compensate: steps}
		return nil
	}
	return fmt.Errorf("line %d: on_failure: want fail, continue or a list of compensating steps", n.Line)
}

// MarshalJSON writes the word, or the list of steps.
func (o OnFailure) MarshalJSON() ([]byte, error) {
	if len(o.Compensate) > 0 {
		return json.Marshal(o.Compensate)
	}
	return json.Marshal(o.Action)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (o *OnFailure) UnmarshalJSON(b []byte) error {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) {
		*o = OnFailure{}
		return json.Unmarshal(b, &o.Compensate)
	}
	*o = OnFailure{}
	return json.Unmarshal(b, &o.Action)
}
