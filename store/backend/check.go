package backend

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// CheckStep is one operation of Check: what it did, how long it took, and its
// error ("" when it worked).
type CheckStep struct {
	Op      string        `json:"op"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Error   string        `json:"error,omitempty"`
}

// CheckReport is what Check found.
type CheckReport struct {
	Properties Properties  `json:"properties"`
	Steps      []CheckStep `json:"steps"`
	OK         bool        `json:"ok"`
}

// Check exercises every operation the store needs on a scratch object under
// prefix (which must be a valid name prefix ending in "/", such as
// "doctor/"): PutIfAbsent (and that a second one fails with ErrExists),
// Get, ReadAt, CompareAndSwap with the right and a stale version, List (that
// it reports the object just written), Delete, and Stat after the delete. It
// stops at the first failure and leaves nothing behind that it could delete.
func Check(ctx context.Context, b Backend, prefix string) CheckReport {
	rep := CheckReport{Properties: b.Properties()}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	name := prefix + "probe-" + hex.EncodeToString(tok[:])
	first := []byte("heft doctor probe 1\n")
	second := []byte("heft doctor probe 2\n")
	var version string
	steps := []struct {
		op string
		fn func() error
	}{
		{"put-if-absent", func() error {
			oi, err := b.PutIfAbsent(ctx, name, bytes.NewReader(first), int64(len(first)))
			version = oi.Version
			return err
		}},
		{"put-if-absent refuses an existing object", func() error {
			_, err := b.PutIfAbsent(ctx, name, bytes.NewReader(second), int64(len(second)))
			if errors.Is(err, ErrExists) {
				return nil
			}
			if err == nil {
				return errors.New("the object was overwritten: this server ignores If-None-Match, so refs and locks are unsafe on it")
			}
			return err
		}},
		{"get", func() error {
			data, oi, err := ReadAll(ctx, b, name)
			if err == nil && !bytes.Equal(data, first) {
				err = fmt.Errorf("read back %q, wrote %q", data, first)
			}
			if version == "" {
				version = oi.Version
			}
			return err
		}},
		{"ranged read", func() error {
			p := make([]byte, 5)
			if _, err := b.ReadAt(ctx, name, p, 5); err != nil {
				return err
			}
			if !bytes.Equal(p, first[5:10]) {
				return fmt.Errorf("range 5-9 read %q, want %q", p, first[5:10])
			}
			return nil
		}},
		{"compare-and-swap", func() error {
			_, err := b.CompareAndSwap(ctx, name, version, bytes.NewReader(second), int64(len(second)))
			return err
		}},
		{"compare-and-swap refuses a stale version", func() error {
			_, err := b.CompareAndSwap(ctx, name, version, bytes.NewReader(first), int64(len(first)))
			if errors.Is(err, ErrPreconditionFailed) {
				return nil
			}
			if err == nil {
				return errors.New("a stale version was accepted: this server ignores If-Match, so refs are unsafe on it")
			}
			return err
		}},
		{"list", func() error {
			found := false
			err := b.List(ctx, prefix, func(oi ObjectInfo) error {
				found = found || oi.Name == name
				return nil
			})
			if err == nil && !found {
				err = errors.New("the listing misses an object written before it (not read-after-write consistent)")
			}
			return err
		}},
		{"delete", func() error { return b.Delete(ctx, name) }},
		{"stat after delete", func() error {
			_, err := b.Stat(ctx, name)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err == nil {
				return errors.New("the deleted object is still there")
			}
			return err
		}},
	}
	rep.OK = true
	for _, st := range steps {
		start := time.Now()
		err := st.fn()
		step := CheckStep{Op: st.op, Elapsed: time.Since(start)}
		if err != nil {
			step.Error = err.Error()
			rep.OK = false
		}
		rep.Steps = append(rep.Steps, step)
		if err != nil {
			_ = b.Delete(ctx, name)
			break
		}
	}
	return rep
}
