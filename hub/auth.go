package hub

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Role is a level of access to a namespace. Roles are ordered: write
// includes read.
type Role int

const (
	// RoleNone grants nothing.
	RoleNone Role = iota
	// RoleRead allows listing and downloading repositories.
	RoleRead
	// RoleWrite allows everything the write API does: creating and
	// deleting repositories, uploading, committing, branches and tags.
	RoleWrite
)

// AllNamespaces is the namespace of a grant that applies to every
// namespace (an administrator's token).
const AllNamespaces = "*"

func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses "read" or "write".
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	}
	return RoleNone, fmt.Errorf("hub: unknown role %q (want read or write)", s)
}

// MarshalText encodes a role as "read" or "write".
func (r Role) MarshalText() ([]byte, error) {
	if r != RoleRead && r != RoleWrite {
		return nil, fmt.Errorf("hub: cannot encode role %d", int(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText decodes "read" or "write".
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Grant gives a role on a namespace (the part of a repo id before "/"), or
// on every namespace when Namespace is AllNamespaces.
type Grant struct {
	Namespace string `json:"namespace"`
	Role      Role   `json:"role"`
}

// ParseGrant parses "NAMESPACE:ROLE", e.g. "acme:write" or "*:read".
func ParseGrant(s string) (Grant, error) {
	ns, role, ok := strings.Cut(s, ":")
	if !ok {
		return Grant{}, fmt.Errorf("hub: grant %q: want NAMESPACE:read or NAMESPACE:write", s)
	}
	r, err := ParseRole(role)
	if err != nil {
		return Grant{}, fmt.Errorf("hub: grant %q: %w", s, err)
	}
	g := Grant{Namespace: ns, Role: r}
	return g, g.validate()
}

func (g Grant) validate() error {
	if g.Namespace != AllNamespaces && !validRepoPart(g.Namespace) {
		return fmt.Errorf("hub: grant: invalid namespace %q", g.Namespace)
	}
	if g.Role != RoleRead && g.Role != RoleWrite {
		return fmt.Errorf("hub: grant for %q: invalid role %d", g.Namespace, int(g.Role))
	}
	return nil
}

func (g Grant) String() string { return g.Namespace + ":" + g.Role.String() }

// Can reports whether the identity's grants allow role need on namespace ns.
func (id Identity) Can(ns string, need Role) bool {
	for _, g := range id.Grants {
		if (g.Namespace == AllNamespaces || g.Namespace == ns) && g.Role >= need {
			return true
		}
	}
	return false
}

// role is what whoami reports as the token's role.
func (id Identity) role() string {
	if id.TokenRole != "" {
		return id.TokenRole
	}
	for _, g := range id.Grants {
		if g.Role == RoleWrite {
			return "write"
		}
	}
	return "read"
}

// Authenticator maps bearer tokens to identities. TokenStore is the file
// backed implementation.
type Authenticator interface {
	// Authenticate returns the identity a token stands for. Unknown,
	// revoked and expired tokens are ErrInvalidToken (wrapped or not);
	// any other error is an internal failure (500). Safe for concurrent
	// use; called on every request that carries a token, so it must be
	// cheap.
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// ErrInvalidToken is returned by an Authenticator for a token it does not
// accept.
var ErrInvalidToken = errors.New("hub: invalid token")

// maxTokenLen bounds what parseAuthorization accepts; heft's tokens are 48
// bytes.
const maxTokenLen = 1024

// errMalformedAuth is returned by parseAuthorization for a header it cannot
// read.
var errMalformedAuth = errors.New("malformed Authorization header")

// parseAuthorization extracts the token from an Authorization header:
// "Bearer <token>" (what huggingface_hub and @huggingface/hub send, §1.5)
// or "Basic base64(user:token)" (what git and git-lfs send, with the token
// as password, or as user name when the password is empty). The scheme is
// case-insensitive; the token must be 1 to 1024 visible ASCII characters.
// It returns "" and no error for an empty header.
func parseAuthorization(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return "", errMalformedAuth
	}
	rest = strings.TrimLeft(rest, " ")
	var tok string
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		tok = rest
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", errMalformedAuth
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "", errMalformedAuth
		}
		tok = pass
		if tok == "" {
			tok = user
		}
	default:
		return "", errMalformedAuth
	}
	if tok == "" || len(tok) > maxTokenLen {
		return "", errMalformedAuth
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= 0x20 || c >= 0x7f {
			return "", errMalformedAuth
		}
	}
	return tok, nil
}

// authenticate attaches the identity of the request's token, if the server
// checks tokens and the request has one, and answers 401 for a token it
// does not accept (also on routes that anonymous requests may use, as the
// Hub does). An identity an Auth middleware attached is kept. It returns
// false when it answered the request.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if id, ok := IdentityFrom(r.Context()); ok {
		note(r, slog.String("user", id.Name))
		return r, true
	}
	if h.tokens == nil {
		return r, true
	}
	tok, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		h.metrics.authFails.WithLabelValues("malformed").Inc()
		writeError(w, http.StatusUnauthorized, "", msgInvalidCredentials, "Invalid credentials in Authorization header: "+err.Error())
		return r, false
	}
	if tok == "" {
		return r, true
	}
	id, err := h.tokens.Authenticate(r.Context(), tok)
	switch {
	case errors.Is(err, ErrInvalidToken):
		h.metrics.authFails.WithLabelValues("invalid_token").Inc()
		writeError(w, http.StatusUnauthorized, "", msgInvalidCredentials, "")
		return r, false
	case err != nil:
		noteError(r, fmt.Errorf("authenticate: %w", err))
		writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
		return r, false
	}
	note(r, slog.String("user", id.Name))
	return r.WithContext(WithIdentity(r.Context(), id)), true
}

// may reports whether the request may act with role need on namespace ns:
// its identity's grants allow it, or it is a read and anonymous reads are
// on.
func (h *Handler) may(r *http.Request, ns string, need Role) bool {
	if id, ok := IdentityFrom(r.Context()); ok && id.Can(ns, need) {
		return true
	}
	return need == RoleRead && h.anonymousRead
}

// authorizeRepo checks that the request may act with role need on repo and
// answers it if not, without revealing whether the repo exists:
//   - no identity: 401 RepoNotFound (the Hub's answer to anonymous
//     requests for private repos; Python adds an authentication hint);
//   - an identity that cannot read the namespace: 404 RepoNotFound;
//   - one that can read but needs write: 403.
func (h *Handler) authorizeRepo(w http.ResponseWriter, r *http.Request, repo string, need Role) bool {
	ns, _, _ := strings.Cut(repo, "/")
	if h.may(r, ns, need) {
		return true
	}
	id, ok := IdentityFrom(r.Context())
	switch {
	case !ok:
		h.metrics.authFails.WithLabelValues("anonymous").Inc()
		writeError(w, http.StatusUnauthorized, codeRepoNotFound, msgRepoNotFound,
			"Repository not found: "+repo+". Authentication required: send Authorization: Bearer <token>")
	case !h.may(r, ns, RoleRead):
		h.metrics.authFails.WithLabelValues("no_read").Inc()
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "Repository not found: "+repo)
	default:
		h.metrics.authFails.WithLabelValues("no_write").Inc()
		writeError(w, http.StatusForbidden, "", msgForbidden,
			fmt.Sprintf("Forbidden: token %q of %s has no write access to namespace %q", id.TokenName, id.Name, ns))
	}
	return false
}

// authorizeNamespace checks that the request may write to namespace ns (to
// create a repository there): 401 without an identity, 403 without the
// grant.
func (h *Handler) authorizeNamespace(w http.ResponseWriter, r *http.Request, ns string) bool {
	if h.may(r, ns, RoleWrite) {
		return true
	}
	id, ok := IdentityFrom(r.Context())
	if !ok {
		h.metrics.authFails.WithLabelValues("anonymous").Inc()
		writeError(w, http.StatusUnauthorized, "", msgAuthRequired, "Authentication required: send Authorization: Bearer <token>")
		return false
	}
	h.metrics.authFails.WithLabelValues("no_write").Inc()
	writeError(w, http.StatusForbidden, "", msgForbidden,
		fmt.Sprintf("Forbidden: token %q of %s has no write access to namespace %q", id.TokenName, id.Name, ns))
	return false
}
