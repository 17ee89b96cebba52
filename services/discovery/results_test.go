package discovery

import (
	"encoding/json"
	"testing"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
)

func resultOf(t *testing.T, kind string, final bool, data any) *envelope.Result {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return &envelope.Result{Kind: kind, Final: final, Data: b}
}

// Discovery reads streamed and final chunks through the kinds' contract types: the values,
// hosts and entries of either, and the credential attempt of the final one.
func TestResultReaders(t *testing.T) {
	v := []snmp.Value{{OID: ".1.3.6.1.2.1.1.5.0", Type: "OctetString", Value: "sw1"}}
	at := snmp.Attempt{Credential: "public", FailedCredentials: []string{"private"}}
	for _, tc := range []struct {
		name string
		res  *envelope.Result
		cred string
	}{
		{"snmp_get", resultOf(t, snmpget.Kind, true, snmpget.Result{Attempt: at, Values: v}), "public"},
		{"snmp_walk page", resultOf(t, snmpwalk.Kind, false, snmpwalk.Page{Root: ".1.3.6.1.2.1.1", Values: v}), ""},
		{"snmp_walk final", resultOf(t, snmpwalk.Kind, true, snmpwalk.Result{Attempt: at, Values: v}), "public"},
	} {
		vals, got, err := snmpData(tc.res)
		if err != nil || len(vals) != 1 || vals[0].Value != "sw1" || got.Credential != tc.cred {
			t.Errorf("%s: %v %+v %v", tc.name, vals, got, err)
		}
	}
	hosts := []tcpscan.Host{{IP: "127.77.1.2", Open: []int{22}}}
	for _, res := range []*envelope.Result{
		resultOf(t, tcpscan.Kind, false, tcpscan.Chunk{Hosts: hosts}),
		resultOf(t, tcpscan.Kind, true, tcpscan.Summary{Hosts: hosts}),
	} {
		if got, err := scanHosts(res); err != nil || len(got) != 1 || got[0].Open[0] != 22 {
			t.Errorf("scan hosts (final %v): %v %v", res.Final, got, err)
		}
	}
	rootDSE := ldapsearch.Entry{DN: "", Attributes: map[string][]string{"vendorName": {"x"}}}
	if e, _, _, err := ldapData(resultOf(t, ldapsearch.Kind, false, ldapsearch.Page{Entries: []ldapsearch.Entry{rootDSE}})); err != nil || len(e) != 1 {
		t.Errorf("ldap page: %v %v", e, err)
	}
	e, worked, failed, err := ldapData(resultOf(t, ldapsearch.Kind, true, ldapsearch.Result{Credential: "dir", FailedCredentials: []string{"old"}, Results: []ldapsearch.Entry{rootDSE}}))
	if err != nil || len(e) != 1 || worked != "dir" || len(failed) != 1 {
		t.Errorf("ldap final: %v %q %v %v", e, worked, failed, err)
	}
}
