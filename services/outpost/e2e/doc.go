// Package e2e holds end-to-end tests of the real binaries: `outpost up` and `outpost-bridge`
// as separate processes, so they can be killed with SIGKILL, inspected through /proc, and
// reached only through their network interfaces, as operators reach them.
package e2e
