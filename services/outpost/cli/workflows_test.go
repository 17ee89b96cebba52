package cli_test

import "maps"

// The workflow routes and their commands (merged into commandOf, so that the orchestration
// routes are listed beside their commands in one place).
func init() {
	maps.Copy(commandOf, map[string]string{
		"POST /api/v1/workflows":                               "workflow add",
		"GET /api/v1/workflows":                                "workflow ls",
		"GET /api/v1/workflows/{name}":                         "workflow show",
		"POST /api/v1/workflows/{name}/runs":                   "workflow run",
		"GET /api/v1/workflow-runs":                            "workflow runs ls",
		"GET /api/v1/workflow-runs/{id}":                       "workflow runs show",
		"POST /api/v1/workflow-runs/{id}/cancel":               "workflow cancel",
		"POST /api/v1/workflow-runs/{id}/steps/{step}/approve": "workflow approve",
	})
}
