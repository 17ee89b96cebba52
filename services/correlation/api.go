package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// endpoints are svc.correlation.<op>, the ops of its contract (libs/api/correlation); every
// replica serves them (queue group).
func (s *service) endpoints() map[string]bus.Endpoint {
	return withCollectors(map[string]bus.Endpoint{
		api.EventSend.Name: api.EventSend.Handle(s.eventSend),
		api.AlertList.Name: api.AlertList.Handle(s.alertsList),
		api.AlertGet.Name:  api.AlertGet.Handle(s.alertGet),
		api.AlertAck.Name: api.AlertAck.Handle(func(ctx context.Context, r api.IDRequest) (api.Alert, error) {
			return s.alertChange(ctx, r, true)
		}),
		api.AlertClose.Name: api.AlertClose.Handle(func(ctx context.Context, r api.IDRequest) (api.Alert, error) {
			return s.alertChange(ctx, r, false)
		}),
		api.SilenceAdd.Name:    api.SilenceAdd.Handle(s.silenceAdd),
		api.SilenceList.Name:   api.SilenceList.Handle(s.silencesList),
		api.SilenceRemove.Name: api.SilenceRemove.Handle(s.silenceRm),
		api.GroupList.Name:     api.GroupList.Handle(s.groupsList),
		api.Replay.Name:        api.Replay.Handle(s.replay),
	}, s.col)
}

func badRequest(err error) error {
	return bus.Errorf(http.StatusBadRequest, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
}

func unavailable(err error) error {
	return bus.Errorf(http.StatusServiceUnavailable, "alert store unavailable, retry: %v", err)
}

// eventSend publishes an event from the API on event.hub.api, where it takes the same way
// as a site's.
func (s *service) eventSend(ctx context.Context, in api.EventInput) (api.EventSendResponse, error) {
	if err := in.Validate(); err != nil {
		return api.EventSendResponse{}, badRequest(err)
	}
	ev := in.Event(envelope.NewID(), bus.OriginHub, api.SourceAPI, s.clock.Now())
	subject := bus.EventSubject(bus.OriginHub, api.SourceAPI)
	if _, err := s.pub.Publish(ctx, subject, envelope.Meta{ID: ev.ID, Time: s.clock.Now().UTC()}, ev); err != nil {
		return api.EventSendResponse{}, bus.Errorf(http.StatusServiceUnavailable, "publish the event, retry: %v", err)
	}
	return api.EventSendResponse{ID: ev.ID, Subject: subject}, nil
}

// view fills what is computed at read time: the silences muting an alert now, its
// topology group.
func (s *service) view(a *api.Alert, active []api.Silence) {
	if ref, ok := s.topologyOf(a.ID); ok {
		a.TopologyGroup, a.RootCause = ref.group, ref.root
	}
	if a.State == api.StateClosed {
		a.SilencedBy = nil
		return
	}
	silence(a, active, s.clock.Now())
}

// alertsList is every alert of the filter, newest first (by the sequence of the event
// that opened it: a stable, unique order to page in).
func (s *service) alertsList(ctx context.Context, r api.AlertsListRequest) (api.AlertsListResponse, error) {
	if err := r.Validate(); err != nil {
		return api.AlertsListResponse{}, badRequest(err)
	}
	all, err := s.store.all(ctx)
	if err != nil {
		return api.AlertsListResponse{}, unavailable(err)
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
		return api.AlertsListResponse{}, err
	}
	return api.AlertsListResponse{Items: out, NextCursor: next}, nil
}

func (s *service) alertGet(ctx context.Context, r api.IDRequest) (api.Alert, error) {
	a, _, err := s.store.byID(ctx, r.ID)
	if err != nil {
		return api.Alert{}, unavailable(err)
	}
	if a == nil {
		return api.Alert{}, notFound("alert", r.ID)
	}
	s.view(a, s.activeSilences())
	return *a, nil
}

// alertChange acknowledges (ack) or closes an alert: compare-and-set on the alert's
// revision, so a concurrent write by the processor is re-read, never overwritten.
// Acknowledging or closing twice is not an error (the answer is the alert as it is).
func (s *service) alertChange(ctx context.Context, r api.IDRequest, ack bool) (api.Alert, error) {
	for attempt := 0; attempt < 10; attempt++ {
		a, rev, err := s.store.byID(ctx, r.ID)
		if err != nil {
			return api.Alert{}, unavailable(err)
		}
		if a == nil {
			return api.Alert{}, notFound("alert", r.ID)
		}
		now := s.clock.Now().UTC()
		switch {
		case a.State == api.StateClosed:
			if ack {
				return api.Alert{}, bus.Errorf(http.StatusConflict, "alert %s is closed (%s): there is nothing to acknowledge", a.ID, a.CloseReason)
			}
			return *a, nil
		case ack && a.State == api.StateAcknowledged:
			return *a, nil
		case ack:
			a.State, a.AckedAt = api.StateAcknowledged, &now
		default:
			a.State, a.ClosedAt, a.CloseReason = api.StateClosed, &now, api.ClosedByUser
		}
		slot, _ := slotOfID(a.ID)
		if _, err := s.store.put(ctx, slot, a, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return api.Alert{}, unavailable(err)
		}
		s.view(a, s.activeSilences())
		return *a, nil
	}
	// The processor won every race: busy, not a conflict of states, so retryable (503).
	return api.Alert{}, bus.Errorf(http.StatusServiceUnavailable, "alert %s changed under every attempt: retry", r.ID)
}

func (s *service) silenceAdd(ctx context.Context, r api.SilenceAddRequest) (api.Silence, error) {
	d, err := r.Validate()
	if err != nil {
		return api.Silence{}, badRequest(err)
	}
	now := s.clock.Now().UTC()
	sil := api.Silence{ID: envelope.NewID(), Match: r.Match, StartsAt: now, EndsAt: now.Add(d), Comment: r.Comment}
	b, _ := json.Marshal(sil)
	if _, err := s.kvSil.Create(ctx, sil.ID, b); err != nil {
		return api.Silence{}, unavailable(err)
	}
	s.silMu.Lock()
	s.silences[sil.ID] = sil // read-your-writes on this replica; the watch brings it to others
	s.silMu.Unlock()
	return sil, nil
}

func (s *service) silencesList(_ context.Context, r page.Request) (api.SilencesListResponse, error) {
	out, next, err := page.Slice(s.allSilences(), r, func(x api.Silence) string { return x.ID }, strings.Compare)
	if err != nil {
		return api.SilencesListResponse{}, err
	}
	return api.SilencesListResponse{Items: out, NextCursor: next}, nil
}

func (s *service) silenceRm(ctx context.Context, r api.IDRequest) (api.Silence, error) {
	if r.ID == "" {
		return api.Silence{}, badRequest(errors.New(`field "id": empty`))
	}
	e, err := s.kvSil.Get(ctx, r.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return api.Silence{}, notFound("silence", r.ID)
	} else if err != nil {
		return api.Silence{}, unavailable(err)
	}
	var sil api.Silence
	_ = json.Unmarshal(e.Value(), &sil)
	if err := s.kvSil.Delete(ctx, r.ID); err != nil {
		return api.Silence{}, unavailable(err)
	}
	s.silMu.Lock()
	delete(s.silences, r.ID)
	s.silMu.Unlock()
	return sil, nil
}

// groupsList is the topology groups, by id.
func (s *service) groupsList(_ context.Context, r page.Request) (api.GroupsListResponse, error) {
	out, next, err := page.Slice(s.topologyGroups(), r, func(g api.TopologyGroup) string { return g.ID }, strings.Compare)
	if err != nil {
		return api.GroupsListResponse{}, err
	}
	return api.GroupsListResponse{Items: out, NextCursor: next}, nil
}
