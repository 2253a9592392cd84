package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// ClaimBucket records which answer of a request a replay re-answers, so
// two replays (two dead letters of one request, or two operators) never
// both answer it again.
const ClaimBucket = "switchyard_replays"

// answer is how the pipeline last answered a dead letter's request, as far
// as a replay can see it.
type answer struct {
	// subject is the reply subject; none is known when the request names
	// no id or tenant (nobody was answered).
	subject string
	// core: a reply_to outside llm.replies.>, answered on core NATS, of
	// which no copy is kept.
	core bool
	// stored is the last reply stored on subject (nil: none).
	stored *envelope.Reply
	seq    uint64
	// coreInFlight: a core reply_to whose work envelope's deadline has not
	// passed: its answer may still be on its way.
	coreInFlight bool
	// expired: nothing stored, but the dead letter is older than the
	// replies' retention, so its reply (every dead-lettered request with an
	// id and a tenant gets one) has aged out.
	expired bool
}

// answerOf looks up the reply of e's request (the request as dead-lettered,
// before any patch).
func (e *Entry) answerOf(ctx context.Context, js jetstream.JetStream) (answer, error) {
	var req struct {
		ID      string `json:"id"`
		Tenant  string `json:"tenant"`
		ReplyTo string `json:"reply_to"`
	}
	_ = json.Unmarshal(e.Payload(), &req)
	if req.ID == "" || req.Tenant == "" {
		return answer{}, nil
	}
	a := answer{subject: envelope.DefaultReplySubject(req.Tenant, req.ID)}
	switch pub := natsx.TenantOfRequestSubject(e.Header.Get(natsx.HeaderOrigSubject)); {
	case pub != "" && pub != req.Tenant:
		// A request naming another tenant was answered on its publisher's
		// own subject.
		a.subject = envelope.DefaultReplySubject(pub, req.ID)
	case req.ReplyTo != "" && envelope.ValidReplyTo(req.Tenant, req.ReplyTo) == nil:
		// (An invalid reply_to was answered on the default subject.)
		a.subject = req.ReplyTo
	}
	if !strings.HasPrefix(a.subject, natsx.SubjectRepliesPrefix) {
		var w struct {
			Deadline time.Time `json:"deadline"`
		}
		a.core = true
		a.coreInFlight = json.Unmarshal(e.Data, &w) == nil && time.Now().Before(w.Deadline)
		return a, nil
	}
	s, err := js.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		return a, fmt.Errorf("look up the reply: %w", err)
	}
	m, err := s.GetLastMsgForSubject(ctx, a.subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		retention := s.CachedInfo().Config.MaxAge
		a.expired = retention > 0 && !e.FailedAt.IsZero() && time.Since(e.FailedAt) > retention
		return a, nil
	case err != nil:
		return a, fmt.Errorf("look up the reply: %w", err)
	}
	var r envelope.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return a, fmt.Errorf("stored reply on %s: %w", a.subject, err)
	}
	a.stored, a.seq = &r, m.Sequence
	return a, nil
}

// refusal says why a dead letter whose request was answered is not
// replayed under o, or "" when it may be: a request is answered once, and
// answered a second, final time only when the operator asks (Reanswer) and
// the first answer was an error that may pass now (retryable, or
// corrected by a patch). A request still in flight is never replayed.
func (a answer) refusal(o ReplayOptions) string {
	switch {
	case a.subject == "":
		return "" // no id or tenant: nobody was answered
	case a.stored != nil && a.stored.Status == envelope.StatusOK:
		return "already answered: ok"
	case a.stored != nil:
		code, retryable := envelope.CodeInternal, false
		if a.stored.Error != nil {
			code, retryable = a.stored.Error.Code, a.stored.Error.Retryable
		}
		switch {
		case retryable && !o.Reanswer:
			return "already answered: " + code + " (retryable); -reanswer sends the client a second, final reply"
		case !retryable && (!o.Reanswer || len(o.Patch) == 0):
			return "already answered: " + code + " (final); only a corrected request (-patch) may be re-answered, with -reanswer"
		}
		return ""
	case a.coreInFlight:
		return "not answered yet: the request is still in flight (its reply goes to " + a.subject + ", which keeps no copy); replay it after its deadline"
	case a.core && !o.Reanswer:
		return "already answered on " + a.subject + " (core NATS keeps no copy); -reanswer sends a second, final reply"
	case a.expired && !o.Reanswer:
		return "already answered (the reply has aged out of " + natsx.StreamReplies + "); -reanswer sends a second, final reply"
	case !a.core && !a.expired:
		return "not answered yet: the request is still in flight; replay it once it is answered"
	}
	return ""
}

// claimKey names the answer a re-answer replaces: the stored reply's
// sequence, or what stands for the unseen one.
func (a answer) claimKey(e *Entry) string {
	var req struct {
		ID     string `json:"id"`
		Tenant string `json:"tenant"`
	}
	_ = json.Unmarshal(e.Payload(), &req)
	sum := sha256.Sum256([]byte(req.Tenant + "\x00" + req.ID))
	which := "expired"
	switch {
	case a.stored != nil:
		which = strconv.FormatUint(a.seq, 10)
	case a.core:
		which = "core"
	}
	return hex.EncodeToString(sum[:16]) + "." + which
}

// claim takes the right to re-answer a's request once: a compare-and-create
// in ClaimBucket. release gives it back when the replay was not published.
func (a answer) claim(ctx context.Context, js jetstream.JetStream, e *Entry) (release func(), refusal string, err error) {
	noop := func() {}
	if a.subject == "" {
		return noop, "", nil
	}
	// As many replicas as the dead letters have (a cluster's setting).
	replicas := 1
	if s, err := js.Stream(ctx, natsx.StreamDLQ); err == nil {
		replicas = max(s.CachedInfo().Config.Replicas, 1)
	}
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      ClaimBucket,
		Description: "dead-letter replays: which answer of a request was re-answered",
		TTL:         7 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return noop, "", fmt.Errorf("replay claims: %w", err)
	}
	key := a.claimKey(e)
	if _, err := kv.Create(ctx, key, []byte(strconv.FormatUint(e.Seq, 10))); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			got, gerr := kv.Get(ctx, key)
			switch {
			case gerr != nil:
				return noop, "already replayed: another dead letter re-answers this request", nil
			case string(got.Value()) == strconv.FormatUint(e.Seq, 10):
				// This dead letter's own earlier replay (published, not
				// yet deleted): publishing again is deduplicated.
				return noop, "", nil
			}
			return noop, "already replayed: dead letter " + string(got.Value()) + " re-answers this request", nil
		}
		return noop, "", fmt.Errorf("replay claims: %w", err)
	}
	return func() { _ = kv.Delete(context.WithoutCancel(ctx), key) }, "", nil
}
