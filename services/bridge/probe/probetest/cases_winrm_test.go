package probetest_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
)

// --- winrm_exec ---

func windowsHost(t *testing.T, mode string) lab.Host {
	return find(t, "windows_server with WinRM "+mode, func(h lab.Host) bool { return h.Class == lab.ClassWindows && h.WinRM == mode })
}

func winrmCred(name, user, pw string) probe.Credential {
	return probe.Credential{Name: name, Type: "winrm", Username: user, Secret: pw}
}

func winSecrets() []string {
	out := labSecrets()
	for _, h := range env.m.Hosts {
		if c := h.Credentials.WinRM; c != nil {
			out = append(out, c.Password)
		}
	}
	return out
}

func winrmCases(t *testing.T) []probetest.Case {
	w := windowsHost(t, lab.WinRMOn)
	good := winrmCred("win-"+w.Credentials.WinRM.Username, w.Credentials.WinRM.Username, w.Credentials.WinRM.Password)
	bad := winrmCred("wrong-password", w.Credentials.WinRM.Username, "not-"+w.Credentials.WinRM.Password)
	domainForm := winrmCred("dotted", `.\`+w.Credentials.WinRM.Username, w.Credentials.WinRM.Password)
	basic := good
	basic.Name, basic.Fields = "basic", map[string]string{"auth": "basic"}
	basicInsecure := basic
	basicInsecure.Name, basicInsecure.AllowInsecure = "basic-insecure", true
	refuses := windowsHost(t, lab.WinRMRefuses)
	off := windowsHost(t, lab.WinRMOff)
	secrets := winSecrets()
	decode := func(t *testing.T, o probetest.Outcome) winrmexec.Result {
		return probetest.Decode[winrmexec.Result](t, o.Data)
	}
	bios := `Get-CimInstance -ClassName Win32_BIOS | Select-Object SerialNumber,Manufacturer | ConvertTo-Json`
	return []probetest.Case{
		{Name: probetest.Success, Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []any{
			bios,
			"Get-CimInstance Win32_OperatingSystem | Format-List Caption,Version",
			map[string]any{"cmd": "hostname", "shell": "cmd"},
			map[string]any{"cmd": "Start-Sleep -Seconds 5", "timeout": "300ms"},
			"exit 3",
			"Get-NoSuchThing",
		}}, bad, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := decode(t, o)
				eq(t, "credential that worked", r.Credential, good.Name)
				eq(t, "failed credentials", fmt.Sprint(r.FailedCredentials), "[wrong-password]")
				eq(t, "auth", r.Auth, "ntlm")
				eq(t, "server", r.Server, "Microsoft-HTTPAPI/2.0")
				if len(r.Outputs) != 6 {
					t.Fatalf("%d outputs, want 6", len(r.Outputs))
				}
				var b struct{ SerialNumber, Manufacturer string }
				if err := json.Unmarshal([]byte(r.Outputs[0].Stdout.Text), &b); err != nil || b.SerialNumber != w.Serial {
					t.Errorf("Win32_BIOS as JSON: %q (%v), want serial %q", r.Outputs[0].Stdout.Text, err, w.Serial)
				}
				want := fmt.Sprintf("\r\nCaption : %s\r\nVersion : %s\r\n", w.OS, w.OSVersion)
				if !strings.HasPrefix(r.Outputs[1].Stdout.Text, want) {
					t.Errorf("Format-List: %q, want it to start with %q", r.Outputs[1].Stdout.Text, want)
				}
				eq(t, "cmd hostname", strings.TrimSpace(r.Outputs[2].Stdout.Text), strings.ToUpper(w.Name))
				if s := r.Outputs[3]; !s.TimedOut || s.ExitCode != nil {
					t.Errorf("Start-Sleep 5 with a 300ms timeout: timed out %v, exit %v", s.TimedOut, s.ExitCode)
				}
				if e := r.Outputs[4].ExitCode; e == nil || *e != 3 {
					t.Errorf("exit 3: exit code %v", e)
				}
				if n := r.Outputs[5]; n.ExitCode == nil || *n.ExitCode != 1 || !strings.Contains(n.Stderr.Text, "The term 'Get-NoSuchThing' is not recognized") || strings.Contains(n.Stderr.Text, "CLIXML") {
					t.Errorf("unknown cmdlet: exit %v, stderr %q (want the decoded error record)", n.ExitCode, n.Stderr.Text)
				}
			}},
		{Name: probetest.Success + "/local-account-form", Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"$env:COMPUTERNAME"}}, domainForm),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "output", strings.TrimSpace(decode(t, o).Outputs[0].Stdout.Text), strings.ToUpper(w.Name))
			}},
		{Name: probetest.Success + "/basic-insecure", Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"hostname"}}, basicInsecure),
			Check: func(t *testing.T, o probetest.Outcome) { eq(t, "auth", decode(t, o).Auth, "basic") }},
		{Name: "refused/basic-over-http", Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"hostname"}}, basic),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("plaintext HTTP with Basic auth")},
		{Name: "refused/ssh-credential", Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"hostname"}}, sshCred("prod-ssh", "root", "Sup3r-Secret-SSH-pw")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("winrm_exec takes only credentials of type winrm")},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"hostname"}}, bad, winrmCred("other", "nobody", "x-pw-1234")), WantCode: probe.CodeAuth,
			Check: func(t *testing.T, o probetest.Outcome) {
				if r := decode(t, o); strings.Join(r.FailedCredentials, ",") != "wrong-password,other" || r.Credential != "" {
					t.Errorf("result: failed %v, worked %q", r.FailedCredentials, r.Credential)
				}
			}},
		{Name: probetest.BadCreds + "/host-refuses-the-estate", Secrets: secrets, Req: req(refuses.IP, map[string]any{"commands": []string{"hostname"}}, good), WantCode: probe.CodeAuth},
		{Name: "unreachable/winrm-disabled", Secrets: secrets, Req: req(off.IP, map[string]any{"commands": []string{"hostname"}}, good), WantCode: probe.CodeUnreachable},
		{Name: probetest.Stalled, Secrets: secrets, Req: req(stall(t)+":80", map[string]any{"commands": []string{"hostname"}, "connect_timeout": "500ms"}, good), WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, Secrets: secrets, Req: req(wrong(t)+":80", map[string]any{"commands": []string{"hostname"}}, good), WantCode: probe.CodeProtocol},
		{Name: probetest.Cancel, Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"Start-Sleep -Seconds 30"}}, good), CancelAfter: 500 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Secrets: secrets, Req: req(w.IP, map[string]any{"commands": []string{"1..20000"}, "max_output": 1000}, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				size := 0
				for i := 1; i <= 20000; i++ {
					size += len(fmt.Sprint(i)) + 2
				}
				out := decode(t, o).Outputs[0].Stdout
				if !out.Truncated || len(out.Text) != 1000 || out.Size != int64(size) {
					t.Errorf("1..20000: truncated %v, %d kept, size %d; want 1000 kept of %d", out.Truncated, len(out.Text), out.Size, size)
				}
			}},
		{Name: "bad_params", Req: req(w.IP, map[string]any{"commands": []any{map[string]any{"cmd": "x", "shell": "bash"}}}, good), WantCode: probe.CodeBadParams},
		deny(t, w.IP, map[string]any{"commands": []string{"hostname"}}, good),
	}
}
