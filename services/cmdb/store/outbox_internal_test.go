package store

import (
	"reflect"
	"strings"
	"testing"
)

// An outbox row gives back its messages exactly, whatever bytes their fields hold; a row
// cut short or tampered with is an error, never a message with a shifted field.
func TestOutboxRowRoundTrip(t *testing.T) {
	msgs := []OutboxMsg{
		{Subject: "cmdb.changed.linux_server", MsgID: "01ABC", Header: map[string][]string{"ce-id": {"01ABC"}, "Nats-Msg-Id": {"01ABC"}, "multi": {"a:1,", "b,2:"}},
			Data: []byte(`{"ci":"x","note":"12:34, ok"}`)},
		{Subject: "cmdb.ingested.import", MsgID: "", Header: map[string][]string{}, Data: []byte{}},
		{Subject: "s", MsgID: "é", Header: map[string][]string{"k": {""}}, Data: []byte("ünïcode,:")},
	}
	raw := encodeOutbox(msgs)
	got, err := decodeOutbox(7, raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		msgs[i].Seq = 7
	}
	if !reflect.DeepEqual(got, msgs) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, msgs)
	}
	for _, bad := range []string{raw[:len(raw)-1], raw[:10], "x:abc,", "3:ab,", "-1:,", "2:ab;"} {
		if _, err := decodeOutbox(7, bad); err == nil || !strings.Contains(err.Error(), "row 7") {
			t.Errorf("decode %q: %v, want an error naming the row", bad, err)
		}
	}
}
