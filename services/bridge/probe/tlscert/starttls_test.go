package tlscert

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func TestReadLDAPResultCode(t *testing.T) {
	// ExtendedResponse{resultCode 0, matchedDN "", diagnosticMessage "", responseName}
	ok := []byte{0x30, 0x24, 0x02, 0x01, 0x01, 0x78, 0x1f, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0x8a, 0x16}
	ok = append(ok, "1.3.6.1.4.1.1466.20037"...)
	if code, err := readLDAPResultCode(bufio.NewReader(bytes.NewReader(ok))); err != nil || code != 0 {
		t.Errorf("success response: %d, %v", code, err)
	}
	refused := []byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x01, 0x04, 0x00, 0x04, 0x00}
	if code, err := readLDAPResultCode(bufio.NewReader(bytes.NewReader(refused))); err != nil || code != 1 {
		t.Errorf("operationsError response: %d, %v", code, err)
	}
	if _, err := readLDAPResultCode(bufio.NewReader(strings.NewReader("220 smtp ESMTP\r\n"))); err == nil {
		t.Error("an SMTP greeting read as LDAP")
	}
}

func TestSMTPReply(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("250-mx.example\r\n250-STARTTLS\r\n250 8BITMIME\r\n"))
	if lines, err := smtpReply(r, "250"); err != nil || len(lines) != 3 {
		t.Errorf("multi-line reply: %v, %v", lines, err)
	}
	if _, err := smtpReply(bufio.NewReader(strings.NewReader("554 no\r\n")), "220"); err == nil {
		t.Error("a 554 passed for 220")
	}
}

// FuzzStartTLSReplies: whatever a server answers to StartTLS, reading it never panics
// nor reads beyond what it was given.
func FuzzStartTLSReplies(f *testing.F) {
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00})
	f.Add([]byte("220 mx ESMTP\r\n250-x\r\n250 STARTTLS\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		readLDAPResultCode(bufio.NewReader(bytes.NewReader(b)))
		smtpReply(bufio.NewReader(bytes.NewReader(b)), "220")
	})
}
