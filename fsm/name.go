package fsm

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest instance ID or node name: 128 characters, each
// of them one byte (docs/api.md, Limits).
const MaxNameLen = 128

// ValidateName checks an instance ID or node name against the one rule of
// docs/api.md (Limits): 1-128 characters, letters, digits, '.', '_' and
// '-', starting with a letter or digit. The API applies it to the names it
// is given (instance IDs, force-leave, remove-peer), the agent to its own
// node name at start, and the leader to the names gossip announces before
// it makes a member a Raft server: a server whose name broke it could not
// be removed through the API, and its name would carry terminal escapes to
// whoever lists the members.
//
// The error says what is wrong as the rest of a sentence that starts with
// the field's name ("is required"), for the caller to prefix.
func ValidateName(v string) error {
	switch {
	case v == "":
		return errors.New("is required")
	case len(v) > MaxNameLen:
		return fmt.Errorf("longer than %d characters", MaxNameLen)
	case !NameChars(v):
		return errors.New("may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit")
	}
	return nil
}

// NameChars reports whether v is made of a name's characters (see
// ValidateName), its length aside: an ASCII letter or digit, then letters,
// digits, '.', '_' and '-'.
func NameChars(v string) bool {
	if v == "" || !alnum(v[0]) {
		return false
	}
	for i := 1; i < len(v); i++ {
		if c := v[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
