//go:build !linux

package local

import (
	"errors"
	"os"
)

// errNoVersion means the file carries no version attribute. Outside Linux this
// backend does not use extended attributes: versions are content hashes.
var errNoVersion = errors.New("no version attribute")

var setVersion = func(f *os.File, v string) error { return errNoVersion }

func getVersion(f *os.File) (string, error) { return "", errNoVersion }
