package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// pageSize is what the CLI asks per page of a registry list (the API's largest; tests
// make it small to walk pages).
var pageSize = 1000

// listPages fetches a paged list (GET path, items under field) following next_cursor until
// the end or limit items (limit <= 0: all), and returns {"<field>": [...]} as one document,
// the shape a single page has, so `-o json` output does not depend on how many pages there were.
func listPages(ctx context.Context, c *client, path, field string, limit int) ([]byte, error) {
	items := []json.RawMessage{}
	cursor := ""
	for limit <= 0 || len(items) < limit {
		q := url.Values{}
		n := pageSize
		if limit > 0 {
			n = min(n, limit-len(items))
		}
		q.Set("limit", fmt.Sprint(n))
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		var p map[string]json.RawMessage
		if err := c.do(ctx, "GET", path+sep+q.Encode(), nil, &p); err != nil {
			return nil, err
		}
		var page []json.RawMessage
		if raw, ok := p[field]; ok {
			if err := json.Unmarshal(raw, &page); err != nil {
				return nil, fmt.Errorf("decode %s of %s: %w", field, path, err)
			}
		}
		items = append(items, page...)
		var next string
		if raw, ok := p["next_cursor"]; ok {
			if err := json.Unmarshal(raw, &next); err != nil {
				return nil, fmt.Errorf("decode next_cursor of %s: %w", path, err)
			}
		}
		if next == "" || len(page) == 0 {
			break
		}
		cursor = next
	}
	return json.Marshal(map[string]any{field: items})
}

// limitFlag adds --limit to a list command.
func limitFlag(cmd *cobra.Command, limit *int, what string) {
	cmd.Flags().IntVar(limit, "limit", 0, "at most this many "+what+" (default: all, page by page)")
}

// clip shortens s to n characters for a table cell.
func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(v any) string {
	if v == nil || v == "" {
		return "-"
	}
	return fmt.Sprint(v)
}

// showList prints a whole paged list (see listPages): as one JSON document with -o json,
// else decoded into out and printed by table.
func (g *globals) showList(cmd *cobra.Command, path, field string, limit int, out any, table func() error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	raw, err := listPages(cmd.Context(), c, path, field, limit)
	if err != nil {
		return err
	}
	if g.output == "json" {
		return writeLine(g.stdout, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return table()
}
