package collect

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/gosnmp/gosnmp"
)

// TrapUser is an SNMPv3 USM user whose traps and informs the trap collector accepts. Its
// passphrases come from the bridge's config file (never argv) and are never logged.
type TrapUser struct {
	Name string `yaml:"user"`
	// Auth: MD5, SHA, SHA224, SHA256, SHA384, SHA512, or empty (noAuthNoPriv).
	Auth     string `yaml:"auth"`
	AuthPass string `yaml:"auth_pass"`
	// Priv: DES, AES, AES192, AES256, AES192C, AES256C, or empty (no privacy).
	Priv     string `yaml:"priv"`
	PrivPass string `yaml:"priv_pass"`
}

var authProtocols = map[string]gosnmp.SnmpV3AuthProtocol{"": gosnmp.NoAuth, "MD5": gosnmp.MD5, "SHA": gosnmp.SHA,
	"SHA224": gosnmp.SHA224, "SHA256": gosnmp.SHA256, "SHA384": gosnmp.SHA384, "SHA512": gosnmp.SHA512}

var privProtocols = map[string]gosnmp.SnmpV3PrivProtocol{"": gosnmp.NoPriv, "DES": gosnmp.DES, "AES": gosnmp.AES,
	"AES192": gosnmp.AES192, "AES256": gosnmp.AES256, "AES192C": gosnmp.AES192C, "AES256C": gosnmp.AES256C}

// validate reports every problem of user i (by name and index, never a passphrase).
func (u TrapUser) validate(i int) []error {
	at := fmt.Sprintf("collect.trap_users[%d] (%q)", i, u.Name)
	var errs []error
	if u.Name == "" {
		errs = append(errs, fmt.Errorf("%s: user is empty", at))
	}
	if _, ok := authProtocols[strings.ToUpper(u.Auth)]; !ok {
		errs = append(errs, fmt.Errorf("%s: auth %q: want MD5, SHA, SHA224, SHA256, SHA384 or SHA512", at, u.Auth))
	}
	if _, ok := privProtocols[strings.ToUpper(u.Priv)]; !ok {
		errs = append(errs, fmt.Errorf("%s: priv %q: want DES, AES, AES192, AES256, AES192C or AES256C", at, u.Priv))
	}
	if u.Auth != "" && len(u.AuthPass) < 8 {
		errs = append(errs, fmt.Errorf("%s: auth_pass: at least 8 characters (RFC 3414)", at))
	}
	if u.Priv != "" && u.Auth == "" {
		errs = append(errs, fmt.Errorf("%s: priv needs auth (authPriv)", at))
	}
	if u.Priv != "" && len(u.PrivPass) < 8 {
		errs = append(errs, fmt.Errorf("%s: priv_pass: at least 8 characters (RFC 3414)", at))
	}
	return errs
}

func (u TrapUser) params(engineID string) *gosnmp.UsmSecurityParameters {
	return &gosnmp.UsmSecurityParameters{UserName: u.Name, AuthoritativeEngineID: engineID,
		AuthenticationProtocol: authProtocols[strings.ToUpper(u.Auth)], AuthenticationPassphrase: u.AuthPass,
		PrivacyProtocol: privProtocols[strings.ToUpper(u.Priv)], PrivacyPassphrase: u.PrivPass}
}

func (u TrapUser) flags() gosnmp.SnmpV3MsgFlags {
	switch {
	case u.Priv != "":
		return gosnmp.AuthPriv
	case u.Auth != "":
		return gosnmp.AuthNoPriv
	}
	return gosnmp.NoAuthNoPriv
}

// engineID is the trap collector's own SNMP engine ID, binary: informs are sent to it (the
// receiver of an inform is authoritative) and senders discover it. Configured as hex; by
// default one derived from the site (RFC 3411 text format, enterprise 8072 = net-snmp's).
func engineID(hexID, site string) (string, error) {
	if hexID != "" {
		b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(hexID), "0x"))
		if err != nil || len(b) < 5 || len(b) > 32 {
			return "", errors.New("collect.trap_engine_id: want 5 to 32 bytes in hex, e.g. 80001f8804736974652d31")
		}
		return string(b), nil
	}
	id := append([]byte{0x80, 0x00, 0x1f, 0x88, 0x04}, []byte("outpost-"+site)...)
	return string(id[:min(len(id), 32)]), nil
}

// usmTable is the listener's table of users: a v3 trap or inform is read with the
// credentials of its user name; unknown users and bad credentials are counted as unreadable.
func usmTable(users []TrapUser, engine string, log gosnmp.Logger) (*gosnmp.SnmpV3SecurityParametersTable, error) {
	t := gosnmp.NewSnmpV3SecurityParametersTable(log)
	for i, u := range users {
		if err := t.Add(u.Name, u.params(engine)); err != nil {
			return nil, fmt.Errorf("collect.trap_users[%d] (%q): %w", i, u.Name, err)
		}
	}
	return t, nil
}
