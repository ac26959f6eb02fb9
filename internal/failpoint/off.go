//go:build !failpoints

package failpoint

// Hit marks the step name; production builds do nothing here.
func Hit(name string) {}

// Enabled reports whether this binary was built with failpoints.
const Enabled = false
