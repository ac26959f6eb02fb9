package hub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Upload URLs. The LFS flow sends the content PUTs, part PUTs and the
// multipart completion POST without an Authorization header (§4.4: Python
// sends none, JS only X-Request-Id), so the URLs the batch endpoint hands
// out carry their own authorization: an expiry and an HMAC-SHA256, keyed
// with the server's upload key, over the method, the path (which names the
// action, the repo, the oid, the size, and for parts the chunk size and
// part number), the oid, the size, the expiry and the user the URL was
// issued to. Changing any of them, or the method, invalidates the URL.
//
// Paths live under uploadPrefix, which cannot be a repo namespace (those
// never start with "."), so they never collide with repo routes:
//
//	PUT  /.heft-lfs/object/{ns}/{name}/{oid}/{size}               basic upload
//	PUT  /.heft-lfs/part/{ns}/{name}/{oid}/{size}/{chunk}/{n}     multipart part n (1-based)
//	POST /.heft-lfs/complete/{ns}/{name}/{oid}/{size}/{chunk}     multipart completion
//	POST /.heft-lfs/verify/{ns}/{name}/{oid}/{size}               verify action
const uploadPrefix = ".heft-lfs"

// signatureVersion starts the signed message, so that a later format can
// never be confused with this one.
const signatureVersion = "heft-upload-v1"

var (
	errURLExpired      = errors.New("upload URL expired; request a new one from the LFS batch endpoint")
	errURLBadSignature = errors.New("upload URL signature is invalid (tampered or issued by another server key)")
)

type uploadSigner struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// mac is the signature of one URL.
func (s *uploadSigner) mac(method, escapedPath, oid string, size, exp int64, user string) []byte {
	m := hmac.New(sha256.New, s.key)
	for _, part := range []string{signatureVersion, method, escapedPath, oid, strconv.FormatInt(size, 10), strconv.FormatInt(exp, 10), user} {
		m.Write([]byte(part))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

// sign returns base + escapedPath with the query that authorizes method on
// it for the signer's lifetime.
func (s *uploadSigner) sign(base, method, escapedPath, oid string, size int64, user string) string {
	exp := s.now().Add(s.ttl).Unix()
	q := url.Values{}
	if user != "" {
		q.Set("u", user)
	}
	q.Set("exp", strconv.FormatInt(exp, 10))
	q.Set("sig", base64.RawURLEncoding.EncodeToString(s.mac(method, escapedPath, oid, size, exp, user)))
	return base + escapedPath + "?" + q.Encode()
}

// verify checks the request's signature for oid and size, which the caller
// parsed from the request's own path. It returns the user the URL was
// issued to.
func (s *uploadSigner) verify(r *http.Request, oid string, size int64) (string, error) {
	q := r.URL.Query()
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	if err != nil {
		return "", errURLBadSignature
	}
	sig, err := base64.RawURLEncoding.DecodeString(q.Get("sig"))
	if err != nil {
		return "", errURLBadSignature
	}
	user := q.Get("u")
	want := s.mac(r.Method, r.URL.EscapedPath(), oid, size, exp, user)
	if !hmac.Equal(sig, want) {
		return "", errURLBadSignature
	}
	// Checked after the signature, so that a forged expiry reads as
	// tampering, not as an expired URL.
	if !s.now().Before(time.Unix(exp, 0)) {
		return "", errURLExpired
	}
	return user, nil
}
