package local

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

const versionAttr = "user.heft.version"

// errNoVersion means the file carries no version attribute, or the filesystem
// has no user extended attributes.
var errNoVersion = errors.New("no version attribute")

// setVersion stores v as f's version attribute. It is a variable so tests can
// take the path of filesystems without user xattrs.
var setVersion = func(f *os.File, v string) error {
	return unix.Fsetxattr(int(f.Fd()), versionAttr, []byte(v), 0)
}

func getVersion(f *os.File) (string, error) {
	var buf [64]byte
	n, err := unix.Fgetxattr(int(f.Fd()), versionAttr, buf[:])
	switch {
	case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ERANGE):
		return "", errNoVersion
	case err != nil:
		return "", &os.PathError{Op: "getxattr", Path: f.Name(), Err: err}
	}
	return string(buf[:n]), nil
}
