package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestExplainDoubtFromAnEarlierTry: a send refused whole (this request
// stored nothing, as its refusal may say) that is in doubt because an
// earlier try of the same messages was (huddle send's split halves, a
// client.Group's remembered IDs) says the doubt is the earlier try's and
// the refusal this one's. It printed "outcome unknown (it may have been
// stored): ...; nothing was stored: ...", the refusal's words contradicting
// the doubt (until session 19). A refusal that is itself in doubt (an
// unavailable without unchanged: a write not made durable) still says so
// plainly.
func TestExplainDoubtFromAnEarlierTry(t *testing.T) {
	full := &wire.Error{Code: wire.CodeUnavailable, Unchanged: true, Message: "send to lobby: the group's log cannot store messages now; nothing was stored: try again later"}
	for _, err := range []error{
		fmt.Errorf("%w (line 2 was in a send whose outcome is unknown): %w", client.ErrInDoubt, full),
		fmt.Errorf("send group lobby: %w: %w", client.ErrInDoubt, &wire.Error{Code: wire.CodeNotMember, Message: "send group lobby: not a member"}),
	} {
		msg, code := explain(err)
		if code != ExitUnreachable {
			t.Errorf("explain(%v) exit code = %d, want %d", err, code, ExitUnreachable)
		}
		if !strings.HasPrefix(msg, "outcome unknown (an earlier try of it may have been stored") || !strings.Contains(msg, "this send was refused and stored nothing itself: ") {
			t.Errorf("explain(%v) = %q: want the doubt an earlier try's, the refusal this send's", err, msg)
		}
	}
	own := fmt.Errorf("%w: %w", client.ErrInDoubt, &wire.Error{Code: wire.CodeUnavailable, Message: "fsync failed"})
	if msg, _ := explain(own); !strings.HasPrefix(msg, "outcome unknown (it may have been stored): ") {
		t.Errorf("explain(%v) = %q: a refusal in doubt itself should say it may have been stored", own, msg)
	}
}
