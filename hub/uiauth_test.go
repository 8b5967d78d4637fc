package hub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// noRedirect is an HTTP client that shows redirects instead of following
// them, with a cookie jar.
func noRedirect(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func httpGet(t testing.TB, c *http.Client, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestUITokenVerifiesOnlyWithItsKeyAndLifetime(t *testing.T) {
	key, _ := uiKey([]byte("ca key one"))
	other, _ := uiKey([]byte("ca key two"))
	now := time.Now()
	tok, err := signUIToken(key, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if exp, err := verifyUIToken(key, tok, now); err != nil || exp.UnixMilli() != now.Add(time.Hour).UnixMilli() {
		t.Fatalf("valid token: exp %v, err %v", exp, err)
	}
	if _, err := verifyUIToken(other, tok, now); !errors.Is(err, ErrUITokenSignature) {
		t.Errorf("another hub's key: %v, want ErrUITokenSignature", err)
	}
	// Flip one bit of the signed expiry: a forged lifetime.
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, uiTokenPrefix))
	raw[7] ^= 1
	forged := uiTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	if _, err := verifyUIToken(key, forged, now); !errors.Is(err, ErrUITokenSignature) {
		t.Errorf("forged expiry: %v, want ErrUITokenSignature", err)
	}
	if _, err := verifyUIToken(key, tok, now.Add(time.Hour)); !errors.Is(err, ErrUITokenExpired) {
		t.Errorf("at expiry: %v, want ErrUITokenExpired", err)
	}
	long, _ := signUIToken(key, now.Add(MaxUILoginTTL+time.Hour))
	if _, err := verifyUIToken(key, long, now); !errors.Is(err, ErrUITokenMalformed) {
		t.Errorf("lifetime above MaxUILoginTTL: %v, want ErrUITokenMalformed", err)
	}
	for _, bad := range []string{"", "v1.", "v2." + strings.TrimPrefix(tok, uiTokenPrefix), tok[:len(tok)-4], "v1.!!!!"} {
		if _, err := verifyUIToken(key, bad, now); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
}

func TestUIRefusesRequestsWithoutALogin(t *testing.T) {
	h := newTestHub(t, 1)
	base := "http://" + h.Server(0).HTTPAddr()
	c := noRedirect(t)
	resp, body := httpGet(t, c, base+"/ui/api/topology")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API without a cookie: %d, want 401", resp.StatusCode)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Errorf("API 401 body %q: want JSON {\"error\": ...} (%v)", body, err)
	}
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/api/events"} {
		resp, body := httpGet(t, c, base+p)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a cookie: %d, want 401", p, resp.StatusCode)
		}
		if p == "/ui/" && !strings.Contains(string(body), "meshfed ui login") {
			t.Errorf("the 401 page does not say how to log in: %s", body)
		}
	}
	// Read-only: no method but GET reaches the UI.
	req, _ := http.NewRequest(http.MethodPost, base+"/ui/api/topology", nil)
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/api/topology: %d, want 405", r.StatusCode)
	}
}

func TestUIRefusesForgedAndExpiredTokens(t *testing.T) {
	h := newTestHub(t, 1)
	s := h.Server(0)
	base := "http://" + s.HTTPAddr()
	key, err := s.uiTokenKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := uiKey([]byte("not this hub's CA key"))
	forged, _ := signUIToken(otherKey, time.Now().Add(time.Hour))
	expired, _ := signUIToken(key, time.Now().Add(-time.Second))
	for name, tok := range map[string]string{"forged": forged, "expired": expired} {
		c := noRedirect(t)
		resp, _ := httpGet(t, c, base+"/ui/login?token="+url.QueryEscape(tok))
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Errorf("login with a %s token: %d, cookies %v; want 401 and none", name, resp.StatusCode, resp.Cookies())
		}
		// Nor does it pass as a cookie made by hand.
		req, _ := http.NewRequest(http.MethodGet, base+"/ui/api/hub", nil)
		req.AddCookie(&http.Cookie{Name: UISessionCookie, Value: tok})
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Body.Close()
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("API with a %s token as cookie: %d, want 401", name, r.StatusCode)
		}
	}
}

func TestUILoginFromOneServerWorksOnAnother(t *testing.T) {
	h := newTestHub(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login, err := h.Admin(0).CreateUILogin(ctx, &fedv1.CreateUILoginRequest{TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(login.GetUrl())
	if err != nil {
		t.Fatal(err)
	}
	if u.Host != h.Server(0).HTTPAddr() || u.Path != "/ui/login" || u.Query().Get("token") != login.GetToken() {
		t.Fatalf("login URL %s: want http://%s/ui/login?token=<token>", login.GetUrl(), h.Server(0).HTTPAddr())
	}
	if d := time.Until(time.UnixMilli(login.GetExpiresAtMs())); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("expires in %v, want 10m", d)
	}
	// The same token on server 1.
	other := "http://" + h.Server(1).HTTPAddr()
	c := noRedirect(t)
	resp, _ := httpGet(t, c, other+"/ui/login?"+u.RawQuery)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login on another server: %d to %q, want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == UISessionCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/ui/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/", cookie)
	}
	if d := time.Until(cookie.Expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("cookie expires in %v, want the token's 10m", d)
	}
	resp, body := httpGet(t, c, other+"/ui/api/hub")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API with the session: %d %s", resp.StatusCode, body)
	}
	var v uiHubView
	if err := json.Unmarshal(body, &v); err != nil || len(v.Servers) != 3 {
		t.Fatalf("hub view %s: want 3 servers (%v)", body, err)
	}
	if resp, _ := httpGet(t, c, other+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Errorf("page with the session: %d", resp.StatusCode)
	}
}

func TestUILoginLifetimeIsBounded(t *testing.T) {
	h := newTestHub(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := h.Admin()
	def, err := admin.CreateUILogin(ctx, &fedv1.CreateUILoginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(time.UnixMilli(def.GetExpiresAtMs())); d < DefaultUILoginTTL-time.Minute || d > DefaultUILoginTTL {
		t.Errorf("default lifetime %v, want %v", d, DefaultUILoginTTL)
	}
	for _, ttl := range []int64{-1, int64((MaxUILoginTTL + time.Second) / time.Second)} {
		_, err := admin.CreateUILogin(ctx, &fedv1.CreateUILoginRequest{TtlSeconds: ttl})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "ttl_seconds") {
			t.Errorf("ttl %d: %v, want InvalidArgument naming ttl_seconds", ttl, err)
		}
	}
}

func TestUIAnonymousNeedsNoLoginAndWarns(t *testing.T) {
	h := newTestHub(t, 1, func(c *Config) { c.UIAnonymous = true })
	resp, body := httpGet(t, noRedirect(t), "http://"+h.Server(0).HTTPAddr()+"/ui/api/services")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous API: %d %s", resp.StatusCode, body)
	}
	if len(h.Logged(uiAnonymousWarning)) == 0 {
		t.Error("no warning logged for --ui-anonymous")
	}
}
