package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// LastStoredMsgID returns the message id (Nats-Msg-Id) of the last message
// stream holds on subject, asking the stream's leader
// ($JS.API.STREAM.MSG.GET with last_by_subj). A direct get (AllowDirect)
// may be answered by any replica, and a follower that has not applied the
// last message yet says it is not there.
//
// found is false when there is no such message (or stream); id is "" when
// the last message carries none. err
// is set only when JetStream is unavailable or does not answer in time:
// the answer is unknown, and callers wait rather than act as if nothing
// were stored.
func LastStoredMsgID(ctx context.Context, js jetstream.JetStream, stream, subject string) (id string, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return "", false, err
	}
	resp, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		if natsx.Unavailable(err) || errors.Is(err, context.DeadlineExceeded) {
			return "", false, err
		}
		return "", false, nil
	}
	var got struct {
		Message *struct {
			Header []byte `json:"hdrs"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &got); err != nil {
		return "", false, nil
	}
	if got.Error != nil {
		if natsx.Unavailable(got.Error) {
			return "", false, got.Error
		}
		return "", false, nil // not found (or no such stream)
	}
	if got.Message == nil {
		return "", false, nil
	}
	if len(got.Message.Header) == 0 {
		return "", true, nil
	}
	hdr, err := nats.DecodeHeadersMsg(got.Message.Header)
	if err != nil {
		return "", true, nil
	}
	return hdr.Get(natsx.HeaderMsgID), true, nil
}
