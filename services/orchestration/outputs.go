package orchestration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// BucketOutputs is the object store of outputs over InlineOutput: a run (its history, its
// snapshot, every event) keeps an api.OutputRef instead, so a 5 MB command output does not
// ride along each save of the run. Objects are named after the attempt that produced them
// (a repeat of the same attempt writes the same object) and expire with the histories.
const BucketOutputs = "workflow_outputs"

func (s *service) ensureOutputs(ctx context.Context) (jetstream.ObjectStore, error) {
	cfg := bus.ObjectStore(BucketOutputs) // the stores table; the config's retention overrides
	cfg.TTL, cfg.MaxBytes = s.cfg.HistoryMaxAge, s.cfg.HistoryMaxBytes
	os, err := s.deps.JS.CreateOrUpdateObjectStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", BucketOutputs, err)
	}
	return os, nil
}

// keepOutput returns what the run keeps of an output: itself up to InlineOutput bytes, a
// reference to an object up to MaxOutput, and over that its size and a note (flagged and
// counted in the log: nothing vanishes silently).
func (s *service) keepOutput(ctx context.Context, name string, b json.RawMessage) json.RawMessage {
	if len(b) <= s.cfg.InlineOutput {
		return b
	}
	if len(b) > s.cfg.MaxOutput {
		s.log.Warn("step output over MaxOutput not kept", "object", name, "size", len(b), "max", s.cfg.MaxOutput)
		out, _ := json.Marshal(map[string]any{"truncated": true, "size": len(b),
			"note": fmt.Sprintf("output of %d bytes is over the %d a run keeps", len(b), s.cfg.MaxOutput)})
		return out
	}
	sum := sha256.Sum256(b)
	if _, err := s.outputs.Put(context.WithoutCancel(ctx), jetstream.ObjectMeta{Name: name}, bytes.NewReader(b)); err != nil {
		s.log.Warn("store a large step output", "object", name, "size", len(b), "err", err)
		out, _ := json.Marshal(map[string]any{"truncated": true, "size": len(b),
			"note": fmt.Sprintf("output of %d bytes could not be stored: %v", len(b), err)})
		return out
	}
	out, _ := json.Marshal(api.OutputRef{Ref: BucketOutputs + "/" + name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	return out
}

// refOf reports whether a kept output is a reference, and to which object.
func refOf(b json.RawMessage) (api.OutputRef, bool) {
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte(`{"$ref"`)) {
		return api.OutputRef{}, false
	}
	var r api.OutputRef
	if json.Unmarshal(b, &r) != nil || !strings.HasPrefix(r.Ref, BucketOutputs+"/") {
		return api.OutputRef{}, false
	}
	return r, true
}

// fetchOutput reads an output kept by reference.
func (s *service) fetchOutput(ctx context.Context, ref api.OutputRef) ([]byte, error) {
	b, err := s.outputs.GetBytes(ctx, strings.TrimPrefix(ref.Ref, BucketOutputs+"/"))
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", ref.Ref, err)
	}
	return b, nil
}

// resolver gives expressions the outputs themselves: a reference is fetched once per run
// in memory.
func (s *service) resolver(ctx context.Context, a *active) func(json.RawMessage) any {
	return func(b json.RawMessage) any {
		var v any
		if ref, ok := refOf(b); ok {
			if v, ok := a.fetched[ref.Ref]; ok {
				return v
			}
			raw, err := s.fetchOutput(ctx, ref)
			if err != nil {
				s.log.Warn("read a large step output for an expression", "run", a.run.ID, "err", err)
				_ = json.Unmarshal(b, &v)
				return v
			}
			_ = json.Unmarshal(raw, &v)
			if a.fetched == nil {
				a.fetched = map[string]any{}
			}
			a.fetched[ref.Ref] = v
			return v
		}
		_ = json.Unmarshal(b, &v)
		return v
	}
}

// output serves run_output: a page of a step's output, fetched from the object store when
// the run keeps a reference.
func (s *service) output(ctx context.Context, r api.OutputRequest) (api.OutputResponse, error) {
	run, err := s.getRun(ctx, r.Run)
	if err != nil {
		return api.OutputResponse{}, err
	}
	st := run.Step(r.Step)
	if st == nil {
		return api.OutputResponse{}, bus.Errorf(404, "run %s has no step %q", r.Run, r.Step)
	}
	out := api.OutputResponse{Step: st.ID, Offset: r.Offset}
	data := []byte(st.Output)
	if ref, ok := refOf(st.Output); ok {
		out.Ref = ref.Ref
		if data, err = s.fetchOutput(ctx, ref); err != nil {
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				return out, bus.Errorf(410, "the output of step %s (%s) is no longer kept: outputs expire with run histories", st.ID, ref.Ref)
			}
			return out, err
		}
	}
	out.Size = int64(len(data))
	if r.Offset < 0 || r.Offset > out.Size {
		return out, bus.Errorf(400, "offset %d: the output has %d bytes", r.Offset, out.Size)
	}
	end := min(out.Size, r.Offset+api.OutputPage)
	out.Data = data[r.Offset:end]
	if end < out.Size {
		out.Next = end
	}
	return out, nil
}
