package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestConsumerSettingsValidate(t *testing.T) {
	valid := ConsumerSettings{Concurrency: 4, MaxDeliver: 5, AckWait: 30 * time.Second, MaxAckPending: 8}
	for _, tc := range []struct {
		name    string
		edit    func(*ConsumerSettings)
		durable string
		want    []string // variables named, in order
	}{
		{name: "valid", edit: func(*ConsumerSettings) {}, durable: "router"},
		{name: "no durable", edit: func(*ConsumerSettings) {}, want: []string{"SWITCHYARD_ROUTER_CONSUMER"}},
		{name: "every problem at once", durable: "router", edit: func(c *ConsumerSettings) {
			*c = ConsumerSettings{Concurrency: 0, MaxDeliver: 0, AckWait: time.Millisecond, MaxAckPending: -1}
		}, want: []string{"SWITCHYARD_ROUTER_CONCURRENCY", "SWITCHYARD_ROUTER_MAX_DELIVER", "SWITCHYARD_ROUTER_ACK_WAIT", "SWITCHYARD_ROUTER_MAX_ACK_PENDING"}},
		{name: "fewer pending than workers", durable: "router", edit: func(c *ConsumerSettings) { c.MaxAckPending = 3 },
			want: []string{"SWITCHYARD_ROUTER_MAX_ACK_PENDING"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			errs := c.Validate("SWITCHYARD_ROUTER", tc.durable)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d naming %v", len(errs), errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				if !strings.HasPrefix(err.Error(), tc.want[i]+": ") {
					t.Errorf("error %d = %q, want it to name %s", i, err, tc.want[i])
				}
			}
		})
	}
}

func TestConsumerSettingsConsumerConfig(t *testing.T) {
	c := ConsumerSettings{Concurrency: 4, MaxDeliver: 5, AckWait: 30 * time.Second, MaxAckPending: 8}
	one := c.ConsumerConfig("gate", "judges", "llm.results")
	if one.Durable != "gate" || one.FilterSubject != "llm.results" || one.FilterSubjects != nil {
		t.Errorf("one filter: durable %q, FilterSubject %q, FilterSubjects %v", one.Durable, one.FilterSubject, one.FilterSubjects)
	}
	if one.AckWait != c.AckWait || one.MaxDeliver != c.MaxDeliver || one.MaxAckPending != c.MaxAckPending {
		t.Errorf("limits not carried: %+v", one)
	}
	two := c.ConsumerConfig("router", "routes", "llm.classified", "llm.verdicts")
	if two.FilterSubject != "" || len(two.FilterSubjects) != 2 {
		t.Errorf("two filters: FilterSubject %q, FilterSubjects %v", two.FilterSubject, two.FilterSubjects)
	}
}
