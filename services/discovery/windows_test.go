package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/masterzen/winrm"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
	"github.com/outpost-dev/outpost/libs/seal"
)

// runWinRM plays winrm_exec with the maintained WinRM client over NTLM (the real kind,
// with its guarded transport, passes the conformance suite in the bridge module).
func (b *testBridge) runWinRM(ctx context.Context, p *envelope.Probe, creds []seal.Secret) {
	var wp winrmexec.Params
	if err := json.Unmarshal(p.Params, &wp); err != nil {
		b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: probes.CodeBadParams, Message: err.Error()})
		return
	}
	res := winrmexec.Result{IP: p.Target, Port: 5985, Auth: "ntlm", FailedCredentials: []string{}, Outputs: []winrmexec.Output{}}
	for _, c := range creds {
		params := *winrm.DefaultParameters
		params.TransportDecorator = func() winrm.Transporter { return &winrm.ClientNTLM{} }
		cl, err := winrm.NewClientWithParameters(winrm.NewEndpoint(p.Target, 5985, false, false, nil, nil, nil, 10*time.Second), c.Username, c.Secret, &params)
		if err != nil {
			b.t.Errorf("winrm client: %v", err)
			return
		}
		var outs []winrmexec.Output
		refused := false
		for _, cmd := range wp.Commands {
			stdout, stderr, code, err := cl.RunPSWithString(cmd.Cmd, "")
			if err != nil && strings.Contains(err.Error(), "401") {
				refused = true
				break
			}
			if err != nil {
				b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: probes.CodeUnreachable, Message: err.Error()})
				return
			}
			outs = append(outs, winrmexec.Output{Command: cmd.Cmd, Shell: "powershell", ExitCode: &code,
				Stdout: probes.Blob{Text: stdout, Size: int64(len(stdout))}, Stderr: probes.Blob{Text: stderr, Size: int64(len(stderr))}})
		}
		if refused {
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			continue
		}
		res.Credential, res.Username, res.Outputs = c.Name, c.Username, outs
		b.emit(ctx, p, 0, true, envelope.StatusOK, res, nil)
		return
	}
	b.emit(ctx, p, 0, true, envelope.StatusError, res, &envelope.Error{Code: probes.CodeAuth, Message: "no credential was accepted"})
}

// TestDiscoveryOfWindows discovers a lab's Windows hosts through the service: the one
// answering WinRM becomes a windows_server with the manifest's identity, OS, adapters,
// software, disks and services; the one refusing every credential and the one with WinRM
// stopped are windows_servers by their ports.
func TestDiscoveryOfWindows(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.232.0/24", 40)
	stop := h.startService(ctx)
	defer stop()
	m := h.lab.Manifest()
	h.request(ctx, "credentials_add", CredentialAddRequest{Name: "win-wrong", Site: "lab", Type: "winrm", Username: "Administrator", Secret: "not-the-password-1"}, nil)
	seen := map[string]bool{}
	for _, mh := range m.Hosts {
		if c := mh.Credentials.WinRM; c != nil && !seen[c.Username] {
			seen[c.Username] = true
			h.request(ctx, "credentials_add", CredentialAddRequest{Name: "win-" + strings.ToLower(c.Username), Site: "lab", Type: "winrm", Username: c.Username, Secret: c.Password}, nil)
		}
	}
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	v := h.waitRun(ctx, st.Run, 90*time.Second)
	if v.State != StateCompleted {
		t.Fatalf("run %s: %s (%s) errors %v", st.Run, v.State, v.Reason, v.Errors)
	}
	h.mu.Lock()
	payloads := map[string]*envelope.CIPayload{}
	for _, p := range h.payloads {
		if len(p.Items) > 0 {
			payloads[p.Items[0].NativeKey] = p
		}
	}
	h.mu.Unlock()
	modes := map[string]bool{}
	for _, mh := range m.ByClass(lab.ClassWindows) {
		modes[mh.WinRM] = true
		t.Run(mh.Name+"-"+mh.WinRM, func(t *testing.T) {
			p := payloads[mh.IP]
			if p == nil || p.Items[0].Class != "windows_server" {
				t.Fatalf("no windows_server payload for %s", mh.IP)
			}
			root := p.Items[0].Attributes
			if mh.WinRM != lab.WinRMOn {
				if _, ok := root["serial_number"]; ok || root["os"] != "Microsoft Windows" {
					t.Errorf("classified by ports only, yet attributes %v", root)
				}
				return
			}
			for k, want := range map[string]any{"serial_number": mh.Serial, "os": mh.OS, "os_version": mh.OSVersion, "name": strings.ToUpper(mh.Name),
				"manufacturer": mh.Vendor, "model": mh.Model, "ram_mb": int(mh.MemoryBytes >> 20), "cpu_count": mh.CPUs, "cpu_type": mh.CPUModel} {
				if fmt.Sprint(root[k]) != fmt.Sprint(want) {
					t.Errorf("%s = %v, manifest %v", k, root[k], want)
				}
			}
			var macs, addrs, sw, disks, svcs []string
			for _, it := range p.Items {
				switch it.Class {
				case "network_adapter":
					macs = append(macs, fmt.Sprint(it.Attributes["mac_address"]))
				case "ip_address":
					addrs = append(addrs, fmt.Sprint(it.Attributes["address"]))
				case "software":
					sw = append(sw, fmt.Sprint(it.Attributes["name"], " ", it.Attributes["version"]))
				case "logical_disk":
					disks = append(disks, fmt.Sprint(it.Attributes["name"]))
				case "windows_service":
					svcs = append(svcs, fmt.Sprint(it.Attributes["name"]))
				}
			}
			if !slices.Equal(macs, mh.MACs) || !slices.Contains(addrs, mh.IP) {
				t.Errorf("adapters %v with %v, manifest %v with %s", macs, addrs, mh.MACs, mh.IP)
			}
			var wantSW, wantDisks []string
			for _, s := range mh.Software {
				wantSW = append(wantSW, s.Name+" "+s.Version)
			}
			for _, d := range mh.Disks {
				wantDisks = append(wantDisks, d.DeviceID)
			}
			slices.Sort(sw)
			slices.Sort(wantSW)
			if !slices.Equal(sw, wantSW) || !slices.Equal(disks, wantDisks) || !slices.Equal(svcs, mh.Services) {
				t.Errorf("software %v, disks %v, services %v; manifest %v, %v, %v", sw, disks, svcs, wantSW, wantDisks, mh.Services)
			}
		})
	}
	if !modes[lab.WinRMOn] || !modes[lab.WinRMRefuses] || !modes[lab.WinRMOff] {
		t.Errorf("the lab's Windows hosts cover %v: want WinRM on, refusing and off", modes)
	}
}
