package intake

import (
	"fmt"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// ReasonTenantMismatch is the dead letter reason of an envelope naming a
// tenant other than the one its subject binds (the publisher's account).
const ReasonTenantMismatch = "tenant_mismatch"

// impersonation refuses an envelope whose tenant is not its publisher's:
// a dead letter, and an error reply to the publisher's own reply subject
// (never to the tenant it claimed). Nothing reaches the ledger or the
// claimed tenant.
func (in *Intake) impersonation(m Input, publisher, claimed, trace string, received, now time.Time) (Outcome, error) {
	id, _, _ := envelope.PeekIdentity(m.Data)
	problem := fmt.Sprintf("the envelope names tenant %q but was published with the credentials of tenant %q", claimed, publisher)
	inv := &envelope.Invalid{Code: envelope.CodePolicyBlocked, Message: problem, ID: id, Tenant: claimed}
	o := Outcome{ID: id, Tenant: claimed, TraceID: pipeline.TraceID(trace), Code: envelope.CodePolicyBlocked, Problem: problem}
	dl := deadLetterMsg(m, ReasonTenantMismatch, inv, id, claimed, now)
	o.Out = append(o.Out, dl)
	if id == "" || publisher == "" {
		return o, nil
	}
	o.Key = envelope.WorkKey(publisher, deliveryBase(m.Header, id))
	w := &envelope.Work{Key: answerKey(o.Key, refusedSuffix, m), Request: envelope.Request{ID: id, Tenant: publisher}, ReceivedAt: received, TraceParent: trace}
	out, err := failure(w, envelope.CodePolicyBlocked, problem, false, now)
	if err != nil {
		return Outcome{}, err
	}
	for _, msg := range out {
		if msg.Subject != natsx.SubjectRequest { // the reply only: no ledger row
			o.Out = append(o.Out, msg)
		}
	}
	return o, nil
}
