package gateway

import (
	"net/http"
	"strconv"

	"github.com/outpost-dev/outpost/libs/page"
)

// sortableTime formats times of a cursor key at fixed width, so they sort as text.
const sortableTime = "2006-01-02T15:04:05.000000000Z"

// pageRequest reads ?cursor=&limit= of a list the gateway serves itself.
func pageRequest(r *http.Request) (page.Request, error) {
	q := r.URL.Query()
	p := page.Request{Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return p, errField("limit", "want a number from 1 to 1000")
		}
		p.Limit = n
	}
	return p, nil
}
