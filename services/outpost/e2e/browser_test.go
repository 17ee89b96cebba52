package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvChromium names a browser binary to use instead of looking one up (or installing it).
const EnvChromium = "OUTPOST_CHROMIUM"

// EnvArtifacts is where browser tests write their screenshots.
const EnvArtifacts = "OUTPOST_ARTIFACTS"

var (
	chromiumOnce sync.Once
	chromiumPath string
	chromiumErr  error
)

// chromium finds a Chromium binary, installing Debian's chromium package when none is there
// and the tests run as root (as on CI). A browser that cannot be had fails the test: the
// console's browser test is not optional.
func chromium(t *testing.T) string {
	t.Helper()
	chromiumOnce.Do(func() {
		if p := os.Getenv(EnvChromium); p != "" {
			chromiumPath = p
			return
		}
		if chromiumPath = findChromium(); chromiumPath != "" {
			return
		}
		if os.Geteuid() != 0 {
			chromiumErr = fmt.Errorf("no chromium on PATH and not root, so it cannot be installed: run `apt-get install -y chromium` or set %s", EnvChromium)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if chromiumErr = installChromium(ctx); chromiumErr != nil {
			return
		}
		if chromiumPath = findChromium(); chromiumPath == "" {
			chromiumErr = errors.New("apt-get installed chromium, but no chromium binary is on PATH")
		}
	})
	if chromiumErr != nil {
		t.Fatalf("headless Chromium is needed for the console's browser test: %v", chromiumErr)
	}
	return chromiumPath
}

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// installChromium installs Debian's package, refreshing the package lists only if the first
// attempt fails (they may be missing on a fresh machine).
func installChromium(ctx context.Context) error {
	apt := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(string(out), 20))
		}
		return nil
	}
	if err := apt("install", "-y", "-q", "--no-install-recommends", "chromium"); err == nil {
		return nil
	}
	if err := apt("update", "-q"); err != nil {
		return err
	}
	return apt("install", "-y", "-q", "--no-install-recommends", "chromium")
}

// browser starts a headless Chromium for the test and returns a tab's context. The browser
// reaches nothing but the loopback: every host resolves to nowhere except 127.0.0.1.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // as root, Chromium refuses to start with its sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1366, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, so a browser that cannot start fails here with its reason.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// artifacts is the directory for screenshots: $OUTPOST_ARTIFACTS, or testdata/artifacts
// beside this file (ignored by git), kept after the test so a person can look.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvArtifacts)
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	dir, _ = filepath.Abs(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// consoleTab is a browser tab a console test drives: every step that fails ends the test
// with its reason and a screenshot (failShot.png) of what the page showed.
type consoleTab struct {
	t        *testing.T
	tab, ctx context.Context // ctx: the tab with the test's deadline
	shots    string          // the screenshot directory
	failShot string
}

func openConsole(t *testing.T, timeout time.Duration, failShot string) *consoleTab {
	t.Helper()
	c := &consoleTab{t: t, shots: artifacts(t), failShot: failShot}
	c.tab = browser(t)
	ctx, cancel := context.WithTimeout(c.tab, timeout)
	t.Cleanup(cancel)
	c.ctx = ctx
	return c
}

func (c *consoleTab) fail(format string, args ...any) {
	c.t.Helper()
	screenshot(c.t, c.tab, c.shots, c.failShot)
	c.t.Fatalf(format, args...)
}

// must runs steps or fails the test saying what they were for.
func (c *consoleTab) must(what string, steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, steps...); err != nil {
		c.fail("%s: %v", what, err)
	}
}

// eval is a JavaScript expression's number.
func (c *consoleTab) eval(expr string) int {
	c.t.Helper()
	n, err := chromedp.Run(c.ctx, chromedp.Evaluate[int](expr))
	if err != nil {
		c.fail("%s: %v", expr, err)
	}
	return n
}

// text is the text of the first element sel matches.
func (c *consoleTab) text(sel string) string {
	c.t.Helper()
	s, err := chromedp.Run(c.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		c.fail("text of %s: %v", sel, err)
	}
	return s
}

// location is the page's URL.
func (c *consoleTab) location() string {
	c.t.Helper()
	u, err := chromedp.Run(c.ctx, chromedp.Location())
	if err != nil {
		c.fail("location: %v", err)
	}
	return u
}

// textNow is the text of the first element sel matches at this moment ("" when none does):
// live pages swap their nodes while the test reads them, so a read must not fail on a node
// that was just replaced — poll it with eventually instead.
func (c *consoleTab) textNow(sel string) (string, error) {
	js, _ := json.Marshal(sel)
	return chromedp.Run(c.ctx, chromedp.Evaluate[string](`(document.querySelector(`+string(js)+`) || {}).innerText || ""`))
}
