package agent

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"
)

// Bounds of the web page's login sessions. Only a holder of the token can
// create one, so the bounds are about mistakes and forgotten tabs, not
// attacks: every session is a few hundred bytes of PID 1's heap.
const (
	// maxSessions bounds the sessions held at once; a login beyond it
	// ends the session that would expire first.
	maxSessions = 16
	// sessionLifetime is how long a session lasts after the login (the
	// cookie's Max-Age too); then the page asks for the token again.
	sessionLifetime = 12 * time.Hour
	// sessionSecretBytes is the size of a session id and of a CSRF
	// token: 256 bits from crypto/rand.
	sessionSecretBytes = 32
)

// session is one logged-in browser.
type session struct {
	// csrf must come back in the csrfHeader of every state-changing
	// request of the session.
	csrf    string
	expires time.Time
}

// sessionStore holds the login sessions of the web page. A session id is
// kept only as its SHA-256, so looking one up by the cookie's value does
// not compare secrets in variable time, and the map's keys reveal nothing.
type sessionStore struct {
	max      int
	lifetime time.Duration
	now      func() time.Time

	mu   sync.Mutex
	byID map[[sha256.Size]byte]*session
}

func newSessionStore() *sessionStore {
	return &sessionStore{max: maxSessions, lifetime: sessionLifetime, now: time.Now, byID: map[[sha256.Size]byte]*session{}}
}

// randomSecret returns sessionSecretBytes random bytes as hex.
func randomSecret() (string, error) {
	b := make([]byte, sessionSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// create starts a session and returns its id (the cookie's value) and
// the session. When the store is full, the session that expires first
// (and every expired one) is ended.
func (s *sessionStore) create() (string, *session, error) {
	id, err := randomSecret()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomSecret()
	if err != nil {
		return "", nil, err
	}
	now := s.now()
	sess := &session{csrf: csrf, expires: now.Add(s.lifetime)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropExpired(now)
	for len(s.byID) >= s.max {
		var oldest [sha256.Size]byte
		var first *session
		for k, v := range s.byID {
			if first == nil || v.expires.Before(first.expires) {
				oldest, first = k, v
			}
		}
		delete(s.byID, oldest)
	}
	s.byID[sha256.Sum256([]byte(id))] = sess
	return id, sess, nil
}

// dropExpired ends the sessions past their expiry; s.mu is held.
func (s *sessionStore) dropExpired(now time.Time) {
	for k, v := range s.byID {
		if !now.Before(v.expires) {
			delete(s.byID, k)
		}
	}
}

// lookup returns the live session with this id, or nil.
func (s *sessionStore) lookup(id string) *session {
	if id == "" {
		return nil
	}
	key := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[key]
	if sess == nil {
		return nil
	}
	if !s.now().Before(sess.expires) {
		delete(s.byID, key)
		return nil
	}
	return sess
}

// end ends the session with this id, if there is one.
func (s *sessionStore) end(id string) {
	key := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, key)
}

// len returns the number of sessions held, expired ones included.
func (s *sessionStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// checkCSRF reports whether got is the session's CSRF token, compared in
// constant time.
func (sess *session) checkCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}
