//go:build windows

package tcpscan

// raiseNoFile: Windows has no open-file limit of this kind; sockets are bounded by memory
// and the ephemeral port range. 8192 keeps the scan's file bound what a Linux host gets.
func raiseNoFile() int { return 8192 }
