package envelope

import (
	"errors"
	"fmt"
	"slices"
)

// required returns a MissingFieldError for the first empty field of the list.
func required(in string, fields ...[2]string) error {
	for _, f := range fields {
		if f[1] == "" {
			return &MissingFieldError{Field: f[0], In: in}
		}
	}
	return nil
}

func (p *Probe) Validate() error {
	if err := required(TypeProbe, [2]string{"id", p.ID}, [2]string{"app", p.App}, [2]string{"site", p.Site},
		[2]string{"priority", p.Priority}, [2]string{"kind", p.Kind}); err != nil {
		return err
	}
	if p.Deadline.IsZero() {
		return &MissingFieldError{Field: "deadline", In: TypeProbe}
	}
	if !slices.Contains(Priorities, p.Priority) {
		return &MalformedError{Type: TypeProbe, Err: fmt.Errorf("priority %q: want one of %v", p.Priority, Priorities)}
	}
	return nil
}

var statuses = []Status{StatusOK, StatusPartial, StatusError, StatusTimeout, StatusDenied}

func (r *Result) Validate() error {
	if err := required(TypeResult, [2]string{"id", r.ID}, [2]string{"probe", r.Probe}, [2]string{"app", r.App},
		[2]string{"site", r.Site}, [2]string{"kind", r.Kind}, [2]string{"status", string(r.Status)}); err != nil {
		return err
	}
	if !slices.Contains(statuses, r.Status) {
		return &MalformedError{Type: TypeResult, Err: fmt.Errorf("status %q: want one of %v", r.Status, statuses)}
	}
	return nil
}

func (e *Event) Validate() error {
	return required(TypeEvent, [2]string{"id", e.ID}, [2]string{"site", e.Site}, [2]string{"source", e.Source}, [2]string{"type", e.Type})
}

func (b *EventBatch) Validate() error {
	if len(b.Events) == 0 {
		return &MissingFieldError{Field: "events", In: TypeEvents}
	}
	if len(b.Events) > MaxEventBatch {
		return &MalformedError{Type: TypeEvents, Err: fmt.Errorf("%d events: at most %d in one message", len(b.Events), MaxEventBatch)}
	}
	for i := range b.Events {
		e := &b.Events[i]
		for _, f := range [...][2]string{{"id", e.ID}, {"site", e.Site}, {"source", e.Source}, {"type", e.Type}} {
			if f[1] == "" { // the field name is built only for the error: this runs per event
				return &MissingFieldError{Field: fmt.Sprintf("events[%d].%s", i, f[0]), In: TypeEvents}
			}
		}
	}
	return nil
}

func (c *CIPayload) Validate() error {
	if err := required(TypeCI, [2]string{"source", c.Source}); err != nil {
		return err
	}
	if len(c.Items) == 0 {
		return &MissingFieldError{Field: "items", In: TypeCI}
	}
	var errs []error
	for i, it := range c.Items {
		if it.Ref == "" {
			errs = append(errs, &MissingFieldError{Field: fmt.Sprintf("items[%d].ref", i), In: TypeCI})
		}
		if it.Class == "" {
			errs = append(errs, &MissingFieldError{Field: fmt.Sprintf("items[%d].class", i), In: TypeCI})
		}
	}
	for i, r := range c.Relations {
		if r.Type == "" || r.From == "" || r.To == "" {
			errs = append(errs, &MissingFieldError{Field: fmt.Sprintf("relations[%d]", i), In: TypeCI})
		}
	}
	return errors.Join(errs...)
}

func (h *Heartbeat) Validate() error {
	return required(TypeHeartbeat, [2]string{"agent", h.Agent}, [2]string{"site", h.Site})
}

func (e *Enrollment) Validate() error {
	return required(TypeEnrollment, [2]string{"name", e.Name}, [2]string{"site", e.Site},
		[2]string{"nkey", e.NKey}, [2]string{"sig", e.Sig})
}

func (c *Change) Validate() error {
	return required(TypeChange, [2]string{"ci", c.CI}, [2]string{"class", c.Class}, [2]string{"op", c.Op})
}

func (i *Ingested) Validate() error {
	return required(TypeIngested, [2]string{"payload", i.Payload})
}

func (a *Audit) Validate() error {
	return required(TypeAudit, [2]string{"actor", a.Actor}, [2]string{"action", a.Action})
}

func (s *Sample) Validate() error {
	if err := required(TypeSample, [2]string{"site", s.Site}, [2]string{"metric", s.Metric}, [2]string{"target", s.Target}); err != nil {
		return err
	}
	if s.Time.IsZero() {
		return &MissingFieldError{Field: "time", In: TypeSample}
	}
	return nil
}
