package hub

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTokenExpiry(t *testing.T) {
	s, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	s.now = func() time.Time { return now }
	tok, info, err := s.Create("short", "alice", []Grant{{Namespace: "alice", Role: RoleRead}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if info.Expires.Sub(info.Created) != time.Hour {
		t.Errorf("expiry %v, created %v", info.Expires, info.Created)
	}
	if _, err := s.Authenticate(context.Background(), tok); err != nil {
		t.Errorf("fresh token: %v", err)
	}
	now = now.Add(time.Hour)
	if _, err := s.Authenticate(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("expired token: %v, want ErrInvalidToken", err)
	}
}
