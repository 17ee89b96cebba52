// Package api is the registry of Outpost's service contracts: every svc.<service>.<op> with
// its request and answer types, declared once in libs/api/<service> and used by the service,
// the gateway, the console, the CLI and other services alike (like Tailscale's tailcfg).
//
// A service's tests check its endpoints against the registry (CheckEndpoints), so an
// operation cannot be added, removed or retyped without its contract.
package api

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/api/dlq"
	"github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// Ops lists every operation of every service, by service then name.
func Ops() []bus.OpSpec {
	all := slices.Concat(agents.Ops(), cmdb.Ops(), correlation.Ops(), discovery.Ops(), importer.Ops(), orchestration.Ops(), dlq.Ops(), mapping.Ops())
	slices.SortFunc(all, func(a, b bus.OpSpec) int { return strings.Compare(a.Subject(), b.Subject()) })
	return all
}

// Lookup returns the contract of svc.<service>.<op>.
func Lookup(service, op string) (bus.OpSpec, bool) {
	for _, o := range Ops() {
		if o.Service == service && o.Name == op {
			return o, true
		}
	}
	return bus.OpSpec{}, false
}

// CheckEndpoints reports every difference between a service's endpoints and its contract:
// an op without an endpoint, an endpoint without an op, and an endpoint whose request or
// answer type is not the contract's.
func CheckEndpoints(service string, eps map[string]bus.Endpoint) error {
	var errs []error
	seen := map[string]bool{}
	for _, o := range Ops() {
		if o.Service != service {
			continue
		}
		seen[o.Name] = true
		ep, ok := eps[o.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s: in the contract (libs/api/%s) but the service has no endpoint", o.Subject(), service))
		case ep.Request != o.Request:
			errs = append(errs, fmt.Errorf("%s: request is %v, the contract says %v", o.Subject(), ep.Request, o.Request))
		case ep.Response != o.Response:
			errs = append(errs, fmt.Errorf("%s: answer is %v, the contract says %v", o.Subject(), ep.Response, o.Response))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(eps)) {
		if !seen[name] {
			errs = append(errs, fmt.Errorf("%s: the service serves it but libs/api/%s has no such op", bus.ServiceSubject(service, name), service))
		}
	}
	return errors.Join(errs...)
}
