package breaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// AlertKind is the alert kind of breaker transitions.
const AlertKind = "circuit"

// AlertSubject is the subject of alerts of one kind: llm.alerts.<kind>.
// AlertSubject(AlertKind) is "llm.alerts.circuit".
func AlertSubject(kind string) string { return "llm.alerts." + kind }

// Transition is one change of a breaker's state. Exactly one instance (the
// one whose compare-and-set wrote it) reports each transition.
type Transition struct {
	Key  string    `json:"key"`
	From State     `json:"from"`
	To   State     `json:"to"`
	At   time.Time `json:"at"`
	// Reason says why, in words an operator can act on.
	Reason string `json:"reason"`
	// Failures is the failure count behind the transition: the consecutive
	// (or windowed) failures that opened it, 1 for a failed trial call, 0
	// when closing.
	Failures int `json:"failures"`
	// Revision is the KV revision that recorded the transition; it is
	// unique per transition of a bucket.
	Revision uint64 `json:"revision"`
	// Instance identifies the Breakers instance that won the write.
	Instance string `json:"instance,omitempty"`
}

// MsgID is the JetStream de-duplication id of the transition's alert:
// key:to:revision.
func (t Transition) MsgID() string {
	return t.Key + ":" + t.To.String() + ":" + strconv.FormatUint(t.Revision, 10)
}

// alertBody is the JSON published on llm.alerts.circuit.
type alertBody struct {
	Kind string `json:"kind"`
	Transition
}

// PublishAlert publishes t as JSON to llm.alerts.circuit through JetStream
// with Nats-Msg-Id = key:to:revision, so a retried publish of the same
// transition is stored once (the LLM_ALERTS stream keeps the server's
// default two-minute duplicate window).
func PublishAlert(ctx context.Context, js jetstream.JetStream, t Transition) error {
	if js == nil {
		return errors.New("breaker alert: nil JetStream")
	}
	data, err := json.Marshal(alertBody{Kind: AlertKind, Transition: t})
	if err != nil {
		return fmt.Errorf("breaker alert: %w", err)
	}
	msg := &nats.Msg{Subject: AlertSubject(AlertKind), Data: data, Header: nats.Header{}}
	msg.Header.Set(natsx.HeaderMsgID, t.MsgID())
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("breaker alert %s: %w", t.MsgID(), err)
	}
	return nil
}

// JetStreamAlert returns a Deps.Alert that publishes every transition with
// PublishAlert.
func JetStreamAlert(js jetstream.JetStream) func(context.Context, Transition) error {
	return func(ctx context.Context, t Transition) error { return PublishAlert(ctx, js, t) }
}
