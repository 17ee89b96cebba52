package gateway

import (
	"testing"

	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// A role that is not one of tokens.Roles may do nothing: it ranks below viewer.
func TestRankFailsClosed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		role, min string
		allowed   bool
	}{
		{tokens.RoleAdmin, tokens.RoleAdmin, true},
		{tokens.RoleAdmin, tokens.RoleViewer, true},
		{tokens.RoleOperator, tokens.RoleOperator, true},
		{tokens.RoleOperator, tokens.RoleAdmin, false},
		{tokens.RoleViewer, tokens.RoleViewer, true},
		{tokens.RoleViewer, tokens.RoleOperator, false},
		{"", tokens.RoleViewer, false},
		{"", tokens.RoleAdmin, false},
		{"root", tokens.RoleViewer, false},
		{"Admin", tokens.RoleViewer, false},
		{"admin ", tokens.RoleViewer, false},
	} {
		r := rank(tc.role)
		if got := r != 0 && r >= rank(tc.min); got != tc.allowed {
			t.Errorf("role %q on a %s route: allowed=%v, want %v", tc.role, tc.min, got, tc.allowed)
		}
	}
}
