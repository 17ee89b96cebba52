package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// endpoints are svc.correlation.<op>; every replica serves them (queue group).
func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		api.OpEventSend:  bus.JSON(s.eventSend),
		api.OpAlertsList: bus.JSON(s.alertsList),
		api.OpAlertGet:   bus.JSON(s.alertGet),
		api.OpAlertAck:   bus.JSON(func(ctx context.Context, r api.IDRequest) (any, error) { return s.alertChange(ctx, r, api.OpAlertAck) }),
		api.OpAlertClose: bus.JSON(func(ctx context.Context, r api.IDRequest) (any, error) {
			return s.alertChange(ctx, r, api.OpAlertClose)
		}),
		api.OpSilenceAdd:   bus.JSON(s.silenceAdd),
		api.OpSilencesList: bus.JSON(s.silencesList),
		api.OpSilenceRm:    bus.JSON(s.silenceRm),
	}
}

func badRequest(err error) error {
	return bus.Errorf(http.StatusBadRequest, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
}

func unavailable(err error) error {
	return bus.Errorf(http.StatusServiceUnavailable, "alert store unavailable, retry: %v", err)
}

// eventSend publishes an event from the API on event.hub.api, where it takes the same way
// as a site's.
func (s *service) eventSend(ctx context.Context, in api.EventInput) (any, error) {
	if err := in.Validate(); err != nil {
		return nil, badRequest(err)
	}
	ev := in.Event(envelope.NewID(), bus.OriginHub, api.SourceAPI, s.clock.Now())
	subject := bus.EventSubject(bus.OriginHub, api.SourceAPI)
	if _, err := s.pub.Publish(ctx, subject, envelope.Meta{ID: ev.ID, Time: s.clock.Now().UTC()}, ev); err != nil {
		return nil, bus.Errorf(http.StatusServiceUnavailable, "publish the event, retry: %v", err)
	}
	return api.EventSendResponse{ID: ev.ID, Subject: subject}, nil
}

// view fills what is computed at read time: the silences muting an alert now.
func (s *service) view(a *api.Alert, active []api.Silence) {
	if a.State == api.StateClosed {
		a.SilencedBy = nil
		return
	}
	silence(a, active, s.clock.Now())
}

// alertsList is every alert of the filter, newest first (by the sequence of the event
// that opened it: a stable, unique order to page in).
func (s *service) alertsList(ctx context.Context, r api.AlertsListRequest) (any, error) {
	if err := r.Validate(); err != nil {
		return nil, badRequest(err)
	}
	all, err := s.store.all(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	node := strings.ToLower(r.Node)
	items := make([]api.Alert, 0, len(all))
	active := s.activeSilences()
	for _, a := range all {
		if (r.State != "" && a.State != r.State) || (node != "" && a.Node != node) {
			continue
		}
		s.view(&a, active)
		items = append(items, a)
	}
	key := func(a api.Alert) string {
		_, seq, _ := strings.Cut(a.ID, "-")
		return fmt.Sprintf("%020s-%s", seq, a.ID)
	}
	desc := func(a, b string) int { return strings.Compare(b, a) }
	sort.Slice(items, func(i, j int) bool { return desc(key(items[i]), key(items[j])) < 0 })
	out, next, err := page.Slice(items, r.Request, key, desc)
	if err != nil {
		return nil, err
	}
	return api.AlertsListResponse{Items: out, NextCursor: next}, nil
}

func (s *service) alertGet(ctx context.Context, r api.IDRequest) (any, error) {
	a, _, err := s.store.byID(ctx, r.ID)
	if err != nil {
		return nil, unavailable(err)
	}
	if a == nil {
		return nil, notFound("alert", r.ID)
	}
	s.view(a, s.activeSilences())
	return a, nil
}

// alertChange acknowledges or closes an alert: compare-and-set on the alert's revision, so a
// concurrent write by the processor is re-read, never overwritten. Acknowledging or closing
// twice is not an error (the answer is the alert as it is).
func (s *service) alertChange(ctx context.Context, r api.IDRequest, op string) (any, error) {
	for attempt := 0; attempt < 10; attempt++ {
		a, rev, err := s.store.byID(ctx, r.ID)
		if err != nil {
			return nil, unavailable(err)
		}
		if a == nil {
			return nil, notFound("alert", r.ID)
		}
		now := s.clock.Now().UTC()
		switch {
		case a.State == api.StateClosed:
			if op == api.OpAlertAck {
				return nil, bus.Errorf(http.StatusConflict, "alert %s is closed (%s): there is nothing to acknowledge", a.ID, a.CloseReason)
			}
			return a, nil
		case op == api.OpAlertAck && a.State == api.StateAcknowledged:
			return a, nil
		case op == api.OpAlertAck:
			a.State, a.AckedAt = api.StateAcknowledged, &now
		default:
			a.State, a.ClosedAt, a.CloseReason = api.StateClosed, &now, api.ClosedByUser
		}
		slot, _ := slotOfID(a.ID)
		if _, err := s.store.put(ctx, slot, a, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return nil, unavailable(err)
		}
		s.view(a, s.activeSilences())
		return a, nil
	}
	return nil, bus.Errorf(http.StatusConflict, "alert %s changed under every attempt; retry", r.ID)
}

func (s *service) silenceAdd(ctx context.Context, r api.SilenceAddRequest) (any, error) {
	d, err := r.Validate()
	if err != nil {
		return nil, badRequest(err)
	}
	now := s.clock.Now().UTC()
	sil := api.Silence{ID: envelope.NewID(), Match: r.Match, StartsAt: now, EndsAt: now.Add(d), Comment: r.Comment}
	b, _ := json.Marshal(sil)
	if _, err := s.kvSil.Create(ctx, sil.ID, b); err != nil {
		return nil, unavailable(err)
	}
	s.silMu.Lock()
	s.silences[sil.ID] = sil // read-your-writes on this replica; the watch brings it to others
	s.silMu.Unlock()
	return sil, nil
}

func (s *service) silencesList(_ context.Context, r page.Request) (any, error) {
	out, next, err := page.Slice(s.allSilences(), r, func(x api.Silence) string { return x.ID }, strings.Compare)
	if err != nil {
		return nil, err
	}
	return api.SilencesListResponse{Items: out, NextCursor: next}, nil
}

func (s *service) silenceRm(ctx context.Context, r api.IDRequest) (any, error) {
	e, err := s.kvSil.Get(ctx, r.ID)
	if err != nil || r.ID == "" {
		return nil, notFound("silence", r.ID)
	}
	var sil api.Silence
	_ = json.Unmarshal(e.Value(), &sil)
	if err := s.kvSil.Delete(ctx, r.ID); err != nil {
		return nil, unavailable(err)
	}
	s.silMu.Lock()
	delete(s.silences, r.ID)
	s.silMu.Unlock()
	return sil, nil
}
