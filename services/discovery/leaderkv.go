package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaderKV reads a replicated bucket through its stream leader, whatever the handle was
// bound with.
//
// nats.go picks direct gets for a bucket handle once, when it binds it, from the stream's
// AllowDirect. On a cluster bus.WithReplicas turns AllowDirect off (a follower may answer a
// direct get before it has the latest write), but every CreateOrUpdateKeyValue — each
// replica starting — turns it on again for a moment. A replica that binds in that moment
// keeps a handle that asks for direct gets; once AllowDirect is off again no server answers
// them, and every Get of that handle fails with "no responders" until the process restarts.
// On the 3-node cluster bench (scripts/bench.d/70-replicas.sh, ShareRuns) that was a replica
// which took no free run (its claim pass failed on the first record) and answered run_get
// with 404 for every run it did not own. Discovery decides who owns a run from these reads,
// so on a cluster its Gets go to the leader ($JS.API.STREAM.MSG.GET), which answers after
// every write it acknowledged; key listings and watches use consumers and are unaffected.
type leaderKV struct {
	jetstream.KeyValue
	nc      *nats.Conn
	subject string // the stream's message-get API subject
	prefix  string // $KV.<bucket>.
}

// leaderReads returns kv reading through its stream leader when its stream has more than one
// replica; a single server's bucket is returned as it is (its direct gets are as current).
func leaderReads(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, fmt.Errorf("kv %s: its stream: %w", kv.Bucket(), err)
	}
	if st.CachedInfo().Config.Replicas <= 1 {
		return kv, nil
	}
	return newLeaderKV(js, nc, kv), nil
}

func newLeaderKV(js jetstream.JetStream, nc *nats.Conn, kv jetstream.KeyValue) *leaderKV {
	return &leaderKV{KeyValue: kv, nc: nc, subject: apiPrefix(js.Options()) + "STREAM.MSG.GET.KV_" + kv.Bucket(), prefix: "$KV." + kv.Bucket() + "."}
}

// apiPrefix is the JetStream API prefix js sends its requests with (nats.go keeps its own
// unexported; this mirrors how it is made).
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

// msgGetResponse is the leader's answer to a message get (JetStream API).
type msgGetResponse struct {
	Error *struct {
		Code        int                 `json:"code"`
		ErrCode     jetstream.ErrorCode `json:"err_code"`
		Description string              `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

func (k *leaderKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return k.get(ctx, key, map[string]any{"last_by_subj": k.prefix + key})
}

func (k *leaderKV) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	return k.get(ctx, key, map[string]any{"seq": revision})
}

// validKey is nats.go's rule for a key (it keeps its own unexported).
var validKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

// get asks the leader for one message and reads it as the bucket's entry for key, as
// nats.go's own Get does: a delete or purge marker, or a TTL marker, is a key not found.
func (k *leaderKV) get(ctx context.Context, key string, req map[string]any) (jetstream.KeyValueEntry, error) {
	if !validKey.MatchString(key) || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return nil, jetstream.ErrInvalidKey
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second) // as nats.go's default API timeout
		defer cancel()
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := k.nc.RequestWithContext(ctx, k.subject, b)
	if err != nil {
		return nil, fmt.Errorf("kv %s: get %s from the stream leader: %w", k.Bucket(), key, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("kv %s: get %s: bad answer from the stream leader: %w", k.Bucket(), key, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, fmt.Errorf("kv %s: get %s: %s (code %d, err_code %d)", k.Bucket(), key, resp.Error.Description, resp.Error.Code, resp.Error.ErrCode)
	}
	msg := resp.Message
	if msg == nil || msg.Subject != k.prefix+key {
		return nil, jetstream.ErrKeyNotFound // a revision of another key
	}
	e := &leaderEntry{bucket: k.Bucket(), key: key, value: msg.Data, revision: msg.Sequence, created: msg.Time, op: jetstream.KeyValuePut}
	if len(msg.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(msg.Header)
		if err != nil {
			return nil, fmt.Errorf("kv %s: get %s: bad headers: %w", k.Bucket(), key, err)
		}
		switch op, marker := h.Get("KV-Operation"), h.Get(jetstream.MarkerReasonHeader); {
		case op == "DEL", marker == "Remove":
			e.op = jetstream.KeyValueDelete
		case op == "PURGE", marker == "MaxAge", marker == "Purge":
			e.op = jetstream.KeyValuePurge
		}
	}
	if e.op != jetstream.KeyValuePut {
		return nil, jetstream.ErrKeyNotFound // nats.go's Get says the same of a deleted key
	}
	return e, nil
}

// leaderEntry is a KeyValueEntry read from the leader.
type leaderEntry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

func (e *leaderEntry) Bucket() string                  { return e.bucket }
func (e *leaderEntry) Key() string                     { return e.key }
func (e *leaderEntry) Value() []byte                   { return e.value }
func (e *leaderEntry) Revision() uint64                { return e.revision }
func (e *leaderEntry) Created() time.Time              { return e.created }
func (e *leaderEntry) Delta() uint64                   { return 0 }
func (e *leaderEntry) Operation() jetstream.KeyValueOp { return e.op }
