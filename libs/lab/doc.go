// Package lab runs a simulated network on loopback addresses so that tests,
// demos and benchmarks have real servers to discover: Linux hosts answering
// SSH, switches and routers answering SNMP, web servers with certificates, an
// LDAP directory, Windows servers, printers, dead addresses and, on request,
// hostile hosts. A Manifest says exactly what runs where; tests compare what
// discovery found against it.
//
//	l, err := lab.Start(ctx, lab.Config{Range: "127.77.0.0/24", Hosts: 60, Seed: 7})
//	if err != nil { ... }
//	defer l.Close()
//	err = l.WriteManifest("lab.json")
//
// # Addresses
//
// The lab only ever binds addresses inside 127.0.0.0/8 (Linux routes all of
// it to lo; the project uses 127.77.0.0/16); Config.Validate rejects anything
// else. Host i (0-based) gets the range's address number i+1; with Hostile the
// three hostile hosts follow the simulated ones. Every listener binds its exact
// address and port (22, 80, 161/udp, 443, ...): starting a lab needs root,
// CAP_NET_BIND_SERVICE, or sysctl net.ipv4.ip_unprivileged_port_start=0, and
// no other process may listen on 0.0.0.0 at those ports. Addresses of the
// range beyond the lab's hosts are silent (connections refused).
//
// # Profiles
//
// Of the simulated addresses about 15% are dead (class "", nothing listens),
// 34% linux_server, 13% windows_server, 11% web_server, 12% ip_switch, 5%
// ip_router, 7% printer, plus one ldap_directory per 500 addresses. A lab of
// 16 hosts or more always has at least one of each (four Linux hosts, two
// switches), Debian- and RHEL-family hosts, a Linux web server with HTTPS, a
// database, two Linux hosts sharing the junk DMI serial "To Be Filled By
// O.E.M." (with different MACs), and certificates that are valid, expiring
// within 14 days and expired.
//
//   - linux_server: SSH (x/crypto/ssh, ed25519 host key derived from the seed,
//     password and Config.AuthorizedKeys public keys) on Debian 12, Ubuntu
//     22.04/24.04, Rocky Linux 9 or RHEL 9. Exec requests (and an interactive
//     shell) run a small shell: quoting, ; && ||, pipes into head/tail/grep/
//     wc/sort/uniq, redirects to /dev/null, sudo, sh -c; commands uname,
//     hostname, cat (os-release, DMI under /sys/class/dmi/id, /proc/meminfo,
//     ...), ip link/addr/route (-o, -br), lscpu, free, df, ps (-eo cols, aux,
//     -ef), ss -tulnp, dpkg-query/dpkg -l or rpm -qa --qf, dmidecode -s (as
//     root or via sudo), systemctl, id, whoami, sleep, seq, yes, echo, exit.
//     Anything else fails like bash: "bash: X: command not found", exit 127.
//     Some hosts run nginx or Apache (80, 443) and PostgreSQL (5432: declines
//     TLS, asks for SCRAM, refuses the password) or MySQL/MariaDB (3306: real
//     greeting, then access denied); ss, ps and the package list agree.
//   - ip_switch, ip_router: SNMP agents of our own on gosnmp's packet code:
//     GET/GETNEXT/GETBULK (and v1) over the system group, ifTable, ifXTable,
//     ipAddrTable, entPhysicalTable, LLDP-MIB local and remote tables (remote
//     systems are other lab devices; Manifest.Neighbours). Every device answers
//     v1/v2c with its community; about half also have an SNMPv3 user at
//     authPriv (SHA, AES-128) with engine ID discovery, authentication,
//     privacy and usmStats reports (unknown engine ID, unknown user,
//     unsupported level, wrong digest, decryption error). The USM time window
//     is not enforced. Some devices also show an SSH banner (nobody gets in)
//     or a Cisco telnet login prompt.
//   - web_server: HTTP 80 and/or HTTPS 443/8443 with a Server header
//     (nginx, Apache, Microsoft-IIS) and a page title; certificates are
//     self-signed ECDSA P-256. Every web port also serves /flaky?key=K&fail=N,
//     a target for retry policies: 503 with Retry-After to the first N requests
//     of key K, then 200 (Lab.FlakyHits counts them).
//   - windows_server: TCP 135 and 445 accept and wait, 3389 answers the RDP
//     X.224 connection request (CredSSP), 5985 is WinRM as Windows Server
//     2016/2019/2022 with AllowUnencrypted answer it (winrm.go): HTTP.sys
//     (Server: Microsoft-HTTPAPI/2.0, 404 off /wsman), NTLMv2 under Negotiate
//     verified against the manifest's winrm credential and authenticating the
//     connection (the first Windows host also takes Basic), WS-Management
//     shells (Create, Command, Receive with base64 streams, Send, Signal,
//     Delete, OperationTimeout faults, a 30-shell quota). Commands run in a
//     small Windows PowerShell 5.1 (powershell.go: CIM classes Win32_BIOS,
//     _ComputerSystem, _OperatingSystem, _Processor, _LogicalDisk,
//     _NetworkAdapterConfiguration, the Uninstall registry keys, Get-Service,
//     Get-NetTCPConnection, Select/Where/Sort-Object, Format-List/-Table,
//     ConvertTo-Json in 5.1's layout; errors as CLIXML on stderr) or cmd.exe.
//     In a lab with three or more Windows hosts the second-to-last refuses
//     every credential (Host.WinRM refuses_credentials, no winrm credential in
//     the manifest) and the last has WinRM stopped (disabled, 5985 closed).
//     No SMB, RPC or WMI over DCOM.
//   - printer: TCP 9100 (reads jobs, answers @PJL INFO ID) and SNMP v1/v2c
//     with community "public" and the printer MIB's serial number.
//   - ldap_directory: LDAPv3 on 389 (StartTLS) and 636: simple bind, search
//     with base/one/sub scope, and/or/not/equality/substring/presence/>=/<=
//     filters, size limits, attribute selection and paged results, WhoAmI;
//     anonymous clients may read the root DSE only; writes are refused.
//   - hostile (Config.Hostile): stall (accepts, never writes), wrong_protocol
//     (an SMTP greeting, then an error line and noise, then hang-up), stream
//     (writes without end), on TCP 22, 80, 389, 443, 3306, 5432 and UDP 161.
//
// # Determinism
//
// Everything in the manifest follows from Seed, Range and the reference day:
// the same configuration gives a byte-identical manifest all day long.
// Certificate validity is relative to Manifest.ReferenceTime, the UTC midnight
// of Config.Now() at start (so "expiring within 14 days" stays true), and the
// manifest records each certificate's exact not_after and SHA-256; keys and
// signatures are derived from the seed, so a fixed Config.Now gives identical
// certificates on every run. What is not in the manifest may vary: uptimes,
// HTTP Date headers, protocol nonces.
//
// # Tests
//
// This package's tests use 127.77.200.0/24 to 127.77.209.0/24,
// 127.77.212.0/22 (1,000 hosts), 127.77.220.0/24 and plans of 127.77.250.0/24
// (nothing bound); benchmarks use 127.77.216.0/22. Config.Stride spreads a lab's hosts
// over its range: the /16 discovery benchmark (services/outpost/e2e) runs a sparse lab on
// the whole of 127.77.0.0/16, alone. Other packages should use other 127.77.x
// ranges.
package lab
