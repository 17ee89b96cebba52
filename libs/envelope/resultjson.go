package envelope

import (
	"encoding/json"
	"strconv"
	"time"
)

// marshalBody is json.Marshal of a body, with a hand-written encoder for a result: a bridge
// encodes one per probe (and per streamed chunk), and json.Marshal's reflection plus the
// compaction of the data it already holds as JSON was ~5 % of a bridge's CPU per echo probe.
// The output is what json.Marshal writes (byte for byte, but for insignificant whitespace
// and HTML escapes inside the data); a result it does not handle (a string with characters
// json.Marshal escapes, a time outside years 0–9999, data that is not JSON) goes to
// json.Marshal.
func marshalBody(body Body) ([]byte, error) {
	if e, ok := body.(Encoded); ok {
		return e.EncodedJSON(), nil
	}
	if r, ok := body.(*Result); ok {
		if b, ok := appendResult(make([]byte, 0, 256+len(r.Data)), r); ok {
			return b, nil
		}
	}
	return json.Marshal(body)
}

func appendResult(b []byte, r *Result) ([]byte, bool) {
	ok := true
	str := func(name, v string) {
		b = append(b, name...)
		b, ok = appendPlainString(b, v, ok)
	}
	str(`{"id":`, r.ID)
	str(`,"probe":`, r.Probe)
	if r.Run != "" {
		str(`,"run":`, r.Run)
	}
	str(`,"app":`, r.App)
	str(`,"agent":`, r.Agent)
	str(`,"site":`, r.Site)
	str(`,"kind":`, r.Kind)
	str(`,"status":`, string(r.Status))
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, int64(r.Seq), 10)
	b = append(b, `,"final":`...)
	b = strconv.AppendBool(b, r.Final)
	if r.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(r.Attempt), 10)
	}
	for _, t := range [2]struct {
		name string
		at   time.Time
	}{{`,"started":`, r.Started}, {`,"finished":`, r.Finished}} {
		if y := t.at.Year(); y < 0 || y > 9999 {
			return nil, false
		}
		b = append(b, t.name...)
		b = append(b, '"')
		b = t.at.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if len(r.Data) > 0 {
		if !json.Valid(r.Data) {
			return nil, false
		}
		b = append(b, `,"data":`...)
		b = append(b, r.Data...)
	}
	if r.Error == nil {
		b = append(b, `,"error":null}`...)
	} else {
		str(`,"error":{"code":`, r.Error.Code)
		str(`,"message":`, r.Error.Message)
		b = append(b, "}}"...)
	}
	return b, ok
}

// appendPlainString appends s quoted when json.Marshal would write it unescaped (printable
// ASCII other than the quote, the backslash and <, >, &); ok turns false otherwise.
func appendPlainString(b []byte, s string, ok bool) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), ok
}
