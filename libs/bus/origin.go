package bus

import (
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// ResultOrigin checks a result against the subject it arrived on. NATS permissions let a
// bridge publish only result.*.<its site>.*.<its name>, so the subject is the sender's
// identity; a body claiming another app, site, kind or agent is a forgery or a bug, and a
// retry cannot fix it (Permanent: dead-lettered with this reason).
func ResultOrigin(subject string, r *envelope.Result) error {
	t := strings.Split(subject, ".")
	if len(t) != 5 || t[0] != "result" {
		return Permanent(fmt.Errorf("result %s arrived on %q, not on result.<app>.<site>.<kind>.<agent>", r.ID, subject))
	}
	app, site, kind, agent := t[1], t[2], t[3], t[4]
	if r.App != app || r.Site != site || r.Kind != kind || r.Agent != agent {
		return Permanent(fmt.Errorf("result %s claims app %q site %q kind %q agent %q but was sent on %s: a bridge may only send its own results",
			r.ID, r.App, r.Site, r.Kind, r.Agent, subject))
	}
	return nil
}

// DecodedResult is Decoded for results, with ResultOrigin checked before the handler runs.
func DecodedResult(h HandlerFunc[*envelope.Result]) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		meta, r, err := envelope.DecodeIntoWith[*envelope.Result](msg.Metadata.Get, msg.Payload)
		if err != nil {
			return err
		}
		if err := ResultOrigin(msg.Metadata.Get(MetaSubject), r); err != nil {
			return err
		}
		return h(msg.Context(), meta, r)
	}
}
