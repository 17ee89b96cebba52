package importer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/services/importer/source"
)

// pageRetries is how often a page whose probe failed for a passing reason (unreachable,
// timeout, canceled by a bridge's shutdown) is asked again before the run fails.
const pageRetries = 5

// authRetries is how often a page refused with auth_failed is asked again (see page).
const authRetries = 4

func (s *service) proberFor(rec record) *prober {
	return &prober{s: s, run: rec.ID, site: rec.Src.Site, credential: rec.Src.Credential}
}

// stageBridge reads a paged source through its site's bridges into the import set, page
// by page. Each page's rows are staged with their position (the cursor the page was
// asked with, their index in it) and the page's last row carries the next cursor, so the
// last staged row alone says where a restarted run goes on: at the next page, or inside
// the page it stopped in, past the rows already staged — never from zero, never a row
// twice. Only one page is held in memory.
func (s *service) stageBridge(ctx context.Context, rs *runState, rec record, last *stagedRow, fail func(string, ...any)) {
	src, err := source.NewBridgeSource(*rec.Src, s.proberFor(rec))
	if err != nil {
		fail("source %s: %v", rec.Src.Name, err)
		return
	}
	defer src.Close()
	cursor, skip, n := "", 0, int64(0)
	if last != nil {
		n = last.N
		switch {
		case last.Last:
			s.stagingDone(ctx, rs)
			return
		case last.Next != "":
			cursor = last.Next
		default:
			cursor, skip = last.Pos.Page, last.Pos.Index+1
		}
		s.log.Info("import run: staging resumes", "run", rec.ID, "source", rec.Src.Name, "rows_staged", n, "cursor", cursor, "skip", skip)
	}
	for {
		p, err := s.page(ctx, src, rec, cursor)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fail("source %s (%s on site %s), page %q: %v", rec.Src.Name, src.Kind(), rec.Src.Site, cursor, err)
			return
		}
		rows := make([]source.Row, 0, len(p.Rows))
		for i, r := range p.Rows {
			if skip > 0 {
				skip--
				continue
			}
			n++
			r.N = n
			r.Pos.Page, r.Pos.Index = cursor, i
			rows = append(rows, r)
		}
		if len(rows) > 0 {
			rows[len(rows)-1].Next, rows[len(rows)-1].Last = p.Next, p.Done
			if err := s.publishRows(ctx, rs, rows); err != nil {
				if ctx.Err() == nil {
					fail("staging: %v", err)
				}
				return
			}
		}
		if p.Done {
			break
		}
		if p.Next == cursor {
			fail("source %s: page %q names itself as the next page", rec.Src.Name, cursor)
			return
		}
		cursor = p.Next
	}
	s.stagingDone(ctx, rs)
}

// page asks one page, again after a passing failure.
func (s *service) page(ctx context.Context, src source.BridgeSource, rec record, cursor string) (source.Page, error) {
	for attempt := 1; ; attempt++ {
		p, err := src.Page(ctx, cursor, 0)
		if err == nil || ctx.Err() != nil || attempt > pageRetries {
			return p, err
		}
		var pe *source.ProbeError
		// auth_failed is asked again for a while (attempts 1-4 wait 15 s in all): a credential
		// is sealed to the bridges approved when the probe was sent (discovery caches a site's
		// bridge keys for 10 s), and a bridge that took the probe over after its sibling died
		// may have joined since and cannot open the seal. A probe sent later is sealed to it
		// too; a wrong password costs four probes before the run fails.
		if errors.As(err, &pe) && !retryable(pe.Code) && !(pe.Code == probes.CodeAuth && attempt <= authRetries) {
			return p, err
		}
		s.log.Warn("import page failed; asking again", "run", rec.ID, "source", rec.Src.Name, "cursor", cursor, "attempt", attempt, "err", err)
		_ = src.Close() // a streamed source starts its search again (at the cursor)
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-s.clock.After(time.Duration(1<<(attempt-1)) * time.Second):
		}
	}
}

func retryable(code string) bool {
	for _, c := range probes.Codes {
		if c.Code == code {
			return c.Retryable
		}
	}
	return code == "http_429" || code == "http_502" || code == "http_503" || code == "http_504"
}

// stagingDone records that every row of the source is staged.
func (s *service) stagingDone(ctx context.Context, rs *runState) {
	rs.saveMu.Lock()
	rs.mu.Lock()
	rs.rec.StagingDone = true
	c := *rs.rec
	rs.mu.Unlock()
	if err := s.put(ctx, &c); err != nil {
		rs.mu.Lock()
		rs.dirty = true
		rs.mu.Unlock()
	}
	rs.saveMu.Unlock()
	rs.signal()
}

// spoolSiteFile fetches a site file source's file to a temporary file (read from the
// start again after a restart: the rows already staged are passed over, not staged again).
func (s *service) spoolSiteFile(ctx context.Context, rec record) (string, error) {
	f, err := os.CreateTemp(s.cfg.TempDir, "outpost-import-site-*"+filepath.Ext(rec.Src.Params["path"]))
	if err != nil {
		return "", err
	}
	size, err := source.SpoolSiteFile(ctx, *rec.Src, s.proberFor(rec), f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	s.log.Info("import run: site file fetched", "run", rec.ID, "source", rec.Src.Name, "path", rec.Src.Params["path"], "bytes", size)
	return f.Name(), nil
}
