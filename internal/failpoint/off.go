//go:build !failpoints

package failpoint

// Hit marks the step name; production builds do nothing here.
func Hit(name string) {}

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Fault returns the error injected for this occurrence of op; production builds
// never inject.
func Fault(op string) error { return nil }
