package correlation

import (
	"encoding/json"
	"strings"
	"testing"
)

// Definitions are stored and shown in clear: secrets in them are refused, pointing at a
// stored credential; harmless headers and parameters pass.
func TestDefinitionsRefuseSecrets(t *testing.T) {
	metric := func(params string) MetricDef {
		return MetricDef{Name: "m", Site: "dc1", Kind: KindHTTP, Targets: []string{"127.77.0.1"}, Interval: "30s",
			Value: "a.b", Params: json.RawMessage(params)}
	}
	conn := func(url string, headers map[string]string) Connector {
		return Connector{Name: "c", Site: "dc1", URL: url, Interval: "30s", Headers: headers, Fields: map[string]string{"node": "host"}}
	}
	for _, tc := range []struct {
		name string
		def  interface{ Validate() error }
		want string // "" valid
	}{
		{"metric, plain", metric(`{"path":"/status?format=json","headers":{"Accept":"application/json","user-agent":"outpost"}}`), ""},
		{"metric, no params", metric(``), ""},
		{"metric, Authorization header", metric(`{"headers":{"Authorization":"Bearer x"}}`), "params.headers.Authorization: not allowed"},
		{"metric, X-Api-Key header", metric(`{"headers":{"X-Api-Key":"x"}}`), "params.headers.X-Api-Key: not allowed"},
		{"metric, Cookie header", metric(`{"headers":{"Cookie":"s=x"}}`), "params.headers.Cookie: not allowed"},
		{"metric, user info", metric(`{"url":"http://u:p@127.77.0.1/x"}`), "params.url: user info"},
		{"metric, api_key in path query", metric(`{"path":"/x?api_key=s"}`), `params.path: query parameter "api_key" looks like a secret`},
		{"metric, token in url", metric(`{"url":"http://127.77.0.1/x?access_token=s"}`), `"access_token" looks like a secret`},
		{"metric, X-Amz-Signature", metric(`{"path":"/x?X-Amz-Signature=s"}`), `"X-Amz-Signature" looks like a secret`},
		{"metric, password", metric(`{"path":"/x?password=s"}`), `"password" looks like a secret`},
		{"metric, harmless names", metric(`{"path":"/x?design=1&monkeys_seen=2&page=3"}`), ""},
		{"connector, plain", conn("http://127.77.0.1/api/events?limit=100", map[string]string{"Accept": "application/json"}), ""},
		{"connector, Authorization", conn("http://127.77.0.1/api", map[string]string{"Authorization": "Basic x"}), "headers.Authorization: not allowed"},
		{"connector, private token header", conn("http://127.77.0.1/api", map[string]string{"Private-Token": "x"}), "headers.Private-Token: not allowed"},
		{"connector, user info", conn("http://u:p@127.77.0.1/api", nil), "url: user info"},
		{"connector, apikey query", conn("http://127.77.0.1/api?apikey=s", nil), `"apikey" looks like a secret`},
		{"connector, sig query", conn("http://127.77.0.1/api?sig=s", nil), `"sig" looks like a secret`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.def.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "stored http credential") {
				t.Fatalf("got %v, want a refusal saying %q and pointing at a credential", err, tc.want)
			}
			if strings.Contains(err.Error(), "Bearer x") || strings.Contains(err.Error(), "u:p@") {
				t.Errorf("the refusal echoes the secret: %v", err)
			}
		})
	}
}
