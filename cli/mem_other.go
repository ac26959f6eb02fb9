//go:build !linux

package cli

// physicalMemory returns a conservative 4 GiB where heft does not ask the system.
func physicalMemory() int64 { return 4 << 30 }
