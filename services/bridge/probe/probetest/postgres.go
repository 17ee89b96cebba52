package probetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/outpost-dev/outpost/libs/pgserver"
)

// EnvSkipPG turns the PostgreSQL cases off when "1" (they are never skipped silently).
const EnvSkipPG = "OUTPOST_SKIP_PG"

// SkipPG reports whether PostgreSQL was explicitly turned off.
func SkipPG() bool { return os.Getenv(EnvSkipPG) == "1" }

// Postgres is a throwaway PostgreSQL cluster for sql_query's cases, with password
// (SCRAM) authentication so that a wrong password is refused.
type Postgres = pgserver.Server

// StartPostgres initialises and starts a cluster whose superuser has a random password.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	s, err := pgserver.Start(ctx, pgserver.Options{Password: "pw-" + hex.EncodeToString(pw)})
	if err != nil {
		return nil, fmt.Errorf("%w (or set %s=1 to skip the PostgreSQL cases)", err, EnvSkipPG)
	}
	return s, nil
}
