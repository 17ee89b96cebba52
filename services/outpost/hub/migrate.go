package hub

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/outpost-dev/outpost/libs/bus"
)

// migrateStoreAccount moves a hub's streams and KV from the global account ($G), where hubs
// before the account split kept them, to HUB: JetStream keeps each account's data under
// <store>/jetstream/<account>, and without the move an upgraded hub would start empty (no
// sites, agents, tokens, runs). Renaming is atomic and happens before the server starts.
func migrateStoreAccount(storeDir string, log *slog.Logger) error {
	old := filepath.Join(storeDir, "jetstream", "$G")
	dst := filepath.Join(storeDir, "jetstream", bus.AccountHub)
	if _, err := os.Stat(old); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(dst); err == nil {
		log.Warn("the JetStream store holds data of both the old global account and HUB; keeping HUB's, leaving the old data where it is", "old", old)
		return nil
	}
	if err := os.Rename(old, dst); err != nil {
		return fmt.Errorf("move the hub's streams from the global account to %s (%s → %s): %w", bus.AccountHub, old, dst, err)
	}
	log.Info("moved the hub's streams and KV to account "+bus.AccountHub, "store", storeDir)
	return nil
}
