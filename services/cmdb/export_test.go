package cmdb

import (
	"context"

	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// SetBeforePublish installs a hook run before each outbox drain round publishes (an error
// skips the round), until the returned function restores none.
func SetBeforePublish(f func(context.Context, []store.OutboxMsg) error) (restore func()) {
	beforePublish.Store(&f)
	return func() { beforePublish.Store(nil) }
}
