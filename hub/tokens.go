package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/heft-dev/heft/internal/fsutil"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// TokenPrefix starts every token a TokenStore creates, so that a leaked one
// is recognisable (secret scanners, logs). It starts with "hf_" because
// @huggingface/hub refuses any access token that does not ("Your access token
// must start with 'hf_'").
const TokenPrefix = "hf_heft_"

// tokenSecretLen is the length of the base62 part: 32 random bytes (256
// bits) need 43 base62 digits.
const tokenSecretLen = 43

const (
	tokensFile = "tokens.json"
	tokensLock = "tokens.lock"
	// lockWait bounds how long Create and Revoke wait for another process
	// editing the file.
	lockWait = 10 * time.Second
)

// ErrTokenNotFound is returned by TokenStore.Revoke for an unknown token.
var ErrTokenNotFound = errors.New("hub: token not found")

// TokenStore keeps access tokens in DIR/tokens.json. Only the SHA-256 of
// each token is stored; the token itself is returned once, by Create.
//
// The file is written the durable way (temp file, fsync, rename, fsync of
// the directory) with mode 0600, under an exclusive flock on
// DIR/tokens.lock, so that `heft token create` and `heft token revoke` can
// run while a server is using the same directory. Authenticate re-reads
// the file when it changed (one stat per call), so a revoked token stops
// working at the server's next request. A file that others may write
// (group or world write bits) is refused: whoever can write it can mint an
// administrator token.
//
// A TokenStore is safe for concurrent use.
type TokenStore struct {
	dir string
	now func() time.Time

	mu     sync.Mutex
	stat   os.FileInfo // of the file the cache was read from; guarded by mu
	byHash map[string]*tokenRecord
}

type tokenFile struct {
	Version int           `json:"version"`
	Tokens  []tokenRecord `json:"tokens"`
}

type tokenRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	User    string    `json:"user"`
	SHA256  string    `json:"sha256"` // hex SHA-256 of the whole token
	Grants  []Grant   `json:"grants"`
	Created time.Time `json:"created"`
	// Expires is zero for a token that does not expire.
	Expires time.Time `json:"expires,omitzero"`
}

// TokenInfo describes a stored token. It never holds the token.
type TokenInfo struct {
	// ID is a short public id ("tok_" + 12 hex digits) for listings and
	// Revoke.
	ID string
	// Name is unique in the store; User is the identity name (also the
	// user's own namespace, though only Grants give access to it).
	Name, User string
	Grants     []Grant
	Created    time.Time
	// Expires is zero when the token does not expire.
	Expires time.Time
}

// OpenTokenStore opens the token store in dir, creating dir (mode 0700) if
// it does not exist. The tokens file is created by the first Create.
func OpenTokenStore(dir string) (*TokenStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hub: token store: %w", err)
	}
	s := &TokenStore{dir: dir, now: time.Now}
	if _, err := s.List(); err != nil {
		return nil, err
	}
	return s, nil
}

// Create makes a token for user with grants, named name (unique in the
// store), valid for ttl (0: no expiry), and returns it with its
// description. The token is shown only here; the store keeps its SHA-256.
func (s *TokenStore) Create(name, user string, grants []Grant, ttl time.Duration) (string, TokenInfo, error) {
	if !validTokenName(name) {
		return "", TokenInfo{}, fmt.Errorf("hub: token name %q: use 1 to 64 of [A-Za-z0-9_.-]", name)
	}
	if !validRepoPart(user) {
		return "", TokenInfo{}, fmt.Errorf("hub: user name %q: use [A-Za-z0-9_.-], with a letter, digit or _ first and last", user)
	}
	if len(grants) == 0 {
		return "", TokenInfo{}, errors.New("hub: a token needs at least one grant, NAMESPACE:read or NAMESPACE:write")
	}
	for _, g := range grants {
		if err := g.validate(); err != nil {
			return "", TokenInfo{}, err
		}
	}
	if ttl < 0 {
		return "", TokenInfo{}, errors.New("hub: negative token lifetime")
	}
	secret, err := newTokenSecret()
	if err != nil {
		return "", TokenInfo{}, err
	}
	sum := sha256.Sum256([]byte(secret))
	rec := tokenRecord{
		ID:      "tok_" + hex.EncodeToString(sum[:6]),
		Name:    name,
		User:    user,
		SHA256:  hex.EncodeToString(sum[:]),
		Grants:  slices.Clone(grants),
		Created: s.now().UTC().Truncate(time.Second),
	}
	if ttl > 0 {
		rec.Expires = rec.Created.Add(ttl)
	}
	err = s.update(func(f *tokenFile) error {
		for _, t := range f.Tokens {
			if t.Name == name {
				return fmt.Errorf("hub: a token named %q exists", name)
			}
		}
		f.Tokens = append(f.Tokens, rec)
		return nil
	})
	if err != nil {
		return "", TokenInfo{}, err
	}
	return secret, rec.info(), nil
}

// List returns every stored token, oldest first.
func (s *TokenStore) List() ([]TokenInfo, error) {
	f, _, err := s.read()
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(f.Tokens))
	for _, t := range f.Tokens {
		out = append(out, t.info())
	}
	return out, nil
}

// Revoke deletes the token with the given id or name and returns what it
// was. ErrTokenNotFound if there is none.
func (s *TokenStore) Revoke(idOrName string) (TokenInfo, error) {
	var gone TokenInfo
	err := s.update(func(f *tokenFile) error {
		i := slices.IndexFunc(f.Tokens, func(t tokenRecord) bool { return t.ID == idOrName || t.Name == idOrName })
		if i < 0 {
			return fmt.Errorf("%w: %q", ErrTokenNotFound, idOrName)
		}
		gone = f.Tokens[i].info()
		f.Tokens = slices.Delete(f.Tokens, i, i+1)
		return nil
	})
	return gone, err
}

// Authenticate implements Authenticator.
func (s *TokenStore) Authenticate(_ context.Context, token string) (Identity, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) != len(TokenPrefix)+tokenSecretLen {
		return Identity{}, ErrInvalidToken
	}
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	byHash, err := s.current()
	if err != nil {
		return Identity{}, err
	}
	rec, ok := byHash[key]
	// The map lookup already matched; the constant-time compare keeps the
	// decision itself free of early exits on the secret-derived value.
	if !ok || subtle.ConstantTimeCompare([]byte(rec.SHA256), []byte(key)) != 1 {
		return Identity{}, ErrInvalidToken
	}
	if !rec.Expires.IsZero() && !s.now().Before(rec.Expires) {
		return Identity{}, fmt.Errorf("%w: token %s expired at %s", ErrInvalidToken, rec.ID, rec.Expires.Format(time.RFC3339))
	}
	id := Identity{Name: rec.User, TokenName: rec.Name, Grants: slices.Clone(rec.Grants)}
	for _, g := range rec.Grants {
		if g.Namespace != AllNamespaces && g.Namespace != rec.User && !slices.Contains(id.Orgs, g.Namespace) {
			id.Orgs = append(id.Orgs, g.Namespace)
		}
	}
	return id, nil
}

// current returns the token index, re-reading the file if it changed since
// the last call.
func (s *TokenStore) current() (map[string]*tokenRecord, error) {
	path := filepath.Join(s.dir, tokensFile)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no tokens yet: every token is invalid
	}
	if err != nil {
		return nil, fmt.Errorf("hub: token store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stat != nil && os.SameFile(s.stat, fi) && s.stat.ModTime().Equal(fi.ModTime()) && s.stat.Size() == fi.Size() {
		return s.byHash, nil
	}
	f, fi, err := s.read()
	if err != nil {
		return nil, err
	}
	byHash := make(map[string]*tokenRecord, len(f.Tokens))
	for i := range f.Tokens {
		byHash[f.Tokens[i].SHA256] = &f.Tokens[i]
	}
	s.stat, s.byHash = fi, byHash
	return byHash, nil
}

// read loads and checks the tokens file; a missing file is an empty store.
func (s *TokenStore) read() (*tokenFile, os.FileInfo, error) {
	path := filepath.Join(s.dir, tokensFile)
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &tokenFile{Version: 1}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("hub: token store: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("hub: token store: %w", err)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, nil, fmt.Errorf("hub: token store: %s is writable by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	var f tokenFile
	dec := json.NewDecoder(fh)
	if err := dec.Decode(&f); err != nil {
		return nil, nil, fmt.Errorf("hub: token store: %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, nil, fmt.Errorf("hub: token store: %s: unknown version %d", path, f.Version)
	}
	for _, t := range f.Tokens {
		if !isHex(t.SHA256, 64) {
			return nil, nil, fmt.Errorf("hub: token store: %s: token %q has a malformed hash", path, t.ID)
		}
		for _, g := range t.Grants {
			if err := g.validate(); err != nil {
				return nil, nil, fmt.Errorf("hub: token store: %s: token %q: %w", path, t.ID, err)
			}
		}
	}
	return &f, fi, nil
}

// update applies edit to the tokens file under the store's lock and
// publishes the result atomically.
func (s *TokenStore) update(edit func(*tokenFile) error) error {
	unlock, err := lockDir(s.dir, tokensLock, lockWait)
	if err != nil {
		return fmt.Errorf("hub: token store: %w", err)
	}
	defer unlock()
	f, _, err := s.read()
	if err != nil {
		return err
	}
	if err := edit(f); err != nil {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("hub: token store: %w", err)
	}
	if err := fsutil.WriteFileAtomicPerm(filepath.Join(s.dir, tokensFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("hub: token store: %w", err)
	}
	return nil
}

func (t tokenRecord) info() TokenInfo {
	return TokenInfo{ID: t.ID, Name: t.Name, User: t.User, Grants: slices.Clone(t.Grants), Created: t.Created, Expires: t.Expires}
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// newTokenSecret returns TokenPrefix and 32 random bytes in base62, padded
// to a fixed length.
func newTokenSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("hub: token: %w", err)
	}
	digits := new(big.Int).SetBytes(b[:]).Text(62)
	return TokenPrefix + strings.Repeat("0", tokenSecretLen-len(digits)) + digits, nil
}

// LoadOrCreateKey returns the server key stored at path (64 hex digits, 32
// bytes), creating it with mode 0600 if it does not exist. The key signs
// upload URLs (Options.UploadKey); keeping it in a file makes URLs survive
// a restart of the server. Two processes creating it at once end up with
// the same key: the file is published with a hard link, which fails if
// another process got there first.
func LoadOrCreateKey(path string) ([]byte, error) {
	if key, err := readKey(path); !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("hub: key: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-key-*")
	if err != nil {
		return nil, fmt.Errorf("hub: key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(hex.EncodeToString(key[:]) + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("hub: key %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("hub: key %s: %w", path, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("hub: key %s: %w", path, err)
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("hub: key %s: readable or writable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hub: key %s: %w", path, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("hub: key %s: want at least 64 hex digits", path)
	}
	return key, nil
}
