// Package natsx declares Switchyard's JetStream topology (streams, subjects,
// consumer defaults) and the small helpers every stage uses to publish with
// deduplication ids and headers.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Public and internal subjects. See docs/subjects.md.
const (
	SubjectRequests = "llm.requests"
	// SubjectTenantRequestsPrefix + <tenant> is where a tenant's
	// `llm.requests` lands under authentication: its account's import binds
	// the subject, so the intake knows the publisher (docs/security.md).
	SubjectTenantRequestsPrefix = "llm.requests.tenant."
	SubjectClassified           = "llm.classified"
	SubjectExecPrefix           = "llm.exec."
	SubjectResults              = "llm.results"
	SubjectEscalations          = "llm.escalations"
	// SubjectVerdicts carries every judged attempt (gate) and every target
	// not called (executor) back to the router, which alone decides what
	// follows.
	SubjectVerdicts = "llm.verdicts"
	// SubjectGateJudge is the gate's direct door (core NATS request-reply,
	// queue group QueueGate): an executor asks a gate to judge its result
	// and store the verdict on llm.verdicts, and hands the result to
	// llm.results instead when no gate answers. No stream holds it.
	SubjectGateJudge = "llm.gate.judge"
	// QueueGate is the gate replicas' queue group on SubjectGateJudge.
	QueueGate = "gate"
	// SubjectRouterRoute is the router's direct door for classified work
	// (the intake's hand-off; llm.classified when no router answers),
	// queue group QueueRouter. No stream holds it.
	SubjectRouterRoute = "llm.router.route"
	// SubjectRouterVerdict is the router's direct door for verdicts (the
	// gate's hand-off; llm.verdicts when no router answers), queue group
	// QueueRouter. No stream holds it.
	SubjectRouterVerdict = "llm.router.verdict"
	// QueueRouter is the router replicas' queue group on its doors.
	QueueRouter = "router"
	// SubjectReplies is where clients read replies. Nobody publishes there:
	// the pipeline publishes a reply to SubjectReplyStore, and LLM_REPLIES
	// stores it under llm.replies.<tenant>.<id> and only then delivers it
	// there (RePublish). So a client never sees a reply the stream does not
	// hold: a stage that finds no stored reply (an executor deciding whether
	// to call a vendor again) is not contradicted by an answer already out,
	// and a retried publish the stream drops as a duplicate is not seen
	// twice.
	SubjectReplies       = "llm.replies.>"
	SubjectRepliesPrefix = "llm.replies."
	// SubjectReplyStore (+ <tenant>.<id>) is where the pipeline publishes
	// a reply for LLM_REPLIES to store and deliver.
	SubjectReplyStore       = "llm.store.replies.>"
	SubjectReplyStorePrefix = "llm.store.replies."
	SubjectTelemetry        = "llm.telemetry.>"
	SubjectAttempt          = "llm.telemetry.attempt"
	SubjectRequest          = "llm.telemetry.request"
	// SubjectRequestBatch carries the request events of several requests
	// as one JSON array: what a router's pipeline.GroupCommit stores.
	SubjectRequestBatch = "llm.telemetry.requests"
	// SubjectObservedAttempts carries, on core NATS only (outside every
	// stream, so it costs no stream write), batches of the attempts each
	// router replica learned from the verdicts it handled, so the others'
	// latency-aware strategies learn them too. The ledger's rows come
	// with the request event instead.
	SubjectObservedAttempts = "llm.observed.attempts"
	SubjectDLQPrefix        = "llm.dlq."
	SubjectAlerts           = "llm.alerts.>"
	// SubjectAnchorPrefix + <stream> holds a work-queue stream's anchor:
	// one message no consumer reads, kept near the stream's end so the
	// stream never drains to empty (see KeepAnchor).
	SubjectAnchorPrefix = "llm.anchor."
)

// Stream names.
const (
	StreamRequests  = "LLM_REQUESTS"
	StreamPipeline  = "LLM_PIPELINE"
	StreamReplies   = "LLM_REPLIES"
	StreamTelemetry = "LLM_TELEMETRY"
	StreamDLQ       = "LLM_DLQ"
	StreamAlerts    = "LLM_ALERTS"
)

// Stages that may dead-letter.
const (
	StageIntake   = "intake"
	StageRouter   = "router"
	StageExecutor = "executor"
	StageGate     = "gate"
	StageLedger   = "ledger"
)

// Headers Switchyard sets.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderStage       = "Switchyard-Stage"
	HeaderReason      = "Switchyard-Reason"
	HeaderError       = "Switchyard-Error"
	HeaderOrigSubject = "Switchyard-Original-Subject"
	HeaderRequestID   = "Switchyard-Request-Id"
	HeaderTenant      = "Switchyard-Tenant"
	HeaderFailedAt    = "Switchyard-Failed-At"
	HeaderDeliveries  = "Switchyard-Deliveries"
	HeaderTraceParent = "traceparent"
	// HeaderDedupeKey carries the delivery key from intake onwards: the
	// request id, or a replay-specific key, so a replayed request's messages
	// are not dropped as duplicates of the first run.
	HeaderDedupeKey = "Switchyard-Dedupe-Key"
	// HeaderDirectError is set on a stage's answer to a direct hand-off
	// (SubjectGateJudge, SubjectRouterRoute) it did not handle (why): the
	// writer then publishes to the stream.
	HeaderDirectError = "Switchyard-Direct-Error"
	// HeaderTriedDirect marks a message published to a stream after a
	// direct hand-off of it was not confirmed (or by a rerun): its reader
	// may have handled it already, so it handles it as a rerun.
	HeaderTriedDirect = "Switchyard-Tried-Direct"
)

// RequestsDedupeWindow is LLM_REQUESTS's own dedupe window: the server's
// minimum (see the stream's comment).
const RequestsDedupeWindow = 100 * time.Millisecond

// AnchorSubject is where KeepAnchor keeps stream's anchor.
func AnchorSubject(stream string) string { return SubjectAnchorPrefix + stream }

// IsRequestSubject says whether subject is llm.requests or a tenant's
// bound request subject.
func IsRequestSubject(subject string) bool {
	return subject == SubjectRequests || strings.HasPrefix(subject, SubjectTenantRequestsPrefix)
}

// TenantOfRequestSubject is the publisher tenant bound in a request
// subject ("" for plain llm.requests).
func TenantOfRequestSubject(subject string) string {
	tenant, _ := strings.CutPrefix(subject, SubjectTenantRequestsPrefix)
	if tenant == subject {
		return ""
	}
	return tenant
}

// ExecSubject is the queue subject of one vendor's executors.
func ExecSubject(vendor string) string { return SubjectExecPrefix + vendor }

// ReplyPublishSubject is where the pipeline publishes a reply addressed to
// reply: the store subject for one in llm.replies.> (stored true), reply
// itself for a custom reply_to outside it, published on core NATS.
func ReplyPublishSubject(reply string) (subject string, stored bool) {
	if rest, ok := strings.CutPrefix(reply, SubjectRepliesPrefix); ok {
		return SubjectReplyStorePrefix + rest, true
	}
	return reply, false
}

// StoredReplySubject is the subject a reply published on published is
// stored and delivered under (published itself when it is not a store
// subject).
func StoredReplySubject(published string) string {
	if rest, ok := strings.CutPrefix(published, SubjectReplyStorePrefix); ok {
		return SubjectRepliesPrefix + rest
	}
	return published
}

// DLQSubject is the dead-letter subject of one stage.
func DLQSubject(stage string) string { return SubjectDLQPrefix + stage }

// TopologyConfig holds the retention settings operators may tune.
type TopologyConfig struct {
	Storage  jetstream.StorageType
	Replicas int
	// DedupeWindow is how long LLM_PIPELINE, LLM_REPLIES and LLM_TELEMETRY
	// remember a message id. A stage re-publishes under the same id when
	// it retries a hand-off in place (under 50 s) or handles a message
	// redelivered after a lost ack (its AckWait, 30 s, later), so the
	// window must outlast that, and it must not be much longer: the server
	// holds every id of the window in memory, about 165 bytes each, seven
	// per request (docs/performance.md, "Sustained load").
	DedupeWindow    time.Duration
	ReplyRetention  time.Duration // ≥ 1h: a reconnecting client can still read its reply
	DLQRetention    time.Duration // ≥ 7 days
	AlertsRetention time.Duration
}

// ValidateAckWait checks a stage's AckWait (named by its variable): at
// least 1 s, and at most half the internal streams' dedupe window. A
// message redelivered after a lost ack is handled again an AckWait later
// and re-publishes its hand-off under the same id, which the stream must
// still drop as a duplicate (a second exec message would call the vendor
// twice).
func ValidateAckWait(name string, wait time.Duration) error {
	window := DefaultTopology().DedupeWindow
	switch {
	case wait < time.Second:
		return fmt.Errorf("%s: must be at least 1s", name)
	case 2*wait > window:
		return fmt.Errorf("%s: %s is more than half the internal streams' dedupe window (%s): a message redelivered after a lost ack would store its hand-off twice", name, wait, window)
	}
	return nil
}

// DefaultTopology is what `switchyard up` and the services use.
func DefaultTopology() TopologyConfig {
	return TopologyConfig{
		Storage:         jetstream.FileStorage,
		Replicas:        1,
		DedupeWindow:    2 * time.Minute,
		ReplyRetention:  time.Hour,
		DLQRetention:    7 * 24 * time.Hour,
		AlertsRetention: 7 * 24 * time.Hour,
	}
}

// Streams returns every stream Switchyard needs.
func (c TopologyConfig) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamRequests,
			Description: "client requests; each is owned by intake until acked",
			Subjects:    []string{SubjectRequests, SubjectTenantRequestsPrefix + "*", AnchorSubject(StreamRequests)},
			Retention:   jetstream.WorkQueuePolicy,
			AllowRollup: true, // the anchor replaces itself (KeepAnchor)
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			// Request ids are unique per tenant, and the server dedupes on
			// Nats-Msg-Id alone: a client that sets it to the bare id would
			// drop another tenant's request. The intake dedupes on tenant+id
			// for DedupeWindow; the stream keeps the server's minimum.
			Duplicates: RequestsDedupeWindow,
		},
		{
			Name:        StreamPipeline,
			Description: "internal stage hand-offs; each subject is owned by one stage",
			Subjects:    []string{SubjectClassified, SubjectExecPrefix + ">", SubjectResults, SubjectEscalations, SubjectVerdicts, AnchorSubject(StreamPipeline)},
			Retention:   jetstream.WorkQueuePolicy,
			AllowRollup: true,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DedupeWindow,
		},
		{
			Name:        StreamReplies,
			Description: "reply envelopes, kept so a reconnecting client can still read its reply",
			Subjects:    []string{SubjectReplyStore},
			// Stored as llm.replies.<tenant>.<id> and delivered there once
			// stored (by the stream's leader), never before.
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: SubjectReplyStore, Destination: SubjectReplies},
			RePublish:        &jetstream.RePublish{Source: SubjectReplies, Destination: SubjectReplies},
			Retention:        jetstream.LimitsPolicy,
			Storage:          c.Storage,
			Replicas:         c.Replicas,
			MaxAge:           c.ReplyRetention,
			Duplicates:       c.DedupeWindow,
			// A client reads its stored reply with a direct get (the
			// only part of JetStream a tenant is given: docs/security.md).
			AllowDirect: true,
		},
		{
			Name:        StreamTelemetry,
			Description: "attempt and request events, owned by the ledger until stored in ClickHouse",
			Subjects:    []string{SubjectTelemetry, AnchorSubject(StreamTelemetry)},
			Retention:   jetstream.WorkQueuePolicy,
			AllowRollup: true,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DedupeWindow,
		},
		{
			Name:        StreamDLQ,
			Description: "dead letters of every stage, replayable with `switchyard dlq replay`",
			Subjects:    []string{SubjectDLQPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			MaxAge:      c.DLQRetention,
			Duplicates:  2 * time.Minute,
		},
		{
			Name:        StreamAlerts,
			Description: "operational alerts",
			Subjects:    []string{SubjectAlerts},
			Retention:   jetstream.LimitsPolicy,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			MaxAge:      c.AlertsRetention,
		},
	}
}

// EnsureTopology creates or updates every stream. It is idempotent and safe
// to call from every service at start-up. A stream JetStream cannot place
// yet (a cluster still starting: "no suitable peers for placement, peer
// offline") is retried with backoff, up to ConnectTimeout or ctx's end; a
// refusal (bad config) fails at once.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, c TopologyConfig) error {
	var errs []error
	for _, sc := range c.Streams() {
		err := retryAtStart(ctx, "stream "+sc.Name, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", sc.Name, err))
		}
	}
	return errors.Join(errs...)
}

// EnsureConsumer creates or updates a durable consumer of stream, retrying
// like EnsureTopology while a cluster is still starting: `switchyard
// provision` makes each stage's consumer with the stage's own config.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (c jetstream.Consumer, err error) {
	err = retryAtStart(ctx, "consumer "+stream+"/"+cfg.Durable, func(ctx context.Context) error {
		c, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}
