package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// client calls the gateway's API.
type client struct {
	base  string
	token string
	http  *http.Client
}

func (g *globals) client() (*client, error) {
	tok := g.token
	if tok == "" {
		// A local hub's admin token: from --data, else the default ./data of `make run`.
		dir := g.data
		if dir == "" {
			dir = "data"
		}
		if b, err := os.ReadFile(filepath.Join(dir, "admin.token")); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	return &client{base: strings.TrimRight(g.server, "/"), token: tok, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// do sends a request and decodes a JSON answer into out (raw bytes when out is *[]byte).
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return usagef("--server %q: %v", c.base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// a command that traces (discover) passes its trace on: the gateway's span is its child
	telemetry.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.http.Do(req)
	if err != nil {
		var ne net.Error
		var oe *net.OpError
		if errors.As(err, &oe) || errors.As(err, &ne) {
			return fmt.Errorf("cannot reach %s — is `outpost up` running? (%v)", c.base, err)
		}
		return fmt.Errorf("cannot reach %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	return c.answer(resp, method, path, out)
}

// answer reads a response: a problem document is the error, else the JSON answer is
// decoded into out (raw bytes when out is *[]byte).
func (c *client) answer(resp *http.Response, method, path string, out any) error {
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var p gatewayapi.Problem
		if json.Unmarshal(data, &p) == nil && p.Title != "" {
			msg := fmt.Sprintf("%s (%d)", p.Title, resp.StatusCode)
			if p.Detail != "" {
				msg += ": " + p.Detail
			}
			if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
				msg += " — give --token, set OUTPOST_TOKEN, or --data DIR of a local hub"
			}
			return errors.New(msg)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if out != nil {
		// Numbers inside untyped values (CI attributes) stay as the API wrote them.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}
