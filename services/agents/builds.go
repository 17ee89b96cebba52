package agents

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/release"
)

// builds answers bridges' BuildChunk requests from the object store release.Bucket. A bridge
// asks for ~70 chunks of one build in a row, and an object store read cannot start at an
// offset, so the last few builds read are kept whole in memory (a site's bridges upgrade to
// the same one); an object replaced under the same name is read again (digest changed).
type builds struct {
	js    jetstream.JetStream
	mu    sync.Mutex
	cache []cachedBuild // most recent last
}

type cachedBuild struct {
	name, digest, sig string
	data              []byte
}

const buildsCached = 3

func (b *builds) chunk(ctx context.Context, r agentsapi.BuildChunkRequest) (agentsapi.BuildChunkReply, error) {
	bld := release.Build{OS: r.OS, Arch: r.Arch, Version: r.Version}
	if err := bld.Validate(); err != nil {
		return agentsapi.BuildChunkReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
	}
	if r.Offset < 0 {
		return agentsapi.BuildChunkReply{}, bus.Errorf(http.StatusBadRequest, "offset %d: want 0 or more", r.Offset)
	}
	obs, err := b.js.ObjectStore(ctx, release.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return agentsapi.BuildChunkReply{}, bus.Errorf(http.StatusNotFound, "no bridge build is stored on the hub: add %s with `outpost bridge-builds add FILE --version %s --os %s --arch %s`", bld, bld.Version, bld.OS, bld.Arch)
	}
	if err != nil {
		return agentsapi.BuildChunkReply{}, err
	}
	info, err := obs.GetInfo(ctx, bld.Object())
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return agentsapi.BuildChunkReply{}, bus.Errorf(http.StatusNotFound, "no build %s on the hub: add it with `outpost bridge-builds add FILE --version %s --os %s --arch %s`", bld, bld.Version, bld.OS, bld.Arch)
	}
	if err != nil {
		return agentsapi.BuildChunkReply{}, err
	}
	digest, sig := info.Headers.Get(release.HeaderSHA256), info.Headers.Get(release.HeaderSignature)
	c, err := b.get(ctx, obs, bld.Object(), digest, sig)
	if err != nil {
		return agentsapi.BuildChunkReply{}, err
	}
	size := int64(len(c.data))
	if r.Offset > size {
		return agentsapi.BuildChunkReply{}, bus.Errorf(http.StatusBadRequest, "offset %d is past the build's %d bytes", r.Offset, size)
	}
	end := min(size, r.Offset+agentsapi.BuildChunkMax)
	return agentsapi.BuildChunkReply{OS: bld.OS, Arch: bld.Arch, Version: bld.Version, Size: size, SHA256: c.digest, Signature: c.sig,
		Offset: r.Offset, Data: c.data[r.Offset:end]}, nil
}

func (b *builds) get(ctx context.Context, obs jetstream.ObjectStore, name, digest, sig string) (cachedBuild, error) {
	b.mu.Lock()
	for _, c := range b.cache {
		if c.name == name && c.digest == digest && c.sig == sig {
			b.mu.Unlock()
			return c, nil
		}
	}
	b.mu.Unlock()
	data, err := obs.GetBytes(ctx, name)
	if err != nil {
		return cachedBuild{}, fmt.Errorf("read build %s: %w", name, err)
	}
	c := cachedBuild{name: name, digest: digest, sig: sig, data: data}
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := []cachedBuild{}
	for _, o := range b.cache {
		if o.name != name {
			kept = append(kept, o)
		}
	}
	b.cache = append(kept, c)
	if len(b.cache) > buildsCached {
		b.cache = b.cache[len(b.cache)-buildsCached:]
	}
	return c, nil
}

// StoreBuild signs a build with the release key and puts it in release.Bucket (made when
// missing), replacing a build of the same os, arch and version. The digest and signature
// travel as the object's headers.
func StoreBuild(ctx context.Context, js jetstream.JetStream, key *release.Key, b release.Build, data []byte) (release.Build, string, error) {
	if err := b.Validate(); err != nil {
		return b, "", err
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, bus.ObjectStore(release.Bucket)) // the stores table (libs/bus/stores.go)
	if err != nil {
		return b, "", err
	}
	digest := release.Digest(data)
	meta := jetstream.ObjectMeta{Name: b.Object(), Description: "outpost-bridge " + b.String(),
		Headers: map[string][]string{release.HeaderSHA256: {digest}, release.HeaderSignature: {key.Sign(b, digest)}}}
	// One put with the headers: a bridge never sees the bytes without their signature.
	if _, err := obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return b, "", err
	}
	return b, digest, nil
}
