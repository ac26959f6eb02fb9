package vfs

// Default is the filesystem the store uses when its options name none: OS, or in a
// `-tags failpoints` build OS with the HEFT_FAULT injection (see
// default_failpoints.go).
var Default = OS
