// Command gate runs the gate on its own, assembled exactly as inside
// `switchyard up` (gate.FromRuntime on the process's svc.Runtime).
// Configuration comes from SWITCHYARD_* variables (see README).
package main

import (
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/gate"
)

func main() { svc.Main("gate", &gate.ServiceConfig{}) }
