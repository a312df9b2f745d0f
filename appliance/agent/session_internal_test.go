package agent

import (
	"testing"
	"time"
)

func TestSessionsBoundedAndExpiring(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := newSessionStore()
	s.now = func() time.Time { return now }
	var ids []string
	for i := range 3 * maxSessions {
		id, _, err := s.create()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		now = now.Add(time.Second) // each expires after the one before
		if n := s.len(); n > maxSessions {
			t.Fatalf("after %d logins the store holds %d sessions, want at most %d", i+1, n, maxSessions)
		}
	}
	// The newest are kept, the oldest were ended.
	if s.lookup(ids[0]) != nil {
		t.Error("the first session survived 3×maxSessions logins")
	}
	last := ids[len(ids)-1]
	if s.lookup(last) == nil {
		t.Fatal("the newest session is gone")
	}
	if s.lookup(last[:len(last)-1]) != nil || s.lookup("") != nil {
		t.Error("a prefix of a session id, or an empty one, found a session")
	}
	// Expiry: a session is gone once its lifetime passed.
	now = now.Add(sessionLifetime)
	if s.lookup(last) != nil {
		t.Error("a session outlived its lifetime")
	}
	if _, _, err := s.create(); err != nil {
		t.Fatal(err)
	}
	if n := s.len(); n != 1 {
		t.Errorf("after expiry and one login the store holds %d sessions, want 1", n)
	}
}

func TestSessionCSRF(t *testing.T) {
	s := newSessionStore()
	_, sess, err := s.create()
	if err != nil {
		t.Fatal(err)
	}
	if !sess.checkCSRF(sess.csrf) || sess.checkCSRF("") || sess.checkCSRF(sess.csrf[1:]) || sess.checkCSRF(sess.csrf+"0") {
		t.Error("checkCSRF accepts something but the session's token, or refuses it")
	}
}
