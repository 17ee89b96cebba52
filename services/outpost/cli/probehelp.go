package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// printParamsHelp prints what a probe of kind takes, from its contract (libs/probes/<kind>):
// the same schema the bridge validates params against. asJSON prints the JSON Schema itself.
func printParamsHelp(w io.Writer, kind string, asJSON bool) error {
	spec, ok := catalog.Lookup(kind)
	if !ok {
		return usagef("--kind %q is not a probe kind (kinds: %s)", kind, strings.Join(catalog.Kinds(), ", "))
	}
	s := spec.ParamsSchema()
	if asJSON {
		_, err := fmt.Fprintf(w, "%s\n", s.JSON())
		return err
	}
	creds := "none"
	if len(spec.Credentials) > 0 {
		creds = strings.Join(spec.Credentials, ", ")
	}
	fmt.Fprintf(w, "%s: %s\ncapability: %s; credential types: %s\n\nparams (--param key=value):\n", spec.Kind, spec.Description, spec.Capability, creds)
	writeProps(w, s, "  ")
	if codes := spec.Codes; len(codes) > 0 {
		fmt.Fprintln(w, "\nerror codes of this kind (besides the common ones):")
		for _, c := range codes {
			fmt.Fprintf(w, "  %s: %s\n", c.Code, c.Description)
		}
	}
	return nil
}

func writeProps(w io.Writer, s *schema.Schema, indent string) {
	for _, name := range s.Order() {
		p := s.Properties[name]
		var notes []string
		if slices.Contains(s.Required, name) {
			notes = append(notes, "required")
		}
		if p.Default != nil {
			notes = append(notes, fmt.Sprintf("default %v", p.Default))
		}
		if len(p.Enum) > 0 {
			notes = append(notes, "one of "+strings.Trim(fmt.Sprint(p.Enum), "[]"))
		}
		if b := bounds(p); b != "" {
			notes = append(notes, b)
		}
		line := fmt.Sprintf("%s%s (%s)", indent, name, p.TypeName())
		if len(notes) > 0 {
			line += " [" + strings.Join(notes, "; ") + "]"
		}
		fmt.Fprintf(w, "%s\n%s    %s\n", line, indent, p.Description)
		if p.Type == "object" && len(p.Properties) > 0 {
			writeProps(w, p, indent+"    ")
		}
	}
}

func bounds(p *schema.Schema) string {
	lo, hi := p.Minimum, p.Maximum
	if p.Type == "array" && (p.MinItems != nil || p.MaxItems != nil) {
		var parts []string
		if p.MinItems != nil {
			parts = append(parts, fmt.Sprintf("at least %d", *p.MinItems))
		}
		if p.MaxItems != nil {
			parts = append(parts, fmt.Sprintf("at most %d", *p.MaxItems))
		}
		return strings.Join(parts, ", ") + " item(s)"
	}
	switch {
	case lo != nil && hi != nil:
		return fmt.Sprintf("%v-%v", *lo, *hi)
	case lo != nil:
		return fmt.Sprintf("≥ %v", *lo)
	case hi != nil:
		return fmt.Sprintf("≤ %v", *hi)
	}
	return ""
}

// kindsHelp lists the kinds for --kind's help.
func kindsHelp() string {
	return strings.Join(catalog.Kinds(), ", ")
}
