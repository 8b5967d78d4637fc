package hub

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// The web UI's login tokens. `meshfed ui login` (admin credential) calls
// Admin.CreateUILogin, which answers a URL with a token; GET
// /ui/login?token= checks it and sets it as the session cookie. A token is
// its expiry and a random nonce, signed with HMAC-SHA256 under a key every
// server derives from the hub CA private key (replicated state that no
// client holds), so any server of the hub verifies a token another made,
// and nothing is written through Raft. Replacing the hub CA key ends every
// session. A token cannot be revoked before it expires: keep the lifetime
// short.

// UI login lifetimes.
const (
	DefaultUILoginTTL = time.Hour
	MaxUILoginTTL     = 24 * time.Hour
)

// uiAnonymousWarning is logged at start with Config.UIAnonymous.
const uiAnonymousWarning = "UI ANONYMOUS: the web UI at /ui/ on the HTTP port needs no login; anyone who reaches that port sees the federation's topology, services and trust (read-only). Drop --ui-anonymous and use `meshfed ui login`."

// UISessionCookie is the name of the web UI's session cookie.
const UISessionCookie = "meshfed_ui"

// uiTokenSalt separates the UI key derivation from any other use of the
// hub CA key.
const uiTokenSalt = "meshfed/ui-login/v1"

const uiTokenPrefix = "v1."

// Why a UI token is refused. Callers branch on these with errors.Is.
var (
	ErrUITokenMissing   = errors.New("hub: ui: no login token")
	ErrUITokenMalformed = errors.New("hub: ui: malformed login token")
	ErrUITokenSignature = errors.New("hub: ui: login token signature does not verify")
	ErrUITokenExpired   = errors.New("hub: ui: login token expired")
	// ErrUINoKey: the hub has no CA yet, so no server can sign or verify.
	ErrUINoKey = errors.New("hub: ui: no hub CA key yet")
)

// uiKey derives the UI token key from the hub CA key PEM.
func uiKey(caKeyPEM []byte) ([]byte, error) {
	if len(caKeyPEM) == 0 {
		return nil, ErrUINoKey
	}
	return hkdf.Key(sha256.New, caKeyPEM, []byte(uiTokenSalt), "hmac-sha256", 32)
}

// uiTokenBody is expiry (Unix ms, 8 bytes) and nonce (16 bytes).
const uiTokenBody = 8 + 16

// signUIToken makes a token that expires at exp.
func signUIToken(key []byte, exp time.Time) (string, error) {
	body := make([]byte, uiTokenBody, uiTokenBody+sha256.Size)
	binary.BigEndian.PutUint64(body, uint64(exp.UnixMilli()))
	if _, err := rand.Read(body[8:]); err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return uiTokenPrefix + base64.RawURLEncoding.EncodeToString(m.Sum(body)), nil
}

// verifyUIToken checks tok's signature and that it is unexpired at now and
// expires within MaxUILoginTTL of now. It returns the expiry.
func verifyUIToken(key []byte, tok string, now time.Time) (time.Time, error) {
	if tok == "" {
		return time.Time{}, ErrUITokenMissing
	}
	raw, ok := strings.CutPrefix(tok, uiTokenPrefix)
	if !ok || len(raw) > 128 {
		return time.Time{}, ErrUITokenMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil || len(b) != uiTokenBody+sha256.Size {
		return time.Time{}, ErrUITokenMalformed
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[:uiTokenBody])
	if !hmac.Equal(m.Sum(nil), b[uiTokenBody:]) {
		return time.Time{}, ErrUITokenSignature
	}
	exp := time.UnixMilli(int64(binary.BigEndian.Uint64(b)))
	if !now.Before(exp) {
		return time.Time{}, fmt.Errorf("%w at %s", ErrUITokenExpired, exp.UTC().Format(time.RFC3339))
	}
	if exp.Sub(now) > MaxUILoginTTL+time.Minute { // a minute of clock skew between servers
		return time.Time{}, fmt.Errorf("%w: it expires after more than %v", ErrUITokenMalformed, MaxUILoginTTL)
	}
	return exp, nil
}

// uiTokenKey is this server's UI key, from the hub CA key in its state.
func (s *Server) uiTokenKey() ([]byte, error) {
	return uiKey(s.fsm.Store().Read().CA().GetKeyPem())
}

// httpAdvertised is the address the login URL names: this server's HTTP
// port at its advertised address.
func (s *Server) httpAdvertised() string { return s.advertised(s.httpLn.Addr()) }

func (a *adminService) CreateUILogin(_ context.Context, req *fedv1.CreateUILoginRequest) (*fedv1.CreateUILoginResponse, error) {
	ttl := DefaultUILoginTTL
	if req.GetTtlSeconds() != 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	if ttl <= 0 || ttl > MaxUILoginTTL {
		return nil, invalidArg("ttl_seconds", "%d must be in 1..%d", req.GetTtlSeconds(), int64(MaxUILoginTTL/time.Second))
	}
	key, err := a.s.uiTokenKey()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v; retry", err)
	}
	exp := time.Now().Add(ttl)
	tok, err := signUIToken(key, exp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "ui token: %v", err)
	}
	u := url.URL{Scheme: "http", Host: a.s.httpAdvertised(), Path: "/ui/login", RawQuery: url.Values{"token": {tok}}.Encode()}
	return &fedv1.CreateUILoginResponse{Url: u.String(), Token: tok, ExpiresAtMs: exp.UnixMilli()}, nil
}

// uiAuthenticated reports why r may not see the UI, or nil. Without auth
// (--ui-anonymous) everything passes.
func (s *Server) uiAuthenticated(r *http.Request) error {
	if s.cfg.UIAnonymous {
		return nil
	}
	c, err := r.Cookie(UISessionCookie)
	if err != nil {
		return ErrUITokenMissing
	}
	key, err := s.uiTokenKey()
	if err != nil {
		return err
	}
	_, err = verifyUIToken(key, c.Value, time.Now())
	return err
}

// uiLogin serves GET /ui/login?token=: a valid token becomes the session
// cookie (HttpOnly, SameSite=Strict, for the token's lifetime) and the
// browser goes on to /ui/.
func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	key, err := s.uiTokenKey()
	if err != nil {
		uiRefusePage(w, http.StatusServiceUnavailable, err)
		return
	}
	exp, err := verifyUIToken(key, tok, time.Now())
	if err != nil {
		uiRefusePage(w, http.StatusUnauthorized, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: UISessionCookie, Value: tok, Path: "/ui/", Expires: exp, MaxAge: int(time.Until(exp) / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// uiRequireAuth wraps the UI's handlers: an unauthenticated request to
// the API gets 401 with a JSON error, to a page 401 with how to log in.
func (s *Server) uiRequireAuth(api bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := s.uiAuthenticated(r)
		if err == nil {
			h.ServeHTTP(w, r)
			return
		}
		code := http.StatusUnauthorized
		if errors.Is(err, ErrUINoKey) {
			code = http.StatusServiceUnavailable
		}
		if api {
			uiWriteError(w, code, err)
			return
		}
		uiRefusePage(w, code, err)
	})
}

// uiRefusePage answers a browser that may not see the UI, saying how to
// log in.
func uiRefusePage(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshfed: log in</title></head>
<body><main><h1>Log in to the meshfed hub</h1>
<p>%s.</p>
<p>Run <code>meshfed ui login</code> with the admin credential and open the URL it prints.</p>
</main></body></html>
`, htmlEscape(err.Error()))
}

var htmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;")

func htmlEscape(s string) string { return htmlEscaper.Replace(s) }
