package hub_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/heft-dev/heft/hub"
)

func grants(t *testing.T, specs ...string) []hub.Grant {
	t.Helper()
	var out []hub.Grant
	for _, s := range specs {
		g, err := hub.ParseGrant(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

func TestTokenStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	s, err := hub.OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, info, err := s.Create("ci", "alice", grants(t, "alice:write", "acme:read"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, hub.TokenPrefix) || len(tok) != len(hub.TokenPrefix)+43 || strings.Trim(tok[len(hub.TokenPrefix):], "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		t.Errorf("token %q is not heft_ + 43 base62 digits", tok)
	}
	if info.Name != "ci" || info.User != "alice" || !strings.HasPrefix(info.ID, "tok_") || len(info.Grants) != 2 {
		t.Errorf("info %+v", info)
	}
	// Stored hashed, mode 0600, in a 0700 directory.
	data, err := os.ReadFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(tok)) || bytes.Contains(data, []byte(tok[5:])) {
		t.Error("the token is stored in plain text")
	}
	for path, want := range map[string]os.FileMode{filepath.Join(dir, "tokens.json"): 0o600, dir: 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	id, err := s.Authenticate(ctx, tok)
	if err != nil || id.Name != "alice" || id.TokenName != "ci" || !id.Can("alice", hub.RoleWrite) || !id.Can("acme", hub.RoleRead) ||
		id.Can("acme", hub.RoleWrite) || id.Can("bob", hub.RoleRead) || len(id.Orgs) != 1 || id.Orgs[0] != "acme" {
		t.Errorf("Authenticate = %+v, %v", id, err)
	}
	for _, bad := range []string{"", hub.TokenPrefix, tok[:len(tok)-1], tok + "0", "hf_" + tok[len(hub.TokenPrefix):], "heft_" + tok[len(hub.TokenPrefix):], strings.ToUpper(tok)} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, hub.ErrInvalidToken) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidToken", bad, err)
		}
	}

	// Names are unique; bad input is refused.
	if _, _, err := s.Create("ci", "bob", grants(t, "bob:read"), 0); err == nil {
		t.Error("a second token named ci")
	}
	for _, bad := range []struct {
		name, user string
		g          []hub.Grant
	}{
		{"", "alice", grants(t, "alice:read")},
		{"a b", "alice", grants(t, "alice:read")},
		{"x", "-alice", grants(t, "alice:read")},
		{"x", "alice", nil},
		{"x", "alice", []hub.Grant{{Namespace: "a/b", Role: hub.RoleRead}}},
		{"x", "alice", []hub.Grant{{Namespace: "alice", Role: hub.RoleNone}}},
	} {
		if _, _, err := s.Create(bad.name, bad.user, bad.g, 0); err == nil {
			t.Errorf("Create(%q, %q, %v) accepted", bad.name, bad.user, bad.g)
		}
	}
	for _, bad := range []string{"acme", "acme:admin", ":read", "a/b:read"} {
		if _, err := hub.ParseGrant(bad); err == nil {
			t.Errorf("ParseGrant(%q) accepted", bad)
		}
	}

	// Another process (a second store on the directory) revokes: the
	// first one sees it at the next call.
	other, err := hub.OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok2, _, err := other.Create("laptop", "bob", grants(t, "bob:write"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s.Authenticate(ctx, tok2); err != nil || id.Name != "bob" {
		t.Errorf("token created by another store: %+v, %v", id, err)
	}
	if gone, err := other.Revoke(info.ID); err != nil || gone.Name != "ci" {
		t.Errorf("Revoke by id = %+v, %v", gone, err)
	}
	if _, err := s.Authenticate(ctx, tok); !errors.Is(err, hub.ErrInvalidToken) {
		t.Errorf("revoked token: %v", err)
	}
	if _, err := other.Revoke("ci"); !errors.Is(err, hub.ErrTokenNotFound) {
		t.Errorf("Revoke(missing) = %v", err)
	}
	if _, err := s.Revoke("laptop"); err != nil {
		t.Errorf("Revoke by name: %v", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("List after revoking all = %v, %v", list, err)
	}

	// Concurrent creates from two stores lose nothing (the file lock).
	var wg sync.WaitGroup
	for i, st := range []*hub.TokenStore{s, other, s, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := st.Create("c"+string(rune('a'+i)), "u", grants(t, "u:read"), 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if list, _ := s.List(); len(list) != 4 {
		t.Errorf("%d tokens after 4 concurrent creates", len(list))
	}

	// A tokens file others may write is refused.
	os.Chmod(filepath.Join(dir, "tokens.json"), 0o666)
	if _, err := s.List(); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("world-writable tokens file: %v", err)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upload.key")
	k1, err := hub.LoadOrCreateKey(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %d bytes, %v", len(k1), err)
	}
	k2, err := hub.LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("reload gave another key (%v)", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	os.Chmod(path, 0o644)
	if _, err := hub.LoadOrCreateKey(path); err == nil {
		t.Error("a key readable by others was accepted")
	}
	// Concurrent first use agrees on one key.
	path2 := filepath.Join(t.TempDir(), "k")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], _ = hub.LoadOrCreateKey(path2)
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) || len(k) != 32 {
			t.Fatal("concurrent LoadOrCreateKey calls got different keys")
		}
	}
}
