// Command outpost-package is `make dist`: outpost-bridge binaries, .deb/.rpm packages and the
// Windows zip, into one directory with SHA256SUMS.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/packaging"
)

func main() {
	cfg := packaging.DefaultConfig()
	targets := flag.String("targets", "", "comma-separated GOOS/GOARCH (default every supported one)")
	formats := flag.String("formats", strings.Join(packaging.Formats, ","), "Linux package formats")
	flag.StringVar(&cfg.Repo, "repo", cfg.Repo, "the workspace root (where go.work is)")
	flag.StringVar(&cfg.Out, "out", cfg.Out, "output directory")
	flag.StringVar(&cfg.Version, "version", cfg.Version, "version linked into the bridge and given to the packages")
	epoch := flag.Int64("mtime", 0, "Unix time stamped on packaged files (default SOURCE_DATE_EPOCH, else now)")
	flag.Parse()
	if *targets != "" {
		cfg.Targets = nil
		for _, s := range strings.Split(*targets, ",") {
			t, err := packaging.ParseTarget(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	cfg.Formats = strings.Split(*formats, ",")
	if *epoch != 0 {
		cfg.MTime = time.Unix(*epoch, 0).UTC()
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	a, err := packaging.Dist(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outpost-package:", err)
		os.Exit(1)
	}
	fmt.Printf("%d binaries, %d packages, %d zips in %s (%s)\n", len(a.Binaries), len(a.Packages), len(a.Zips), cfg.Out, a.Sums)
}
