package bridge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/services/bridge/upgrade"
)

// TrialDeadline is how long a new build has to come up healthy (connected to the hub and a
// heartbeat sent) before it is rolled back.
const TrialDeadline = 2 * time.Minute

// maxBuildBytes bounds a download: a build is ~35 MB; anything far larger is not one.
const maxBuildBytes = 256 << 20

// RestartError is what Run returns when the bridge stopped to re-execute into another build
// (a self-upgrade or its rollback): the caller execs Decision once everything is closed.
type RestartError struct{ Decision upgrade.Decision }

func (e *RestartError) Error() string { return "restart into " + e.Decision.Exec }

// selfUpgrade is the bridge's side of upgrades (services/bridge/upgrade holds the files and
// decisions): it learns the release key and the pinned version from enrollment replies,
// downloads, verifies, and asks the run loop to stop and re-execute.
type selfUpgrade struct {
	key     *releaseKey
	mu      sync.Mutex
	rec     upgrade.Record
	busy    bool
	restart chan struct{}
	once    sync.Once
	to      upgrade.Decision
}

// releaseKey pins the hub's release public key, like hubKey pins its curve key: learned from
// the first approved enrollment reply (over the connection whose certificate the bridge
// verified) and kept in <data>/release.pub; a hub naming another key later is refused.
type releaseKey struct {
	path string
	mu   sync.Mutex
	key  string
}

func loadReleaseKey(path string) (*releaseKey, error) {
	k := &releaseKey{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("release key %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if !release.ValidPublic(s) {
		return nil, fmt.Errorf("release key %s does not hold a release public key: delete it to learn the hub's at the next enrollment", path)
	}
	k.key = s
	return k, nil
}

func (k *releaseKey) learn(pub string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case pub == "":
		return nil
	case !release.ValidPublic(pub):
		return fmt.Errorf("the hub offered %q as its release key, which is not one", pub)
	case k.key == "":
		if err := os.WriteFile(k.path, []byte(pub+"\n"), 0o600); err != nil {
			return fmt.Errorf("pin the hub's release key: %w", err)
		}
		k.key = pub
	case k.key != pub:
		return fmt.Errorf("the hub's release key changed from %s to %s: builds it signs are refused; if the hub was rebuilt with a new data directory, delete %s and restart the bridge", k.key, pub, k.path)
	}
	return nil
}

func (k *releaseKey) get() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.key
}

func (b *Bridge) initUpgrade() error {
	k, err := loadReleaseKey(filepath.Join(b.cfg.DataDir, "release.pub"))
	if err != nil {
		return err
	}
	rec, err := upgrade.Load(b.cfg.DataDir)
	if err != nil {
		b.log.Error("self-upgrade record unreadable; starting without it", "err", err)
	}
	b.up = &selfUpgrade{key: k, rec: rec, restart: make(chan struct{})}
	b.upgradeState.Store(rec.String())
	return nil
}

func (b *Bridge) setUpgrade(r upgrade.Record) {
	b.up.mu.Lock()
	b.up.rec = r
	b.up.mu.Unlock()
	b.upgradeState.Store(r.String())
}

func (b *Bridge) upgradeRecord() upgrade.Record {
	b.up.mu.Lock()
	defer b.up.mu.Unlock()
	return b.up.rec
}

// onEnrollReply takes what an approved enrollment reply says about releases: pin the key,
// and start an upgrade when the site's pinned version is newer than this build.
func (b *Bridge) onEnrollReply(ctx context.Context, releasePub, pinned string) {
	if err := b.up.key.learn(releasePub); err != nil {
		b.log.Error("hub release key", "err", err)
	}
	if !b.deps.SelfUpgrade || !upgrade.Wanted(b.cfg.Version, pinned, b.upgradeRecord()) {
		return
	}
	b.up.mu.Lock()
	if b.up.busy {
		b.up.mu.Unlock()
		return
	}
	b.up.busy = true
	b.up.mu.Unlock()
	go func() {
		defer func() { b.up.mu.Lock(); b.up.busy = false; b.up.mu.Unlock() }()
		b.upgradeTo(ctx, pinned)
	}()
}

// upgradeTo downloads, verifies and installs the build of version, then asks the run loop to
// re-execute into it. Any failure is recorded (and reported) and that version not tried again.
func (b *Bridge) upgradeTo(ctx context.Context, version string) {
	now := b.clock.Now().UTC()
	bld := release.Build{OS: runtime.GOOS, Arch: runtime.GOARCH, Version: version}
	state := func(s string) {
		b.setUpgrade(upgrade.Record{State: s, From: b.cfg.Version, To: version, Time: b.clock.Now().UTC()})
	}
	fail := func(err error) {
		r, serr := upgrade.Fail(b.cfg.DataDir, b.cfg.Version, version, err, b.clock.Now().UTC())
		if serr != nil {
			b.log.Error("record the failed upgrade", "err", serr)
		}
		b.setUpgrade(r)
		b.log.Error("self-upgrade failed; this build keeps running", "from", b.cfg.Version, "to", version, "err", err)
	}
	b.log.Info("the hub pins a newer bridge version: upgrading", "from", b.cfg.Version, "to", version)
	state(upgrade.StatePending)
	if !upgrade.Supported {
		fail(upgrade.Exec(upgrade.Decision{}))
		return
	}
	pub := b.up.key.get()
	if pub == "" {
		fail(errors.New("no release key is pinned (the hub named none at enrollment): builds cannot be verified"))
		return
	}
	state(upgrade.StateDownloading)
	data, sig, err := b.download(ctx, bld)
	if err != nil {
		fail(fmt.Errorf("download %s: %w", bld, err))
		return
	}
	state(upgrade.StateVerifying)
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		fail(fmt.Errorf("find this executable: %w", err))
		return
	}
	d, err := upgrade.Prepare(b.cfg.DataDir, self, b.cfg.Version, bld, data, sig, pub, now.Add(TrialDeadline), b.clock.Now().UTC())
	if err != nil {
		fail(err)
		return
	}
	b.setUpgrade(d.Record)
	b.log.Info("build verified and installed in the data dir: restarting into it", "build", d.Exec, "deadline", d.Record.Deadline)
	b.restartInto(d)
}

// download fetches a build chunk by chunk through svc.agents.build_chunk.
func (b *Bridge) download(ctx context.Context, bld release.Build) ([]byte, string, error) {
	var data []byte
	var sig, digest string
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := agentsapi.BuildChunk.Call(rctx, b.nc, agentsapi.BuildChunkRequest{OS: bld.OS, Arch: bld.Arch, Version: bld.Version, Offset: int64(len(data))})
		cancel()
		if err != nil {
			return nil, "", err
		}
		switch {
		case c.Size > maxBuildBytes:
			return nil, "", fmt.Errorf("the hub says the build has %d bytes, more than %d", c.Size, maxBuildBytes)
		case c.Offset != int64(len(data)) || (sig != "" && (c.Signature != sig || c.SHA256 != digest)):
			return nil, "", errors.New("the build changed on the hub while downloading; the next enrollment tries again")
		case len(c.Data) == 0 && int64(len(data)) < c.Size:
			return nil, "", fmt.Errorf("empty chunk at %d of %d bytes", len(data), c.Size)
		}
		sig, digest = c.Signature, c.SHA256
		data = append(data, c.Data...)
		if int64(len(data)) >= c.Size {
			return data, sig, nil
		}
	}
}

// restartInto makes the run loop stop cleanly and return a RestartError.
func (b *Bridge) restartInto(d upgrade.Decision) {
	b.up.once.Do(func() {
		b.up.to = d
		close(b.up.restart)
	})
}

// trialWatch ends this build's trial: healthy once connected with a heartbeat sent, or
// rolled back at its deadline.
func (b *Bridge) trialWatch(ctx context.Context, healthy <-chan struct{}) {
	r := b.upgradeRecord()
	if r.State != upgrade.StateTrial || r.To != b.cfg.Version {
		return
	}
	wait := r.Deadline.Sub(b.clock.Now())
	select {
	case <-ctx.Done():
		return
	case <-healthy:
		r, ok, err := upgrade.Healthy(b.cfg.DataDir, b.cfg.Version, b.clock.Now().UTC())
		if err != nil {
			b.log.Error("record the upgrade", "err", err)
		}
		if ok {
			b.setUpgrade(r)
			b.log.Info("self-upgrade complete: this build is connected and sent its heartbeat", "from", r.From, "to", r.To)
		}
	case <-b.clock.After(max(wait, 0)):
		d, expired, err := upgrade.Expired(b.cfg.DataDir, b.cfg.Version, b.clock.Now().UTC())
		if err != nil {
			b.log.Error("roll back", "err", err)
			return
		}
		if expired {
			b.setUpgrade(d.Record)
			b.log.Error("this build was not healthy in time: rolling back", "to", d.Exec, "reason", d.Record.Reason)
			b.restartInto(d)
		}
	}
}
