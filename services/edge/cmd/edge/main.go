// Command edge runs the HTTP edge (OpenAI- and Anthropic-compatible API) on
// its own, assembled exactly as inside `switchyard up` (edge.FromRuntime on
// the process's svc.Runtime). Configuration comes from SWITCHYARD_*
// variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/edge"
)

func main() { svc.Main("edge", &edge.ServiceConfig{}) }
